"""The PSD/PEARL plugin's pure parts (default suite, no vLLM): options, the engine's view of the drafter,
the policies' live-serving hooks, trace records, the entry point and the drafter process's failure path."""

import json
import time
from importlib.metadata import entry_points

import numpy as np
import pytest

from minedraft.acceptance import AcceptanceCurve
from minedraft.errors import InputError
from minedraft.executor.psd import PROPOSER, SCHEDULER, WORKER, PluginConfig, serve_flags, vllm_kwargs
from minedraft.executor.psd.book import DraftBook
from minedraft.executor.psd.drafter import DrafterClient, DrafterFailed, drafter_env
from minedraft.executor.psd.records import step_records
from minedraft.executor.records import Row, ScheduledStep
from minedraft.ops import DRAFT, VERIFY, OpResult
from minedraft.policies import PEARL, PSD, SD, PolicyConfig

EMPTY = np.empty(0, dtype=np.int64)


# ---------------------------------------------------------------------------------- options
def test_config_reads_additional_config_and_refuses_unknown_keys():
    cfg = PluginConfig.from_additional_config({"minedraft": {"mode": "pearl", "draft_model": "d",
                                                             "drafter_device": "CUDA:1", "k_schedule": [[1, 8, 3]]}})
    assert cfg.mode == "pearl" and cfg.drafter_device == "cuda:1" and cfg.k_schedule == ((1, 8, 3),)
    with pytest.raises(InputError, match="unknown option"):
        PluginConfig.from_additional_config({"minedraft": {"draft_model": "d", "tetris": 2}})
    with pytest.raises(InputError, match="additional_config.minedraft"):
        PluginConfig.from_additional_config({})


@pytest.mark.parametrize("kw, field", [
    ({"mode": "ar"}, "minedraft.mode"),
    ({"draft_model": " "}, "minedraft.draft_model"),
    ({"drafter_device": "gpu1"}, "minedraft.drafter_device"),
    ({"psd_capacity": "triple"}, "minedraft.psd_capacity"),
    ({"accept_curve": "0.5,0.9"}, "minedraft.accept_curve"),
    ({"accept_curve": 3}, "minedraft.accept_curve"),
    ({"k_schedule": [[2, 4, 3]]}, "minedraft.k_schedule"),
    ({"drafter_gpu_memory_utilization": 1.5}, "minedraft.drafter_gpu_memory_utilization"),
    ({"drafter_kv_cache_memory_bytes": 10}, "minedraft.drafter_kv_cache_memory_bytes"),
    ({"drafter_op_timeout_s": 0}, "minedraft.drafter_op_timeout_s"),
    ({"drafter_uniform_passes": "yes"}, "minedraft.drafter_uniform_passes"),
    ({"drafter_uniform_passes": True, "drafter_fused": True}, "minedraft.drafter_uniform_passes"),
    ({"drafter_cudagraph_mode": "full"}, "minedraft.drafter_cudagraph_mode"),
])
def test_config_refuses_bad_values_naming_the_field(kw, field):
    with pytest.raises(InputError) as e:
        PluginConfig(**({"draft_model": "d"} | kw))
    assert e.value.field == field


def test_config_curves_in_every_form():
    assert PluginConfig(draft_model="d", accept_curve="0.5").curve().rates[:2] == pytest.approx((0.5, 0.25))
    assert PluginConfig(draft_model="d", accept_curve="0.9,0.5").curve().rates == (0.9, 0.5)
    beta = AcceptanceCurve.beta_mixture(0.7, 5.0, 4)
    assert PluginConfig(draft_model="d", accept_curve=beta.to_json()).curve().heterogeneous
    assert PluginConfig(draft_model="d").curve() is None


def test_vllm_kwargs_name_the_three_seams_and_keep_only_set_options():
    kw = vllm_kwargs("Qwen/Qwen3-0.6B", 3, "pearl", drafter_device="cuda:1", accept_curve="0.8")
    assert kw["speculative_config"] == {"method": "custom_class", "model": PROPOSER, "num_speculative_tokens": 3}
    assert kw["scheduler_cls"] == SCHEDULER and kw["worker_cls"] == WORKER and kw["async_scheduling"] is False
    assert kw["additional_config"] == {"minedraft": {"mode": "pearl", "draft_model": "Qwen/Qwen3-0.6B",
                                                     "drafter_device": "cuda:1", "accept_curve": "0.8"}}
    # what the scheduler will read back is what was asked
    back = PluginConfig.from_additional_config(json.loads(json.dumps(kw["additional_config"])))
    assert back.mode == "pearl" and back.curve().rates[0] == pytest.approx(0.8)
    flags = serve_flags("d", 5)
    assert flags[flags.index("--scheduler-cls") + 1] == SCHEDULER and "--no-async-scheduling" in flags
    assert json.loads(flags[flags.index("--speculative-config") + 1])["num_speculative_tokens"] == 5
    with pytest.raises(InputError):
        vllm_kwargs("d", 3, "ar")


def test_the_classes_vllm_loads_by_name_exist():
    import importlib

    for qualname in (SCHEDULER, PROPOSER, WORKER):
        module, name = qualname.rsplit(".", 1)
        spec = importlib.util.find_spec(module)
        assert spec is not None and name in open(spec.origin).read(), qualname


def test_the_entry_point_is_registered_and_harmless():
    eps = {e.name: e for e in entry_points(group="vllm.general_plugins")}
    assert eps["minedraft_psd"].value == "minedraft.executor.psd.plugin:register"
    register = eps["minedraft_psd"].load()
    assert register() is None  # changes nothing global (vLLM may call it in every process, many times)
    assert register() is None


# ------------------------------------------------------------------------- the drafter's copy
def test_book_psd_keeps_accepted_drafts_and_appends_the_bonus():
    b = DraftBook()
    truth = list(range(100, 110))  # prompt + first token
    b.prefilled(7, len(truth))
    assert b.sync(7, len(truth), assume=False) == (10, 10)  # nothing to ship: the drafter has it all
    b.drafted(7, 10, [1, 2, 3], pearl=False)
    assert b.drafts(7, 3) == [1, 2, 3]
    truth += [1, 2, 9]  # two drafts accepted, then the target's token 9
    b.verified_psd(7, truth)
    keep, frm = b.sync(7, len(truth), assume=False)
    assert (keep, truth[frm:]) == (12, [9])
    truth_all = truth + [4]
    b.drafted(7, 13, [4, 5, 6], pearl=False)
    truth_all += [5, 6, 8]  # all three accepted, bonus 8
    b.verified_psd(7, truth_all)
    assert b.sync(7, len(truth_all), assume=False)[0] == 16


def test_book_pearl_continuation_needs_every_draft_and_the_guess():
    b = DraftBook()
    truth = list(range(20))
    b.prefilled(1, 20)
    # step 1 (probe): the drafter guesses the target's next token (g=50), then drafts 51, 52
    keep, frm = b.sync(1, 20, assume=False)
    assert (keep, frm) == (20, 20)
    b.drafted(1, 20, [50, 51, 52], pearl=True)
    truth.append(50)  # the target's token: the guess matched
    assert b.verified_pearl(1, [], 20, truth) is True
    # step 2: verify 51, 52 while drafting from truth + [51, 52] (assumed)
    keep, frm = b.sync(1, len(truth), assume=True)
    assert keep == 23 and frm == len(truth)
    b.drafted(1, 23, [60, 61, 62], pearl=True, assumed=True)
    truth += [51, 52, 61]  # both accepted, but the target's bonus 61 is not the guess 60
    assert b.verified_pearl(1, [51, 52], 21, truth) is False
    assert b.sync(1, len(truth), assume=False) == (23, 23)  # keep up to 52, ship 61
    # a synthetic draw decides the guess, not the token
    b.drafted(1, 24, [70, 71, 72], pearl=True)
    truth.append(99)
    assert b.verified_pearl(1, [], 24, truth, synthetic_match=True) is True
    b2 = DraftBook()
    b2.prefilled(2, 5)
    b2.drafted(2, 5, [1, 2, 3], pearl=True)
    assert b2.verified_pearl(2, [], 5, [0, 0, 0, 0, 0, 1], synthetic_match=False) is False


# ------------------------------------------------------------------- the policies' new hooks
def _arrays(policy):
    return {k: len(v) for k, v in vars(policy).items() if isinstance(v, np.ndarray) and v.ndim == 1
            and len(v) == len(policy.prompt_len)}


@pytest.mark.parametrize("cls", [PSD, PEARL])
def test_add_requests_grows_every_per_request_array(cls):
    p = cls(PolicyConfig(max_num_seqs=4, num_speculative_tokens=3, kv_capacity_tokens=10_000),
            np.array([4, 5, 6]), np.array([7, 8, 9]))
    names = set(_arrays(p))  # every per-request array (3 entries; the running structures are empty)
    assert {"prompt_len", "output_len", "generated"} <= names
    ids = p.add_requests([10, 20], [5, 6])
    assert ids.tolist() == [3, 4] and p.add_requests([3], [1]).tolist() == [5]
    assert set(_arrays(p)) == names and all(n == 6 for n in _arrays(p).values())
    assert p.prompt_len.tolist() == [4, 5, 6, 10, 20, 3] and p.output_len[3:].tolist() == [5, 6, 1]
    with pytest.raises(InputError):
        p.add_requests([9000], [2000])  # cannot ever fit the KV capacity


def _drive(policy, rng, n_requests, eos_p=0.1):
    """A live driver: requests arrive in bursts, some end early (EOS), acceptance is random."""
    pending = list(range(n_requests))
    finished, dropped = set(), set()
    steps = 0
    while (pending or not policy.idle) and steps < 10_000:
        steps += 1
        if pending and rng.random() < 0.3:
            burst, pending = pending[:int(rng.integers(1, 9))], pending[int(rng.integers(1, 9)):]
            ids = policy.add_requests(rng.integers(5, 50, len(burst)), rng.integers(3, 40, len(burst)))
            policy.arrive(ids)
        ops = policy.next_ops(frozenset({"target", "draft"}))
        while ops:
            for op in ops:
                if isinstance(policy, PSD) and op.kind == VERIFY:
                    assert op.size <= policy.half_capacity
                res = OpResult()
                if op.kind == VERIFY:
                    res = OpResult(accepted=rng.integers(0, op.k + 1, op.size))
                finished |= set(policy.on_done(op, res).tolist())
            running = [r for r in range(len(policy.prompt_len)) if r not in finished | dropped
                       and policy.generated[r] > 0]
            gone = [r for r in running if rng.random() < eos_p]
            if gone:
                dropped |= set(policy.drop(gone).tolist())
            ops = policy.next_ops(frozenset({"target", "draft"}))
            if ops and ops[0].new_step:
                break
        if ops:  # the next step's ops: apply them at once (a step at a time)
            for op in ops:
                res = OpResult(accepted=rng.integers(0, op.k + 1, op.size)) if op.kind == VERIFY else OpResult()
                finished |= set(policy.on_done(op, res).tolist())
    return finished, dropped, steps


@pytest.mark.parametrize("cls", [PSD, PEARL, SD])
def test_a_live_driver_with_early_ends_leaves_nothing_behind(cls):
    rng = np.random.default_rng(3)
    p = cls(PolicyConfig(max_num_seqs=4, num_speculative_tokens=3, kv_capacity_tokens=2000,
                         psd_limit_halves=cls is PSD, sd_drafter="own"), EMPTY, EMPTY)
    finished, dropped, steps = _drive(p, rng, 60)
    assert steps < 10_000 and p.idle
    assert finished | dropped == set(range(len(p.prompt_len))) and not finished & dropped
    assert p.kv_used == 0 and p.num_finished == len(p.prompt_len)
    assert dropped  # early ends happened


def test_psd_halves_stay_within_one_batch_when_limited():
    def burst(limit):
        p = PSD(PolicyConfig(max_num_seqs=4, num_speculative_tokens=2, psd_limit_halves=limit), EMPTY, EMPTY)
        p.arrive(p.add_requests([8], [50]))
        for op in p.next_ops(frozenset({"target", "draft"})):
            p.on_done(op, OpResult())
        for _ in range(3):  # decode a little: the policy is warm
            for op in p.next_ops(frozenset({"target", "draft"})):
                p.on_done(op, OpResult(accepted=np.zeros(op.size, dtype=np.int64)) if op.kind == VERIFY
                          else OpResult())
        p.arrive(p.add_requests(np.full(7, 8), np.full(7, 50)))  # a burst joins the just-verified half
        for _ in range(2):
            for op in p.next_ops(frozenset({"target", "draft"})):
                p.on_done(op, OpResult())
        return sorted(len(h) for h in p.halves)

    assert burst(True) == [4, 4]
    assert burst(False) == [1, 7]  # the simulator's behaviour is unchanged: the burst overflows one half


def test_pearl_takes_the_drivers_validity_when_given():
    cfg = PolicyConfig(max_num_seqs=4, num_speculative_tokens=2)

    def after(result_valid):
        p = PEARL(cfg, EMPTY, EMPTY)
        p.arrive(p.add_requests([5, 5], [20, 20]))
        for _ in range(2):  # prefill, then the drafter's prefill
            for op in p.next_ops(frozenset({"target", "draft"})):
                p.on_done(op, OpResult())
        ops = p.next_ops(frozenset({"target", "draft"}))
        v = next(o for o in ops if o.kind == VERIFY)
        for op in ops:
            p.on_done(op, OpResult(accepted=np.ones(v.size, dtype=np.int64), valid=result_valid)
                      if op.kind == VERIFY else OpResult())
        return p.valid[:2].tolist()

    assert after(None) == [True, True]  # the simulator's rule: a probe that matched
    assert after(np.array([True, False])) == [True, False]


# ---------------------------------------------------------------------------------- records
def test_step_records_put_the_drafter_on_its_own_resource_with_its_own_times():
    step = ScheduledStep([Row("a", 4, 3, 30, 20), Row("b", 4, 3, 40, 20)], 8)
    step.accepted = {"a": (3, 1), "b": (3, 3)}
    info = {"target": VERIFY, "batch_id": 1, "k": 3, "t_target_end": 100.5,
            "draft_ops": [{"op": DRAFT, "batch_id": 0, "request_ids": ["c", "zzz"], "k": 3, "forwards": 3,
                           "tokens_in": 2, "t_start": 100.1, "t_end": 100.7, "t_sent": 100.05, "t_received": 100.72,
                           "bytes_sent": 60, "bytes_received": 90}],
            "events": [{"event": "speculation_stopped", "reason": "x", "t": 101.0}]}
    recs = step_records("psd", step, info, {"a": 0, "b": 1, "c": 2}, 0.0, 1.0, 5, lambda t: t - 100.0, pearl=False)
    tgt, dr, ev = recs
    assert tgt["op"] == "verify" and tgt["resource"] == "target" and tgt["batch_id"] == 1
    assert tgt["accepted"] == [1, 3] and tgt["t_target_end"] == pytest.approx(0.5)
    assert dr["resource"] == "draft" and dr["request_ids"] == [2] and dr["step"] == 5
    assert (dr["t_start"], dr["t_end"]) == pytest.approx((0.1, 0.7)) and dr["bytes_sent"] == 60
    assert ev == {"type": "event", "policy": "psd", "event": "speculation_stopped", "reason": "x", "t": 1.0}
    # after the drafter is gone: plain decode rows are decode ops
    plain = ScheduledStep([Row("a", 1, 0, 30, 20)], 1)
    (rec,) = step_records("psd", plain, {"t_target_end": 100.2, "events": []}, {"a": 0}, 0.0, 1.0, 6,
                          lambda t: t - 100.0, pearl=False)
    assert rec["op"] == "decode" and "accepted" not in rec
    # PEARL: rows without drafts are probes
    step = ScheduledStep([Row("a", 1, 0, 30, 20), Row("b", 3, 2, 40, 20)], 4)
    step.accepted = {"b": (2, 2)}
    (rec,) = step_records("pearl", step, {"target": VERIFY, "batch_id": 0}, {"a": 0, "b": 1}, 0, 1, 0,
                          lambda t: t, pearl=True)
    assert rec["probe"] == [True, False]


# ------------------------------------------------------------------------------ the process
def test_drafter_env_maps_the_device_through_visible_gpus():
    assert drafter_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,5,6"})["CUDA_VISIBLE_DEVICES"] == "5"
    assert drafter_env("same", {"CUDA_VISIBLE_DEVICES": "4,5,6"})["CUDA_VISIBLE_DEVICES"] == "4"
    assert drafter_env("cuda:2", {})["CUDA_VISIBLE_DEVICES"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in drafter_env("cpu", {})
    env = drafter_env("cpu", {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["VLLM_USE_V2_MODEL_RUNNER"] == "0"
    with pytest.raises(ValueError):
        drafter_env("cuda:3", {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_a_drafter_that_cannot_start_fails_fast_and_leaves_no_process():
    t0 = time.monotonic()
    with pytest.raises(DrafterFailed) as e:
        # a model the drafter cannot load (no vLLM here, or no such directory): the child reports and exits
        DrafterClient({"model": "/nonexistent/model", "max_model_len": 64, "max_num_seqs": 2,
                       "max_num_batched_tokens": 64}, drafter_env("cpu"), start_timeout_s=120, op_timeout_s=5)
    assert "did not start" in str(e.value) or "exited" in str(e.value)
    assert time.monotonic() - t0 < 120

"""The PSD/PEARL plugin on real vLLM (the CPU build): tiny Qwen3 models, a drafter process, no mocks.

Run with ``OMP_NUM_THREADS=1 python -m pytest -m vllm tests/test_psd_plugin_vllm.py``. Engines are
session-scoped; each PSD/PEARL engine starts its own drafter process (a few seconds each here).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minedraft.executor.engine import Engine, EngineSpec, prompt_tokens  # noqa: E402
from minedraft.executor.models import resolve_model, tiny_qwen3_config  # noqa: E402
from minedraft.executor.run import run_policy  # noqa: E402
from minedraft.metrics import compute_metrics  # noqa: E402
from minedraft.trace import read_records, trace_from_records  # noqa: E402
from minedraft.workload import Requests  # noqa: E402
from vllm_models import save_pair  # noqa: E402

pytestmark = pytest.mark.vllm

K = 3
KV = 32 << 20
ENV = dict(os.environ, OMP_NUM_THREADS="1", VLLM_LOGGING_LEVEL="ERROR")


def _single_thread_torch():
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """Target and a perturbed drafter (partial acceptance: rejections happen)."""
    _single_thread_torch()
    return save_pair(tmp_path_factory.mktemp("psdpair"), tiny_qwen3_config(), noise=0.05)


def _models(paths):
    return resolve_model(paths["target"], "--target"), resolve_model(paths["draft"], "--draft")


def _engine(paths, plugin=None, max_num_seqs=4, **kw):
    _single_thread_torch()
    t, d = _models(paths)
    return Engine(EngineSpec(t, d if plugin else None, K if plugin else 0, max_num_seqs=max_num_seqs,
                             max_model_len=kw.pop("max_model_len", 512), kv_cache_memory_bytes=KV, dtype="float32",
                             plugin=plugin, **kw))


@pytest.fixture(scope="session")
def ar_engine(pair):
    with _engine(pair) as e:
        yield e


@pytest.fixture(scope="session")
def psd_engine(pair):
    with _engine(pair, {"mode": "psd", "psd_split": "always"}) as e:  # the published schedule; auto: reconfigure
        yield e


@pytest.fixture(scope="session")
def pearl_engine(pair):
    with _engine(pair, {"mode": "pearl"}) as e:
        yield e


@pytest.fixture(scope="session")
def sd_own_engine(pair):
    """The plugin's mode sd: SD with the drafter in its own process (own device on a GPU machine), no overlap."""
    with _engine(pair, {"mode": "sd"}) as e:
        yield e


def _requests(n, prompt, output, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.integers(*prompt, size=n) if isinstance(prompt, tuple) else np.full(n, prompt)
    o = rng.integers(*output, size=n) if isinstance(output, tuple) else np.full(n, output)
    return Requests(arrival=np.zeros(n), prompt_len=p.astype(np.int64), output_len=o.astype(np.int64))


def _run(engine, policy, requests, keep_tokens=True, temperature=0.0, progress=None, online=False):
    records = []
    res = run_policy(engine, policy, requests, records.append, online=online, seed=3, keep_tokens=keep_tokens,
                     temperature=temperature, header_config={"test": True}, progress=progress)
    return records, res


def _target_runner(engine):
    from minedraft.executor import compat

    return compat.runner_of(compat.engine_worker(engine.engine))


KILL_REQUESTS = dict(n=12, prompt=(16, 40), output=(40, 90), seed=11)
LLM_REQUESTS = dict(n=4, prompt=24, output=24, seed=9)


@pytest.fixture(scope="session")
def greedy_runs(ar_engine, psd_engine, pearl_engine, sd_own_engine):
    """Greedy runs of one workload on AR, PSD and PEARL, plus AR's tokens for the other tests' workloads
    (taken now: in-process engines share vLLM's distributed state, which closing another engine tears down)."""
    req = _requests(10, (16, 48), (30, 70))
    before = dict(_target_runner(psd_engine).minedraft_stats)
    runs = {p: _run(e, p, req) for p, e in (("ar", ar_engine), ("psd", psd_engine), ("pearl", pearl_engine))}
    runs["psd_runner"] = {k: v - before[k] for k, v in _target_runner(psd_engine).minedraft_stats.items()}
    runs["sd_own"] = _run(sd_own_engine, "sd", req)
    for name, w in (("kill", KILL_REQUESTS), ("llm", LLM_REQUESTS)):
        runs[f"ar_{name}"] = _run(ar_engine, "ar", _requests(w["n"], w["prompt"], w["output"], seed=w["seed"]))[1]
    return req, runs


# ------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("policy", ["psd", "pearl", "sd_own"])
def test_greedy_output_equals_greedy_ar_token_for_token(greedy_runs, policy):
    req, runs = greedy_runs
    ar = runs["ar"][1]
    records, res = runs[policy]
    policy = "sd" if policy == "sd_own" else policy
    assert sorted(res.tokens) == sorted(ar.tokens) == list(range(len(req)))
    for rid in range(len(req)):
        assert len(res.tokens[rid]) == req.output_len[rid]
        assert res.tokens[rid] == ar.tokens[rid], f"{policy}: request {rid} diverged"
    assert len(set(map(tuple, ar.tokens.values()))) > 1
    # the drafter differs from the target: drafts were rejected, and accepted
    s = res.spec_decode
    assert 0 < s["num_accepted_tokens"] < s["num_draft_tokens"]
    assert res.mismatched_steps == 0
    m = compute_metrics(trace_from_records(records)[policy])
    assert m["completed"] == len(req) and m["total_output_tokens"] == int(req.output_len.sum())
    assert m["mean_acceptance_length"] == pytest.approx(1 + s["num_accepted_tokens"] / max(1, s["num_drafts"]),
                                                        rel=0.35)


def _ops(records, **match):
    return [r for r in records if r["type"] == "op" and all(r.get(k) == v for k, v in match.items())]


def test_sd_own_drafts_the_whole_batch_then_verifies_it_without_overlap(greedy_runs):
    req, runs = greedy_runs
    records, _ = runs["sd_own"]
    assert records[0]["config"]["executor"]["plugin"]["mode"] == "sd"
    verifies, drafts = _ops(records, op="verify"), _ops(records, op="draft")
    assert len(verifies) >= 20 and _ops(records, op="draft_prefill", resource="draft")
    by_step = {d["step"]: d for d in drafts}
    for v in verifies:
        assert v["step"] not in by_step  # nothing drafts while the target verifies
        d = by_step[v["step"] - 1]  # the step before drafted exactly these rows
        assert d["resource"] == "draft" and set(d["request_ids"]) == set(v["request_ids"])
        assert d["t_end"] <= v["t_start"]
    # the simulator replays it as SD with its own drafter and prefill-only steps
    from minedraft.costs import StepCosts
    from minedraft.latency import Constant
    from minedraft.simulator.replay import measured_run, replay

    run = measured_run(records, "sd_own")
    assert run.policy == "sd" and run.cfg.sd_drafter == "own" and run.cfg.prefill_mode == "separate"
    sim = compute_metrics(replay(run, StepCosts(Constant(0.01, 0.01), Constant(0.002, 0.002))))
    assert sim["completed"] == len(req) and sim["num_gpus"] == 2


def test_psd_trace_alternates_halves_and_drafts_the_other_half_during_each_verify(greedy_runs):
    req, runs = greedy_runs
    records, _ = runs["psd"]
    assert records[0]["config"]["executor"]["plugin"]["mode"] == "psd"
    verifies = _ops(records, op="verify")
    drafts = _ops(records, op="draft")
    assert _ops(records, op="prefill") and _ops(records, op="draft_prefill", resource="draft")
    assert all(d["resource"] == "draft" for d in drafts) and all(v["resource"] == "target" for v in verifies)
    # halves: a request always sits in the same half; consecutive verifies alternate halves
    half_of = {}
    for v in verifies:
        for rid in v["request_ids"]:
            assert half_of.setdefault(rid, v["batch_id"]) == v["batch_id"]
    assert set(half_of.values()) == {0, 1}
    pairs = [(a["batch_id"], b["batch_id"]) for a, b in zip(verifies, verifies[1:]) if a["step"] + 1 == b["step"]]
    assert pairs and sum(a != b for a, b in pairs) >= 0.8 * len(pairs)
    # in each step, the drafter drafts the *other* half, inside the target's step
    by_step = {d["step"]: d for d in drafts}
    overlapped, n, step_s, serial_s = 0, 0, 0.0, 0.0
    for v in verifies:
        d = by_step.get(v["step"])
        if d is None:
            continue  # one half empty (its last requests): sequential SD
        n += 1
        assert d["batch_id"] != v["batch_id"] and not set(d["request_ids"]) & set(v["request_ids"])
        assert v["t_start"] <= d["t_sent"] <= d["t_start"] < d["t_end"] <= d["t_received"] <= v["t_end"]
        # the drafter started before the target's results were in: both worked at once
        overlapped += d["t_start"] < v["t_target_end"]
        step_s += v["t_end"] - v["t_start"]
        serial_s += (v["t_target_end"] - v["t_start"]) + (d["t_end"] - d["t_start"])
    # a shared 2-core machine delays the drafter's wake-up now and then: most steps, not all, overlap
    assert n >= 20 and overlapped >= 0.5 * n, (overlapped, n)
    assert step_s < 0.9 * serial_s, (step_s, serial_s)  # the steps took less than target + drafter in series
    # only token ids cross: a few bytes per request
    for d in drafts:
        assert d["bytes_sent"] < 120 + 40 * d["size"] and d["bytes_received"] < 300 + 8 * K * d["size"]
    # per request: drafted, verified, drafted, ... (never two drafts without a verify between)
    seq = Counter()
    for r in sorted((r for r in records if r["type"] == "op" and r["op"] in ("draft", "verify")),
                    key=lambda r: (r["step"], r["resource"] == "target")):
        for rid in r["request_ids"]:
            last = seq.get(rid)
            assert last != r["op"], (rid, r["op"], r["step"])
            seq[rid] = r["op"]


def test_psd_halves_stay_resident_in_the_targets_runner(greedy_runs, psd_engine):
    """Resident batches: in the greedy PSD run each request entered its half's persistent batch about once (from
    the prefill step's batch); vLLM's single persistent batch, on the same engine and workload, re-adds the rows of
    the half it verifies at nearly every step. Greedy output equals AR's either way."""
    from minedraft.executor.psd.runner import ResidentBatches

    req, runs = greedy_runs
    ar = runs["ar"][1].tokens
    runner = _target_runner(psd_engine)
    assert isinstance(runner, ResidentBatches) and runner.minedraft_resident
    resident = runs["psd_runner"]
    verifies = len(_ops(runs["psd"][0], op="verify"))
    assert resident["steps"] >= verifies >= 20
    assert resident["rows_readded"] <= 1.5 * len(req), resident
    assert runs["psd"][1].tokens == ar
    before = dict(runner.minedraft_stats)
    runner.minedraft_set_resident(False)
    try:
        assert not runner.minedraft_resident
        records, res = _run(psd_engine, "psd", req)
    finally:
        runner.minedraft_set_resident(True)
    assert runner.minedraft_resident
    single = {k: v - before[k] for k, v in runner.minedraft_stats.items()}
    assert res.tokens == ar
    assert single["steps"] >= 20 and single["rows_readded"] >= 3 * len(req)
    per_step = {"resident": resident["rows_readded"] / resident["steps"],
                "single": single["rows_readded"] / single["steps"]}
    assert per_step["single"] > 5 * per_step["resident"], (per_step, resident, single)
    # about half the rows in flight each step: the verified half, absent from the batch the step before
    rows = np.mean([v["size"] for v in _ops(records, op="verify")])
    assert 0.5 * rows <= per_step["single"] <= 1.05 * rows, (per_step, rows)
    # switched back on, the next run refills the batches and keeps them again
    before = dict(runner.minedraft_stats)
    _, res = _run(psd_engine, "psd", req)
    again = {k: v - before[k] for k, v in runner.minedraft_stats.items()}
    assert res.tokens == ar and again["rows_readded"] <= 1.5 * len(req), again


def test_psd_sends_drafter_ops_while_the_targets_forward_is_launched(greedy_runs, psd_engine):
    """drafter_send=launch (a GPU build's default): each step's drafter op is packed and sent from vLLM's
    get_grammar_bitmask, which the engine calls between launching the target's forward and waiting for its
    tokens; greedy output still equals AR's. The CPU build's default sends it before the forward (the forward
    runs on the host thread there)."""
    req, runs = greedy_runs
    sched = psd_engine.scheduler
    assert not sched.send_at_launch and runs["psd"][0][0]["config"]["executor"]["plugin"]["drafter_send"] == "schedule"
    before = dict(sched.sends)
    sched.send_at_launch = True
    try:
        records, res = _run(psd_engine, "psd", req)
    finally:
        sched.send_at_launch = False
    sent = {k: v - before[k] for k, v in sched.sends.items()}
    drafts = _ops(records, op="draft")
    assert res.tokens == runs["ar"][1].tokens
    # every step's draft op went out at the target's launch; only draft_prefill sub-steps (the barrier's own
    # follow-ups, no target forward to hide behind) are sent directly
    assert sent["at_launch"] == len(drafts) >= 20 and sent["at_schedule"] == sent["at_barrier"] == 0, sent
    for d in drafts:
        assert d["t_sent"] <= d["t_start"]


def test_psd_auto_switches_between_one_batch_and_two_halves_mid_run_and_stays_exact(greedy_runs, psd_engine):
    """psd_split=auto on vLLM: two requests run as one batch (drafted, then verified), the rest arrive and split it
    into two halves, and as they finish the halves merge again; greedy output equals AR's token for token and
    every request finishes (no KV block, request or draft lost at a switch)."""
    from minedraft.metrics import split_fraction

    req, runs = greedy_runs
    ar = runs["ar"][1].tokens
    sched = psd_engine.scheduler
    online = Requests(arrival=np.where(np.arange(len(req)) < 2, 0.0, 0.6), prompt_len=req.prompt_len,
                      output_len=np.where(np.arange(len(req)) < 2, req.output_len, req.output_len // 3))
    sched.reconfigure(psd_split="auto", psd_split_rows=3)
    try:
        records, res = _run(psd_engine, "psd", online, online=True)
        plan = sched.plan
        assert plan.auto and plan.split_rows == 3 and sched.facts["psd_split"] == "auto"
    finally:
        sched.reconfigure(psd_split="always", psd_split_rows=None)
    assert not sched.plan.auto
    for rid in range(len(req)):
        assert res.tokens[rid] == ar[rid][:int(online.output_len[rid])], rid
    by_step = {}
    for r in _ops(records):
        if r["op"] in ("draft", "verify"):
            by_step.setdefault(r["step"], set()).add(r["op"])
    modes = ["two" if ops == {"draft", "verify"} else "one" for _, ops in sorted(by_step.items())]
    assert "two" in modes, modes
    first, last = modes.index("two"), len(modes) - 1 - modes[::-1].index("two")
    assert "one" in modes[:first] and "one" in modes[last + 1:], modes  # one batch, two halves, one batch
    assert plan.steps_split > 0 and plan.steps_one > 0
    frac = split_fraction(trace_from_records(records)["psd"])
    assert 0 < frac < 1


def test_psd_drafter_copies_stay_resident_between_ops(greedy_runs):
    """The drafter's copies stay in its vLLM runner between ops: almost no draft op re-enters a copy."""
    req, runs = greedy_runs
    records, _ = runs["psd"]
    assert records[0]["config"]["executor"]["plugin"]["drafter"]["resident"]
    drafts = _ops(records, op="draft")
    assert len(drafts) >= 20 and all("entries" in d for d in drafts)
    entered = [d for d in drafts if d["entries"]]
    assert len(entered) <= 0.1 * len(drafts), [(d["step"], d["entries"], d["size"]) for d in entered]
    assert sum(d["entries"] for d in drafts) < sum(d["size"] for d in drafts) / 10


def test_pearl_trace_verifies_the_whole_batch_while_drafting_it(greedy_runs):
    req, runs = greedy_runs
    records, res = runs["pearl"]
    verifies = _ops(records, op="verify")
    drafts = {d["step"]: d for d in _ops(records, op="draft")}
    probes = valid = 0
    for v in verifies:
        d = drafts[v["step"]]
        assert set(d["request_ids"]) == set(v["request_ids"])  # no split: the same requests
        assert d["forwards"] == K + 1  # the guess of the target's next token, then k drafts
        probe = v.get("probe") or [False] * v["size"]
        probes += sum(probe)
        valid += v["size"] - sum(probe)
    assert probes > 0 and valid > 0  # some continuations held, some were wasted
    assert all(v["batch_id"] == 0 for v in verifies)


def test_psd_online_arrivals_stop_tokens_and_aborts(greedy_runs, psd_engine):
    """Requests arriving while others run, ending early on a stop token, aborted while held or running:
    the policy hears of each (add_requests / drop), outputs stay AR's, and the engine ends idle."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    req, runs = greedy_runs
    ar = runs["ar"][1].tokens
    online = Requests(arrival=np.linspace(0.0, 0.25, len(req)), prompt_len=req.prompt_len, output_len=req.output_len)
    records, res = _run(psd_engine, "psd", online, online=True)
    assert all(res.tokens[r] == ar[r] for r in range(len(req)))
    arrivals = {r["request_id"]: r["arrival"] for r in records if r["type"] == "request"}
    first_verify = min(o["t_start"] for o in _ops(records, op="verify"))
    assert max(arrivals.values()) > first_verify  # some arrived while others were decoding

    eng, sched = psd_engine.engine, psd_engine.scheduler
    stop = ar[0][12]
    n = 11  # capacity 8: three wait outside vLLM at first
    for i in range(n):
        prompt = TokensPrompt(prompt_token_ids=prompt_tokens(3, i % len(req), int(req.prompt_len[i % len(req)]), 1024))
        eng.add_request(f"s{i}", prompt, SamplingParams(max_tokens=int(req.output_len[i % len(req)]), temperature=0.0,
                                                       stop_token_ids=[stop], ignore_eos=True, detokenize=False,
                                                       output_kind=RequestOutputKind.DELTA))
    got: dict[str, list[int]] = {}
    for step in range(10_000):
        if step == 1:
            assert any(r.request_id.split("-")[0] == "s10" for r in sched.held.values())  # vLLM adds a suffix
            eng.abort_request(["s10"])  # still outside vLLM
        if step == 6:
            eng.abort_request(["s1"])  # running, possibly in the half being drafted
        for o in eng.step():
            got.setdefault(o.request_id, []).extend(o.outputs[0].token_ids if o.outputs else [])
        if not eng.has_unfinished_requests():
            break
    for i in range(n):
        if i in (1, 10):
            continue
        want = ar[i % len(req)]
        if stop in want:
            want = want[: want.index(stop) + 1]
        assert got[f"s{i}"] == want, i
    assert any(stop in ar[i % len(req)][:-1] for i in range(n) if i not in (1, 10))  # some ended early
    assert not sched.held and not sched.req_of and sched.plan.idle and sched.fallback is None
    # every request the policy admitted finished (or was dropped as finished); s10 left before admission
    assert sched.plan.num_finished == len(sched.plan.prompt_len) - 1 and sched.plan.kv_used == 0
    psd_engine._drain()


def test_users_switch_runs_psd_in_vllms_own_llm_class(pair, greedy_runs):
    """``LLM(model=..., **vllm_kwargs(...))``: the plugin without minedraft's driver, greedy = AR."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from minedraft.executor.psd import vllm_kwargs

    _single_thread_torch()
    w = LLM_REQUESTS
    req = _requests(w["n"], w["prompt"], w["output"], seed=w["seed"])
    ar = greedy_runs[1]["ar_llm"]
    prompts = [TokensPrompt(prompt_token_ids=prompt_tokens(3, i, int(req.prompt_len[i]), 1024)) for i in range(4)]
    llm = LLM(model=pair["target"], skip_tokenizer_init=True, max_num_seqs=4, max_model_len=256,
              kv_cache_memory_bytes=KV, dtype="float32", enforce_eager=True, enable_prefix_caching=False,
              **vllm_kwargs(pair["draft"], K, drafter_kv_cache_memory_bytes=KV))
    try:
        outs = llm.generate(prompts, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, detokenize=False))
        for i, o in enumerate(outs):
            assert list(o.outputs[0].token_ids) == ar.tokens[i]
        sched = llm.llm_engine.engine_core.engine_core.scheduler
        assert type(sched).__name__ == "PSDScheduler" and sched.fallback is None
        assert sched.drafter.alive and sched.drafter.pid != os.getpid()
    finally:
        llm.llm_engine.engine_core.shutdown()


# -------------------------------------------------------------------------------- sampling
def _exact_token_marginals(path, prompt, vocab, steps=2):
    """P(t_j) for j = 1..steps of the HF model sampling at temperature 1 (exact, by enumeration)."""
    import torch
    from transformers import Qwen3ForCausalLM

    model = Qwen3ForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    seqs = torch.tensor([prompt])
    weights = torch.ones(1, dtype=torch.float64)
    out = []
    with torch.no_grad():
        for _ in range(steps + 1):
            logits = model(seqs).logits[:, -1, :vocab].double()
            p = torch.softmax(logits, -1) * weights[:, None]  # joint over the prefix and the next token
            out.append(p.sum(0).numpy())
            n = seqs.shape[0]
            seqs = torch.cat([seqs.repeat_interleave(vocab, 0), torch.arange(vocab).repeat(n)[:, None]], 1)
            weights = p.reshape(-1)
    return out[1:]  # the first generated token comes from the prefill, not from speculation


def _chi2_p(counts, probs):
    from scipy.stats import chisquare

    n = counts.sum()
    exp = probs / probs.sum() * n
    order = np.argsort(exp)
    c, e = counts[order].astype(float), exp[order]
    # pool the smallest cells until each pooled cell expects >= 5
    pooled_c, pooled_e, acc_c, acc_e = [], [], 0.0, 0.0
    for ci, ei in zip(c, e):
        acc_c, acc_e = acc_c + ci, acc_e + ei
        if acc_e >= 5:
            pooled_c.append(acc_c)
            pooled_e.append(acc_e)
            acc_c = acc_e = 0.0
    if acc_e:
        pooled_c[-1] += acc_c
        pooled_e[-1] += acc_e
    return chisquare(pooled_c, pooled_e).pvalue


@pytest.mark.parametrize("mode", ["psd", "pearl"])
def test_sampled_tokens_follow_the_targets_distribution(tmp_path_factory, monkeypatch, mode):
    """Temperature 1, a drafter with its own random weights (many rejections, resampling from the residual):
    the 2nd and 3rd generated tokens (made by rejection sampling) follow the target's exact distribution,
    and the same test tells them apart from the drafter's."""
    vocab = 32
    cfg = tiny_qwen3_config(vocab=vocab)
    paths = save_pair(tmp_path_factory.mktemp(f"dist{mode}"), cfg, noise=0.0, init=0.6, seed=7, independent=True)
    n = 1500
    req = Requests(arrival=np.zeros(n), prompt_len=np.full(n, 6, dtype=np.int64), output_len=np.full(n, 3, np.int64))
    prompt = prompt_tokens(3, 0, 6, vocab)
    import minedraft.executor.engine as eng

    # one prompt for all: the driver draws prompts per request id, so pin them to request 0's
    monkeypatch.setattr(eng, "prompt_tokens", lambda seed, rid, length, v: prompt_tokens(seed, 0, length, v))
    with _engine(paths, {"mode": mode}, max_num_seqs=32, max_model_len=64) as e:
        _, res = _run(e, mode, req, temperature=1.0)
        assert e.scheduler.fallback is None
    s = res.spec_decode
    assert s["num_draft_tokens"] > 0 and s["num_accepted_tokens"] < 0.8 * s["num_draft_tokens"]
    toks = np.asarray([res.tokens[i] for i in range(n)])
    target = _exact_token_marginals(paths["target"], prompt, vocab)
    draft = _exact_token_marginals(paths["draft"], prompt, vocab)
    for j in (1, 2):
        counts = np.bincount(toks[:, j], minlength=vocab)
        assert _chi2_p(counts, target[j - 1]) > 1e-4, f"token {j + 1}: not the target's distribution"
        assert _chi2_p(counts, draft[j - 1]) < 1e-8, f"token {j + 1}: the test cannot tell target from drafter"


# --------------------------------------------------------------------------- fused drafter
@pytest.mark.parametrize("mode", ["psd", "pearl"])
def test_fused_drafter_is_exact_and_drafts_each_op_in_one_runner_pass(pair, greedy_runs, mode):
    """drafter_fused: vLLM's draft_model proposer over the drafter itself adds the drafts after the first inside
    one runner pass. Same greedy output as AR, and one forward per draft op (k per op without it). Placed after
    the tests that use the session's engines: closing an in-process engine tears down vLLM's distributed state."""
    req, runs = greedy_runs
    with _engine(pair, {"mode": mode, "drafter_fused": True}) as e:
        assert e.facts["plugin"]["drafter"]["fused_drafts"] == K - 1 + (1 if mode == "pearl" else 0)
        records, res = _run(e, mode, req)
    assert res.tokens == runs["ar"][1].tokens
    s = res.spec_decode
    assert 0 < s["num_accepted_tokens"] < s["num_draft_tokens"]
    drafts = _ops(records, resource="draft", op="draft")
    assert len(drafts) > 10 and {d["forwards"] for d in drafts} == {1}
    unfused = _ops(runs[mode][0], resource="draft", op="draft")
    assert {d["forwards"] for d in unfused} == {K + (1 if mode == "pearl" else 0)}


def test_uniform_passes_are_exact_and_catch_rows_up_in_a_pass_of_their_own(pair, greedy_runs):
    """drafter_uniform_passes: a row whose drafts were all accepted is two tokens behind at its next op; it catches
    up in a pass of its own, so every pass decodes one token a row. Same greedy output as AR; the ops with such
    rows take one pass more than k, the others k. The drafter's cudagraph_mode travels too (FULL; the CPU build runs
    eager, so here it only has to start)."""
    req, runs = greedy_runs
    with _engine(pair, {"mode": "psd", "drafter_uniform_passes": True, "drafter_cudagraph_mode": "FULL"}) as e:
        records, res = _run(e, "psd", req)
    assert res.tokens == runs["ar"][1].tokens
    default = runs["psd"][1].spec_decode  # the same drafts: the same drafts accepted
    assert res.spec_decode["num_accepted_tokens"] == default["num_accepted_tokens"]
    assert res.spec_decode["num_draft_tokens"] == default["num_draft_tokens"]
    drafts = _ops(records, resource="draft", op="draft")
    caught = [d for d in drafts if d.get("catch_ups")]
    assert caught and len(caught) < len(drafts)
    assert {d["forwards"] for d in caught} == {K + 1}
    assert {d["forwards"] for d in drafts if not d.get("catch_ups")} == {K}


# ----------------------------------------------------------------------- synthetic acceptance
def test_synthetic_acceptance_on_cpu_follows_the_curve(pair):
    from minedraft.acceptance import AcceptanceCurve

    alpha = 0.6
    curve = AcceptanceCurve.geometric(alpha, K)
    with _engine(pair, {"mode": "psd", "accept_curve": curve.to_json(), "synthetic_seed": 5}, max_num_seqs=8) as e:
        records, res = _run(e, "psd", _requests(24, 16, 60, seed=4), keep_tokens=False)
        assert e.facts["plugin"]["synthetic_acceptance"]["rates"] == pytest.approx(list(curve.rates))
        acc = np.asarray([a for v in _ops(records, op="verify") for a in v["accepted"]])
        assert len(acc) > 300
        # P(A >= j) = alpha^j, position by position, within 5 standard errors
        for j in range(1, K + 1):
            p = alpha ** j
            assert abs((acc >= j).mean() - p) < 5 * np.sqrt(p * (1 - p) / len(acc)), j
        assert res.spec_decode["num_accepted_tokens"] == int(acc.sum())  # vLLM's own counters agree
        m = compute_metrics(trace_from_records(records)["psd"])
        assert m["mean_acceptance_length"] == pytest.approx(curve.expected_tokens(K), rel=0.08)
        # between runs, without a restart: another curve, a smaller batch, equal-concurrency halves
        e.set_plugin_curve(AcceptanceCurve.geometric(0.95, K))
        e.set_max_num_seqs(4)
        e.set_psd_capacity("split")
        assert (e.facts["plugin"]["capacity"], e.facts["plugin"]["half_capacity"]) == (4, 2)
        records, res = _run(e, "psd", _requests(12, 16, 40, seed=6), keep_tokens=False)
    verifies = _ops(records, op="verify")
    acc = np.asarray([a for v in verifies for a in v["accepted"]])
    assert (acc == K).mean() > 0.75 and max(v["size"] for v in verifies) <= 4
    assert res.finished == 12


# -------------------------------------------------------------------------------- failure
def test_killing_the_drafter_mid_run_keeps_every_request(pair, greedy_runs):
    w = KILL_REQUESTS
    req = _requests(w["n"], w["prompt"], w["output"], seed=w["seed"])
    ar = greedy_runs[1]["ar_kill"]
    with _engine(pair, {"mode": "psd"}) as e:
        pid = e.drafter_pid
        killed = []

        def progress(n):
            if not killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(time.perf_counter())

        records, res = _run(e, "psd", req, progress=progress)
        assert killed and e.scheduler.fallback is not None and "drafter" in e.scheduler.fallback
        assert not e.scheduler.drafter.alive
    events = [r for r in records if r["type"] == "event"]
    assert [ev["event"] for ev in events] == ["speculation_stopped"]
    assert sorted(res.tokens) == list(range(len(req)))
    for rid in range(len(req)):
        assert res.tokens[rid] == ar.tokens[rid], f"request {rid}"
    t_stop = events[0]["t"]
    after = [o for o in records if o["type"] == "op" and o["t_start"] > t_stop]
    assert after and all(o["resource"] == "target" and o["op"] in ("decode", "prefill") for o in after)
    assert max(o["batch_size"] for o in after) <= 4  # still one vLLM batch at a time
    m = compute_metrics(trace_from_records(records)["psd"])
    assert m["completed"] == len(req)


# ------------------------------------------------------------------------------------ CLI
def test_cli_runs_psd_and_pearl_with_synthetic_acceptance_on_cpu(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny_qwen3_config()))
    out, trace, chrome = tmp_path / "exec.json", tmp_path / "exec.jsonl", tmp_path / "exec.trace.json"
    cmd = [sys.executable, "-m", "minedraft.cli.exec", "--policy", "psd,pearl", "--target", str(d), "--draft", str(d),
           "--num-prompts", "8", "--input-len", "24", "--output-len", "24", "--max-num-seqs", "4", "-k", str(K),
           "--accept-curve", "0.7", "--kv-cache-memory-gib", "0.03", "--json", str(out), "--trace", str(trace),
           "--trace-chrome", str(chrome), "--quiet", "--warmup", "1"]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    assert set(res) == {"psd", "pearl"}
    for r in res.values():
        assert r["completed"] == 8 and r["throughput_check"]["ok"]
    assert 1.5 < res["psd"]["mean_acceptance_length"] < 3.2  # 0.7 geometric, k = 3: 2.53 expected
    recs = list(read_records(trace))
    assert {r["resource"] for r in recs if r["type"] == "op"} == {"target", "draft"}
    hdr = [r for r in recs if r["type"] == "header"]
    assert [h["policy"] for h in hdr] == ["psd", "pearl"]
    assert hdr[0]["config"]["executor"]["plugin"]["synthetic_acceptance"]["rates"][0] == pytest.approx(0.7)
    # --trace-chrome: the same ops as a Chrome / Perfetto trace (Trace Event Format schema, tests/data)
    jsonschema = pytest.importorskip("jsonschema")
    doc = json.loads(chrome.read_text())
    jsonschema.validate(doc, json.loads((Path(__file__).parent / "data/chrome_trace.schema.json").read_text()))
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == sum(r["type"] == "op" for r in recs)
    assert {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"} == {"psd", "pearl"}


# ------------------------------------------------------------------------- the GPU benchmark
def test_one_gpu_benchmark_script_runs_its_grid_on_cpu(tmp_path):
    """benchmarks/gpu_psd.py (meant for one GPU), smoke-run here: one child per engine, JSON lines; PSD in both
    capacity modes and PEARL, as the GPU sessions run them."""
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny_qwen3_config()))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, os.path.join(root, "benchmarks", "gpu_psd.py"), "--pairs", f"{d}:{d}",
           "--modes", "ar,psd,pearl", "--ks", "2", "--max-num-seqs", "2,4", "--alphas", "0.7", "--input-len", "16",
           "--output-len", "16", "--waves", "2", "--kv-cache-memory-gib", "0.03", "--warmup", "1",
           "--trace-dir", str(tmp_path / "traces")]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    results = [x for x in lines if x["kind"] == "result"]
    assert [(r["policy"], r.get("psd_capacity"), r["max_num_seqs"]) for r in results] == [
        ("ar", None, 2), ("ar", None, 4), ("psd", "double", 2), ("psd", "double", 4), ("psd", "split", 2),
        ("psd", "split", 4), ("pearl", None, 2), ("pearl", None, 4)]
    for r in results:
        assert r["completed"] == r["num_prompts"] and r["throughput_check"]["ok"]
    for r in results[2:]:
        o = r["overlap"]
        if r["policy"] == "psd":
            assert r["requests_in_flight"] == (2 if r["psd_capacity"] == "double" else 1) * r["max_num_seqs"]
        assert o["steps_with_draft"] > 0 and o["mean_overlap_s"] > 0 and 0 < o["mean_bytes_sent"] < 400
        b = o["draft_op_breakdown"]  # the drafter's own account of its op: k = 2 runner passes (PEARL: k + 1)
        assert len(b["forward_ms"]) == (3 if r["policy"] == "pearl" else 2)
        # the passes lie inside the op: op minus its passes is positive op by op, so its median is too (a sum of
        # per-pass medians need not stay below the median op: it failed once on CI, 2.887 against 2.717 ms)
        assert 0 < min(b["forward_ms"]) and 0 < b["outside_forwards_ms"] < b["op_ms"] and 0 < b["cpu_ms"]
    assert lines[-1]["kind"] == "done" and len(list((tmp_path / "traces").glob("*.jsonl"))) == 8


def test_psd_costs_benchmark_script_runs_its_grid_on_cpu(tmp_path):
    """benchmarks/psd_costs.py (meant for one GPU), smoke-run here: SD and PSD engines in a child each, a result
    line per rows, the swap micro-benchmark both ways on PSD's runner, and lines the report's pairing reads."""
    import importlib.util

    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny_qwen3_config()))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "benchmarks", "psd_costs.py")
    cmd = [sys.executable, script, "--pairs", f"{d}:{d}", "--ks", "2", "--rows", "2,4", "--input-len", "16",
           "--output-len", "16", "--kv-cache-memory-gib", "0.03", "--warmup", "1", "--swap-steps", "6"]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    results = [x for x in lines if x["kind"] == "result"]
    assert [(r["policy"], r["max_num_seqs"]) for r in results] == [("sd", 2), ("sd", 4), ("psd", 2), ("psd", 4)]
    for r in results:
        s = r["serial"]
        assert "error" not in s and s["steps"] >= 5 and s["target_ms_median"] > 0, s
        assert r["output_throughput"] > 0 and r["num_prompts"] == 2 * r["requests_in_flight"]
    for r in results[2:]:
        assert r["requests_in_flight"] == 2 * r["max_num_seqs"]  # psd_capacity double
        assert r["serial"]["serial_ms_median"] is not None and r["serial"]["drafter_wait_ms_median"] >= 0
        dr = r["drafter"]
        assert dr["ops"] > 0 and dr["entries_per_op"] == 0 and dr["later_pass_ms"] > 0 and dr["op_over_forwards"] > 0
        assert r["runner"]["steps"] > 0
    swaps = [x for x in lines if x["kind"] == "swap"]
    assert [s["rows"] for s in swaps] == [2, 4]
    keys = ("steady_ms_resident", "alternating_ms_resident", "steady_ms_single", "alternating_ms_single")
    for s in swaps:
        assert "skipped" not in s, s
        assert all(s[key] > 0 for key in keys), s
        assert s["swap_ms"] == pytest.approx(s["alternating_ms_resident"] - s["steady_ms_resident"], abs=2e-4)
    assert lines[-1]["kind"] == "done"
    # the lines pair up as --report pairs them (PSD over SD, same pair, k and rows; steady runs only)
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("psd_costs", script)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(os.path.join(root, "benchmarks"))
    ratios = mod.pair_ratios(lines)
    assert all(r > 0 for r in ratios)
    steady = [dict(x, step_spread=1.0) if x["kind"] == "result" else x for x in lines]  # a CPU host is not steady
    want = [results[i + 2]["output_throughput"] / results[i]["output_throughput"] for i in (0, 1)]
    assert mod.pair_ratios(steady) == pytest.approx(want)

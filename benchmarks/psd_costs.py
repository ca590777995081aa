"""What the PSD plugin itself costs, each cost on its own (issue 25), and PSD / SD in the same session.

For each target:drafter pair and k, two engines, each in a process of its own (one GPU, the drafter sharing it):

- ``sd``: vLLM's own ``draft_model`` SD (synthetic acceptance), with the plugin's worker class only for its two
  clock reads a step (``PSDWorker.minedraft_steps``; no other change: no plugin options, vLLM's runner);
- ``psd``: the plugin (drafter process on the target's GPU, synthetic acceptance from the same curve).

Each engine runs the same offline workload at each ``--rows`` (``--waves`` x the requests in flight), then:

- **serial time**: per step, target end (``sample_tokens`` returns) to the next target start
  (``execute_model`` is called), in the engine's own process: scheduling, output processing and, for PSD,
  the wait for the drafter, the policy and the send of the next drafter op. Median over the run's steps.
- **drafter op**: per full-half draft op, its wall time in the drafter process over k x the median of its
  later runner passes (each a one-token decode of the same rows, in place: what vLLM's runner takes per
  drafted token), the first pass's excess, copies re-entered, bytes and latency of each message both ways.
- **swap** (PSD engine only, after its runs): one verify step of ``rows`` rows (k drafts each) on the target's
  own runner, driven step by step: the same half every step (what SD's verify does) against alternating halves
  (what PSD does), with resident batches on and off. ``swap_ms`` = alternating - steady, resident on.

Every line printed is JSON (``kind`` = setup, engine, result, swap, skipped, done). ``--report [FOLDER]`` reads
the newest committed ``docs/measurements`` folder that has this script's output (``psd_costs*.jsonl``) and
prints one JSON line: ``swap_ms_16``, ``swap_ms_64`` (the largest over pairs and k), ``drafter_op_over_forwards``
(the median over runs), ``serial_ms_64`` (PSD's serial time minus SD's at 64 rows, the largest over pairs and
k whose two runs are steady, as below; ``serial_ms_64_all_pairs`` without that filter), ``psd_over_sd_shared_min`` / ``_median`` (output throughput, PSD with resident halves over SD of the same
session, target, drafter, k, α and rows, over every pair whose two runs are steady: p90/p10 of full-batch target steps
<= 1.25, in every committed folder and FOLDER).

On a lent GPU with vLLM 0.26 (``../shared/tools/gpu-vllm``), from the repo root:
``python3 benchmarks/psd_costs.py --pairs qwen3-32b:qwen3-0.6b,qwen3-8b:qwen3-0.6b --ks 3 --rows 16,64``.
On the CPU build it runs the same grid on tiny models (mechanics, not speed; the vLLM tests smoke-run it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _gpu_common import (ROOT, Clock, RunRecorder, add_run_flags, device_facts, emit, import_minedraft, ints,
                         run_children, start_engine, target_drafter_pairs)

STEADY = 1.25  # p90/p10 of a run's full-batch target steps above this: not a steady run
MODES = ("sd", "psd")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="qwen3-32b:qwen3-0.6b,qwen3-8b:qwen3-0.6b",
                   help="comma list of target:drafter presets (or model directories)")
    p.add_argument("--ks", default="1,3,5", help="comma list of k")
    p.add_argument("--rows", default="16,64", help="comma list of max_num_seqs (rows a step verifies)")
    p.add_argument("--modes", default="sd,psd", help="engines per pair and k (sd, psd)")
    p.add_argument("--alpha", type=float, default=0.8,
                   help="synthetic geometric acceptance α; 0: the models' own acceptance (a drafter equal to the "
                        "target accepts nearly every draft: a check that the plugin's state is right on this device)")
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--waves", type=int, default=2, help="requests = waves x requests in flight (offline)")
    p.add_argument("--swap-steps", type=int, default=24, help="timed verify steps per swap measurement")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="SD's target")
    p.add_argument("--psd-target-gpu-memory-utilization", type=float, default=0.7,
                   help="PSD's target (the drafter shares the GPU)")
    p.add_argument("--drafter-gpu-memory-utilization", type=float, default=0.15)
    p.add_argument("--kv-cache-memory-gib", type=float, default=None,
                   help="KV cache of each engine (the CPU build needs one)")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--resident-batches", type=int, default=1, choices=(0, 1),
                   help="the plugin's resident_batches option for PSD's runs (the swap measurement does both)")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    p.add_argument("--report", nargs="?", const="", default=None, metavar="FOLDER",
                   help="print the summary line of the newest committed measurements folder (or FOLDER)")
    add_run_flags(p, engine_start_s=240.0)
    return p.parse_args(argv)




# ------------------------------------------------------------------------------------ the parent
def parent(a: argparse.Namespace, argv: list[str]) -> int:
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"error: --modes: {bad[0]} is not one of {', '.join(MODES)}")
    jobs = [{"mode": m, "target": t, "draft": d, "k": k} for t, d in target_drafter_pairs(a.pairs)
            for k in ints(a.ks) for m in MODES if m in modes]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    rc, elapsed = run_children(__file__, argv, [(j, ["--job", json.dumps(j)]) for j in jobs], a.deadline_s,
                               a.engine_start_s, env)
    emit({"kind": "done", "elapsed_s": round(elapsed, 1)})
    return rc


# ------------------------------------------------------------------------------------- per run
def median(x) -> float | None:
    import numpy as np

    x = [v for v in x if v is not None]
    return float(np.median(x)) if x else None


def step_spread(records: list[dict]) -> float | None:
    """p90/p10 of a run's full-batch target decode/verify steps (no prefill tokens): the same GPU work each step,
    so a spread well above the others says the host disturbed the run."""
    import numpy as np

    ops = [r for r in records if r.get("type") == "op" and r.get("resource") == "target"
           and r.get("op") in ("decode", "verify") and not r.get("prefill_tokens")]
    if not ops:
        return None
    full = max(o.get("size", 0) for o in ops)
    d = np.array([o["t_end"] - o["t_start"] for o in ops if o.get("size") == full])
    return float(np.percentile(d, 90) / np.percentile(d, 10)) if len(d) >= 5 else None


def serial_gaps(steps: list[tuple[float, float]], waits: list[float] | None) -> dict:
    """From (execute_model called, sample_tokens returned) per engine step: target end -> next target start, ms;
    ``waits`` (PSD): per step, the seconds the scheduler waited for the drafter in that gap (the barrier, and the
    drafter's prefill after the target's), taken out of ``serial_ms``: what is left is the host's own work."""
    import numpy as np

    gaps = np.array([(b[0] - a[1]) * 1e3 for a, b in zip(steps, steps[1:])])
    wait = np.zeros(len(gaps))
    if waits is not None:
        if len(waits) < len(steps):
            return {"steps": len(steps), "error": f"{len(waits)} drafter waits for {len(steps)} steps"}
        wait = 1e3 * np.asarray(waits[-len(steps):][:len(gaps)])
    busy = [(e - s) * 1e3 for s, e in steps]
    work = gaps - wait
    return {"steps": len(steps), "serial_ms_median": median(work), "serial_ms_p90":
            float(np.percentile(work, 90)) if len(work) else None, "gap_ms_median": median(gaps),
            "drafter_wait_ms_median": median(wait), "target_ms_median": median(busy)}


def drafter_costs(records: list[dict], rows: int, k: int) -> dict | None:
    """The drafter's ops of a PSD run: op time against its passes, and the messages both ways."""
    ops = [r for r in records if r.get("type") == "op" and r.get("op") == "draft" and r.get("forward_ms")]
    full = [d for d in ops if d["size"] == rows and len(d["forward_ms"]) == k]
    if not full:
        return None
    later = median(ms for d in full for ms in d["forward_ms"][1:]) if k > 1 else None
    op_ms = [(d["t_end"] - d["t_start"]) * 1e3 for d in full]
    out = {"ops": len(full), "op_ms": median(op_ms), "first_pass_ms": median(d["forward_ms"][0] for d in full),
           "later_pass_ms": later, "passes_ms": median(sum(d["forward_ms"]) for d in full),
           "entries_per_op": median(d.get("entries") for d in full),
           "op_over_forwards": median(o / (k * later) for o in op_ms) if later else None,
           "bytes_sent": median(d["bytes_sent"] for d in ops),
           "bytes_received": median(d["bytes_received"] for d in ops),
           "send_ms": median((d["t_start"] - d["t_sent"]) * 1e3 for d in ops),
           "receive_ms": median((d["t_received"] - d["t_end"]) * 1e3 for d in ops)}
    return {key: round(v, 4) if isinstance(v, float) else v for key, v in out.items()}


# ------------------------------------------------------------------------------------ the child
def child(a: argparse.Namespace) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout: JSON lines only
    import_minedraft()
    import numpy as np

    from minedraft.acceptance import AcceptanceCurve
    from minedraft.executor import compat
    from minedraft.executor.engine import EngineSpec
    from minedraft.executor.models import check_pair, resolve_model
    from minedraft.executor.psd import WORKER
    from minedraft.executor.run import policy_metrics, run_policy
    from minedraft.workload import Requests

    job = json.loads(a.job)
    mode, k = job["mode"], int(job["k"])
    clock = Clock(a.deadline_s)
    rows_list = sorted(ints(a.rows))
    target, draft = resolve_model(job["target"], "--target"), resolve_model(job["draft"], "--draft")
    check_pair(target, draft)
    labels = {"policy": mode, "target": job["target"], "draft": job["draft"], "k": k, "alpha": a.alpha,
              "drafter_device": "same" if mode == "psd" else None,
              "resident_batches": bool(a.resident_batches) if mode == "psd" else None}
    emit({"kind": "setup", "vllm": compat.vllm_version(), "platform": compat.platform_name(), **labels,
          **device_facts()})
    curve = AcceptanceCurve.geometric(a.alpha, k + 1) if a.alpha > 0 else None
    kv_bytes = int(a.kv_cache_memory_gib * (1 << 30)) if a.kv_cache_memory_gib else None
    psd = mode == "psd"
    spec = EngineSpec(
        target, draft, k, max_num_seqs=rows_list[-1], max_model_len=a.input_len + a.output_len + 2 * k + 8,
        kv_cache_memory_bytes=kv_bytes, seed=a.seed, enforce_eager=True if a.enforce_eager else None,
        gpu_memory_utilization=None if kv_bytes else (a.psd_target_gpu_memory_utilization if psd
                                                      else a.gpu_memory_utilization),
        synthetic_rates=None if psd or curve is None or not compat.synthetic_supported() else curve.vllm_rates(k),
        extra_args={} if psd else {"worker_cls": WORKER},
        plugin={"mode": "psd", "drafter_device": "same", "accept_curve": curve.to_json() if curve else None,
                "psd_capacity": "double", "psd_split": "always",  # the published schedule: its costs are measured
                "resident_batches": bool(a.resident_batches), "drafter_kv_cache_memory_bytes": kv_bytes,
                "drafter_gpu_memory_utilization": None if kv_bytes else a.drafter_gpu_memory_utilization,
                "record": True} if psd else None)
    eng = start_engine(spec, f"costs-{mode}", labels, clock, a.engine_start_s, a.warmup, a.input_len)
    if eng is None:
        return 0
    worker = compat.engine_worker(eng.engine)
    with eng:
        for rows in rows_list:
            run_labels = labels | {"max_num_seqs": rows}
            if not clock.left(30):
                emit({"kind": "skipped", **run_labels, "reason": "deadline"})
                continue
            eng.set_max_num_seqs(rows)
            in_flight = 2 * rows if psd else rows
            n = a.waves * in_flight
            req = Requests(arrival=np.zeros(n), prompt_len=np.full(n, a.input_len, dtype=np.int64),
                           output_len=np.full(n, a.output_len, dtype=np.int64))
            sink = RunRecorder(a.trace_dir, run_labels)
            records = sink.records

            runner_before = dict(compat.runner_of(worker).minedraft_stats) if psd else None
            sends_before = dict(eng.scheduler.sends) if psd else None
            worker.minedraft_steps.clear()
            if psd:
                eng.scheduler.minedraft_waits.clear()
            t = time.monotonic()
            res = run_policy(eng, mode, req, sink, online=False, seed=a.seed,
                             header_config={"benchmark": "psd_costs", **run_labels}, num_gpus=1)
            sink.close()
            m = policy_metrics(records, mode, res, False, eng.facts)
            out = {"kind": "result", **run_labels, "requests_in_flight": in_flight, "num_prompts": n,
                   "input_len": a.input_len, "output_len": a.output_len, "run_s": round(time.monotonic() - t, 3),
                   "output_throughput": m["output_throughput"], "mean_e2e_latency_s": m.get("mean_e2e_latency_s"),
                   "mean_acceptance_length": m.get("mean_acceptance_length"),
                   "step_spread": step_spread(records),
                   "serial": serial_gaps(list(worker.minedraft_steps),
                                         list(eng.scheduler.minedraft_waits) if psd else None),
                   "drafter": drafter_costs(records, rows, k) if psd else None,
                   "runner": {key: v - runner_before[key]
                              for key, v in compat.runner_of(worker).minedraft_stats.items()} if psd else None,
                   # where the drafter ops were sent: at_launch (while the target's forward runs), at_schedule, or
                   # at_barrier (a driver that never called get_grammar_bitmask)
                   "sends": {key: v - sends_before[key] for key, v in eng.scheduler.sends.items()} if psd else None}
            emit(out)
        if psd:
            for rows in rows_list:
                if not clock.left(20):
                    emit({"kind": "skipped", **labels, "max_num_seqs": rows, "reason": "deadline (swap)"})
                    continue
                emit({"kind": "swap", **labels, "rows": rows,
                      **measure_swap(eng, rows, k, a.input_len + a.output_len // 2, a.swap_steps)})
    return 0


def measure_swap(eng, rows: int, k: int, context: int, steps: int) -> dict:
    """One verify step (``rows`` rows, k drafts each, ``context`` tokens each) on the idle engine's own target
    runner, driven directly: the same half every step against two alternating halves, resident batches on and
    off. Median wall time of execute_model + sample_tokens (its host sync included), ms."""
    import numpy as np
    from vllm import SamplingParams

    from minedraft.executor import compat

    core = compat.engine_core(eng.engine)
    runner = compat.engine_core_runner(core)
    bs, nblocks, groups = compat.engine_core_kv_layout(core)
    params = SamplingParams(temperature=0.0, max_tokens=context)
    per = -(-(context + k + 2) // bs)
    if 2 * rows * per >= nblocks - 1:
        return {"skipped": "KV cache too small"}
    rng = np.random.default_rng(7)
    # block ids straight from the pool, past vLLM's KV manager: safe only because the engine is idle (every run done)
    # and its requests finish before anything else runs on it (the cleanup below)
    free = list(range(1, nblocks))
    reqs = {}
    for h in (0, 1):
        for i in range(rows):
            reqs[f"swap-{h}-{i}"] = (rng.integers(10, 1000, context).tolist(), [free.pop() for _ in range(per)])
    budget = int(eng.engine.vllm_config.scheduler_config.max_num_batched_tokens)
    for rid, (toks, blocks) in reqs.items():  # prefill, one request a forward (within the token budget)
        done = 0
        while done < context:
            n = min(budget, context - done)
            new = [(rid, toks, done, blocks)] if done == 0 else []
            cached = [] if done == 0 else [(rid, done, 0)]
            compat.run_forward(core, compat.drafter_scheduler_output(new, cached, {rid: n}, set(), params, groups))
            done += n
    drafts = rng.integers(10, 1000, (2 * rows, k)).tolist()

    def step(half: int) -> float:
        ids = [f"swap-{half}-{i}" for i in range(rows)]
        so = compat.verify_scheduler_output([(rid, context, 1) for rid in ids],
                                            {rid: drafts[half * rows + i] for i, rid in enumerate(ids)}, groups)
        t0 = time.perf_counter()
        compat.run_forward(core, so)
        return time.perf_counter() - t0

    out = {"context": context}
    saved = runner.minedraft_resident
    # the four ways in interleaved rounds (a slow spell of the host then falls on all of them, not on one); each
    # block's first two steps refill the batches after the switch and are not timed
    rounds = 4
    per = max(4, steps // rounds)
    times: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for resident in (True, False):
                runner.minedraft_set_resident(resident)
                for name, order in (("steady", [0] * (per + 2)), ("alternating", [i % 2 for i in range(per + 2)])):
                    t = [step(h) for h in order]
                    times.setdefault(f"{name}_ms_{'resident' if resident else 'single'}", []).extend(t[2:])
    finally:
        runner.minedraft_set_resident(saved)
        compat.run_forward(core, compat.drafter_scheduler_output([], [], {}, set(reqs), params, groups))
    for key, t in times.items():
        out[key] = round(1e3 * float(np.median(t)), 4)
    out["swap_ms"] = round(out["alternating_ms_resident"] - out["steady_ms_resident"], 4)
    out["swap_ms_single_batch"] = round(out["alternating_ms_single"] - out["steady_ms_single"], 4)
    return out


# ----------------------------------------------------------------------------------- the report
def newest_folder() -> Path:
    folders = sorted(p.parent for p in (ROOT / "docs/measurements").glob("*/psd_costs*.jsonl"))
    if not folders:
        raise SystemExit("error: --report: no folder in docs/measurements holds psd_costs*.jsonl")
    return folders[-1]


def read_lines(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("psd_costs*.jsonl")):
        for line in f.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return out


def run_key(r: dict) -> tuple:
    """(policy, target, draft, k, α, rows) of a result line; PSD runs of vLLM's single persistent batch
    (``--resident-batches 0``) are a policy of their own, ``psd-single``."""
    pol = "psd-single" if r["policy"] == "psd" and r.get("resident_batches") is False else r["policy"]
    return pol, r["target"], r["draft"], r["k"], r.get("alpha"), r["max_num_seqs"]


def steady(r: dict) -> bool:
    """Whether a result line's run is steady (its full-batch target steps within STEADY of each other)."""
    return r.get("step_spread") is not None and r["step_spread"] <= STEADY


def pair_ratios(lines: list[dict]) -> list[float]:
    """PSD over SD output throughput for every (pair, k, α, rows) whose PSD (resident halves) and SD runs are both
    steady."""
    runs = {}
    for r in lines:
        if r.get("kind") == "result" and r.get("output_throughput"):
            runs[run_key(r)] = r
    out = []
    for (pol, *key), p in runs.items():
        s = runs.get(("sd", *key))
        if pol != "psd" or s is None:
            continue
        if steady(p) and steady(s):
            out.append(p["output_throughput"] / s["output_throughput"])
    return out


def report(arg: str) -> int:
    folder = Path(arg) if arg else newest_folder()
    if not folder.is_dir():
        raise SystemExit(f"error: --report: {folder} is not a folder")
    lines = read_lines(folder)
    if not lines:
        raise SystemExit(f"error: --report: {folder} holds no psd_costs*.jsonl lines")
    swap = {rows: [r["swap_ms"] for r in lines if r.get("kind") == "swap" and r.get("rows") == rows and "swap_ms" in r]
            for rows in (16, 64)}
    results = [r for r in lines if r.get("kind") == "result"]
    ratio = [r["drafter"]["op_over_forwards"] for r in results
             if (r.get("drafter") or {}).get("op_over_forwards") and run_key(r)[0] == "psd"]
    runs = {run_key(r): r for r in results
            if r.get("max_num_seqs") == 64 and (r.get("serial") or {}).get("serial_ms_median") is not None}
    serial, serial_all = [], []
    for (pol, *key), p in runs.items():
        s = runs.get(("sd", *key))
        if pol != "psd" or s is None:
            continue
        extra = p["serial"]["serial_ms_median"] - s["serial"]["serial_ms_median"]
        serial_all.append(extra)
        if steady(p) and steady(s):  # as for the ratios: a disturbed run's host loop stalled too
            serial.append(extra)
    pairs = [x for f in sorted({p.parent for p in (ROOT / "docs/measurements").glob("*/psd_costs*.jsonl")} | {folder})
             for x in pair_ratios(read_lines(f))]
    r4 = lambda x: round(x, 4) if x is not None else None  # noqa: E731
    print(json.dumps({
        "swap_ms_16": r4(max(swap[16])) if swap[16] else None, "swap_ms_64": r4(max(swap[64])) if swap[64] else None,
        "drafter_op_over_forwards": r4(median(ratio)), "serial_ms_64": r4(max(serial)) if serial else None,
        "serial_ms_64_all_pairs": r4(max(serial_all)) if serial_all else None,
        "psd_over_sd_shared_min": r4(min(pairs)) if pairs else None,
        "psd_over_sd_shared_median": r4(median(pairs)), "folder": str(folder.relative_to(ROOT)
                                                                      if folder.is_relative_to(ROOT) else folder)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.report is not None:
        return report(a.report)
    if a.job is None:
        return parent(a, argv)
    return child(a)


if __name__ == "__main__":
    raise SystemExit(main())

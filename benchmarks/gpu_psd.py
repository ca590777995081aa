"""PSD (and PEARL) in vLLM against vLLM's SD and AR on one or two GPUs: issue 8 item 4, issue 10.

Grid (defaults): target Qwen3-8B with Qwen3-0.6B, and Qwen3-32B with Qwen3-0.6B / 1.7B (``--pairs``);
k in {1, 3, 5}; max_num_seqs (batch) 16 and 64; synthetic geometric acceptance α in {0.6, 0.8}; PSD in
both capacity modes (``double``: each half holds max_num_seqs, the published basis; ``split``: halves
share it, equal concurrency with SD). Dummy weights (presets), prompts of token ids, offline waves.

Where the drafter runs (``--drafter-device``): ``same`` shares the target's GPU (issue 8 item 4: the
overlap then competes for the GPU); ``cuda:1`` puts it alone on the second visible GPU (issue 10: the
published layout at TP 1). vLLM's SD and AR always run on the first visible GPU; pin one-GPU jobs to a
GPU with ``CUDA_VISIBLE_DEVICES`` to run two of them side by side on a two-GPU machine.

**One engine per process** (an in-process engine does not hand all its GPU memory back when dropped;
seen on the H200): the parent starts one child per engine, each prints its own JSON lines. Engines:

- ``ar``: one per target (vLLM's own AR, sync scheduling as our SD/PSD);
- ``sd``: one per (target, drafter, k): vLLM's ``draft_model`` SD, drafter on the target's GPU,
  acceptance from vLLM's synthetic mode (``synthetic_acceptance_rates``, changed in place per α);
- ``psd`` (and ``pearl`` with ``--modes``): one per (target, drafter, k): minedraft's plugin with the
  drafter in its own process on ``--drafter-device``, acceptance from the plugin's synthetic mode
  (changed between runs per α), capacity mode switched between runs;
- ``sd-own``: the plugin's mode ``sd``: SD with the drafter in its own process on ``--drafter-device``
  (``cuda:1``: alone on the second GPU), draft then verify, no overlap (issue 10's baseline that
  separates PSD's overlap from the drafter's placement); printed as policy ``sd`` with ``sd_drafter: own``.

Inside an engine, α, max_num_seqs and PSD's capacity mode change between runs without a restart (the
engine is started with the largest max_num_seqs). Memory: AR and SD take ``--gpu-memory-utilization``;
a PSD target sharing its GPU takes ``--psd-target-gpu-memory-utilization`` and its drafter
``--drafter-gpu-memory-utilization`` (the rest stays free for the two CUDA contexts); a PSD target with
the drafter elsewhere takes ``--gpu-memory-utilization`` and the drafter 0.9 of its own GPU.

Every finished run prints ``{"kind": "result", ...}`` with the simulator's ``RESULT_KEYS``, vLLM's
spec-decode counts, the engine facts and, for PSD/PEARL, ``overlap``: per-step target time, drafter op
time, their overlap and the transfer sizes/latencies read from the trace (what the simulator needs to
model the sharing). ``--trace-dir`` writes each run's trace; ``--deadline-s`` stops starting work in time.

Meant for a lent GPU machine with vLLM 0.26.0 (``../shared/tools/gpu-vllm``), from the repo root:
``python3 benchmarks/gpu_psd.py --pairs qwen3-8b:qwen3-0.6b --ks 1,3,5 --trace-dir $OUT``.
It needs no install of minedraft beyond the repo on disk (the drafter process is handed the same
package path). Not run in CI (it needs a GPU); ``--help`` runs anywhere, and the vLLM tests smoke-run
it on the CPU build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from _gpu_common import (  # noqa: E402 - beside this script
    ROOT, Clock, RunRecorder, add_run_flags, device_facts, emit, floats, import_minedraft, ints, run_children,
    start_engine, target_drafter_pairs)




MODES = ("ar", "sd", "psd", "pearl", "sd-own")  # sd-own: the plugin's mode sd (SD, drafter in its own process)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default="qwen3-8b:qwen3-0.6b,qwen3-32b:qwen3-0.6b,qwen3-32b:qwen3-1.7b",
                   help="comma list of target:drafter presets (or model dirs)")
    p.add_argument("--modes", default="ar,sd,psd", help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--ks", default="1,3,5", help="comma list of k")
    p.add_argument("--max-num-seqs", default="16,64", help="comma list of max_num_seqs (batch)")
    p.add_argument("--alphas", default="0.6,0.8", help="comma list of geometric synthetic acceptance α")
    p.add_argument("--psd-capacities", default="double,split", help="PSD capacity modes to run (double, split)")
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--waves", type=int, default=4, help="num_prompts = waves x capacity (offline)")
    p.add_argument("--drafter-device", default="same",
                   help="PSD/PEARL drafter: same (the target's GPU) | cuda:N (the N-th visible GPU, alone)")
    p.add_argument("--drafter-uniform-passes", action="store_true",
                   help="the plugin's drafter_uniform_passes: rows two tokens behind catch up in a pass of their own, "
                        "so every runner pass is a one-token decode batch (FULL CUDA graphs)")
    p.add_argument("--drafter-cudagraph-mode", default=None,
                   help="the plugin's drafter_cudagraph_mode (vLLM's cudagraph_mode for the drafter: FULL puts the "
                        "op's mixed first pass under full graphs too)")
    p.add_argument("--drafter-fused", action="store_true",
                   help="the plugin's drafter_fused: one vLLM runner pass per drafter op (vLLM's draft_model proposer "
                        "over the drafter itself adds the later drafts)")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1,
                   help="target's GPUs (the first TP visible ones); PSD's drafter then goes on --drafter-device cuda:TP "
                        "for the published layout (issue 11: TP 4 + a fifth GPU)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85,
                   help="AR and SD engines, and a PSD/PEARL target whose drafter is on another GPU")
    p.add_argument("--psd-target-gpu-memory-utilization", type=float, default=0.70,
                   help="PSD/PEARL target sharing its GPU with the drafter process")
    p.add_argument("--drafter-gpu-memory-utilization", type=float, default=0.15,
                   help="PSD/PEARL drafter process sharing the target's GPU")
    p.add_argument("--kv-cache-memory-gib", type=float, default=None,
                   help="KV cache size instead of a memory fraction (the CPU build needs it: smoke tests)")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="vLLM's per-step token budget (PSD needs max_num_seqs x (k + 1) at least)")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (target and drafter)")
    add_run_flags(p, engine_start_s=180.0)
    p.add_argument("--measure-swap", action="store_true",
                   help="instead of the grid: what alternating halves costs vLLM's V1 runner and scheduler per step "
                        "(the first --pairs target; --max-num-seqs = rows per half; contexts --swap-contexts)")
    p.add_argument("--swap-contexts", default="256,1024,4096", help="context lengths for --measure-swap")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: the one engine of a child
    return p.parse_args(argv)


def jobs(a: argparse.Namespace) -> list[dict]:
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"error: --modes: each must be one of {', '.join(MODES)}; got {m}")
    out, targets = [], []
    for t, d in target_drafter_pairs(a.pairs):
        if "ar" in modes and t not in targets:
            targets.append(t)
            out.append({"mode": "ar", "target": t, "draft": None, "k": 0})
        for k in ints(a.ks):
            for m in ("sd", "psd", "pearl", "sd-own"):
                if m in modes:
                    out.append({"mode": m, "target": t, "draft": d, "k": k})
    return out


def parent(a: argparse.Namespace, argv: list[str]) -> int:
    """One child process per engine (this script with --job)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    rc, elapsed = run_children(__file__, argv, [(job, ["--job", json.dumps(job)]) for job in jobs(a)], a.deadline_s,
                               a.engine_start_s, env)
    emit({"kind": "done", "elapsed_s": round(elapsed, 1)})
    return rc


def overlap_stats(records: list[dict]) -> dict:
    """Per verify step of a PSD/PEARL trace: target busy, drafter busy, both at once, transfer."""
    import numpy as np

    ops = [r for r in records if r.get("type") == "op"]
    drafts = {r["step"]: r for r in ops if r["resource"] == "draft" and r["op"] == "draft"}
    tgt, dr, both, step, sent, recv, lat_in, lat_out = [], [], [], [], [], [], [], []
    for v in ops:
        if v["resource"] != "target" or v["op"] != "verify":
            continue
        d = drafts.get(v["step"])
        t_end = v.get("t_target_end", v["t_end"])
        tgt.append(t_end - v["t_start"])
        step.append(v["t_end"] - v["t_start"])
        if d is None:
            continue
        dr.append(d["t_end"] - d["t_start"])
        both.append(max(0.0, min(t_end, d["t_end"]) - max(v["t_start"], d["t_start"])))
        sent.append(d["bytes_sent"])
        recv.append(d["bytes_received"])
        lat_in.append(d["t_start"] - d["t_sent"])
        lat_out.append(d["t_received"] - d["t_end"])

    def mean(x):
        return float(np.mean(x)) if x else None

    return {"verify_steps": len(step), "steps_with_draft": len(dr), "mean_step_s": mean(step),
            "mean_target_s": mean(tgt), "mean_draft_s": mean(dr), "mean_overlap_s": mean(both),
            "mean_bytes_sent": mean(sent), "mean_bytes_received": mean(recv),
            "mean_send_latency_s": mean(lat_in), "mean_receive_latency_s": mean(lat_out),
            "draft_op_breakdown": draft_breakdown(list(drafts.values()))}


def draft_breakdown(drafts: list[dict]) -> dict | None:
    """Medians over a run's drafter ops of where an op's time went (the drafter's own timing): the op, its
    runner passes (the first re-enters the copies), the rest of the op (our Python: copies, blocks, inputs),
    the drafter thread's CPU time and its involuntary context switches."""
    import numpy as np

    ops = [d for d in drafts if d.get("forward_ms")]
    if not ops:
        return None
    counts = [len(d["forward_ms"]) for d in ops]
    n = max(set(counts), key=counts.count)  # the usual number of passes (a catch-up pass adds one: uniform passes)
    catch_up = float(np.mean([bool(d.get("catch_ups")) for d in ops]))
    ops = [d for d in ops if len(d["forward_ms"]) == n]
    fwd = np.array([d["forward_ms"][:n] for d in ops])
    op = np.array([(d["t_end"] - d["t_start"]) * 1e3 for d in ops])
    med = lambda x: round(float(np.median(x)), 3)  # noqa: E731
    return {"ops": len(ops), "op_ms": med(op), "forward_ms": [med(fwd[:, j]) for j in range(n)],
            "outside_forwards_ms": med(op - np.array([sum(d["forward_ms"]) for d in ops])),
            "cpu_ms": med([d.get("cpu_ms", np.nan) for d in ops]),
            "preempted": med([d.get("preempted", np.nan) for d in ops]), "catch_up_share": round(catch_up, 3)}


def child(a: argparse.Namespace) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    import_minedraft()
    import numpy as np

    from minedraft.acceptance import AcceptanceCurve
    from minedraft.executor import compat
    from minedraft.executor.engine import EngineSpec
    from minedraft.executor.models import check_pair, resolve_model
    from minedraft.executor.run import policy_metrics, run_policy
    from minedraft.workload import Requests

    job = json.loads(a.job)
    mode, k = job["mode"], int(job["k"])
    clock = Clock(a.deadline_s)
    mns_list = sorted(ints(a.max_num_seqs))
    alphas = floats(a.alphas) if mode != "ar" else [None]
    capacities = [c for c in a.psd_capacities.split(",") if c.strip()] if mode == "psd" else [None]
    target = resolve_model(job["target"], "--target")
    draft = resolve_model(job["draft"], "--draft") if job["draft"] else None
    if draft is not None:
        check_pair(target, draft)
    max_len = a.input_len + a.output_len + 2 * k + 8
    plugin = mode in ("psd", "pearl", "sd-own")
    policy = "sd" if mode == "sd-own" else mode  # the simulator's policy name (sd-own: sd_drafter="own")
    tp = a.tensor_parallel_size
    labels = {"policy": policy, "target": job["target"], "draft": job["draft"], "k": k,
              "tensor_parallel_size": tp if tp > 1 else None, "drafter_fused": True if plugin and a.drafter_fused else None,
              "drafter_uniform_passes": True if plugin and a.drafter_uniform_passes else None,
              "drafter_cudagraph_mode": a.drafter_cudagraph_mode if plugin else None,
              "drafter_device": a.drafter_device if plugin else None, "sd_drafter": "own" if mode == "sd-own" else None}
    emit({"kind": "setup", "vllm": compat.vllm_version(), **labels, **device_facts()})

    shared = a.drafter_device == "same"
    curve0 = AcceptanceCurve.geometric(alphas[0], max(k + 1, 2)) if alphas[0] is not None else None
    kv_bytes = int(a.kv_cache_memory_gib * (1 << 30)) if a.kv_cache_memory_gib else None
    spec = EngineSpec(
        target, draft if mode != "ar" else None, k, max_num_seqs=mns_list[-1], max_model_len=max_len,
        tensor_parallel_size=tp, kv_cache_memory_bytes=kv_bytes,
        gpu_memory_utilization=None if kv_bytes else
        a.psd_target_gpu_memory_utilization if plugin and shared else a.gpu_memory_utilization,
        max_num_batched_tokens=a.max_num_batched_tokens or None, seed=a.seed,
        enforce_eager=True if a.enforce_eager else None,
        synthetic_rates=curve0.vllm_rates(k) if mode == "sd" else None,
        plugin={"mode": policy, "drafter_device": a.drafter_device, "accept_curve": curve0.to_json(),
                "drafter_fused": a.drafter_fused, "drafter_uniform_passes": a.drafter_uniform_passes,
                "drafter_cudagraph_mode": a.drafter_cudagraph_mode,
                "drafter_gpu_memory_utilization": None if kv_bytes or not shared else a.drafter_gpu_memory_utilization,
                "drafter_kv_cache_memory_bytes": kv_bytes,
                "psd_capacity": capacities[0] if mode == "psd" else "double",
                **({"psd_split": "always"} if mode == "psd" else {})} if plugin else None)
    eng = start_engine(spec, f"bench-{mode}", labels, clock, a.engine_start_s, a.warmup, a.input_len)
    if eng is None:
        return 0
    with eng:
        for alpha in alphas:
            if alpha is not None:
                curve = AcceptanceCurve.geometric(alpha, max(k + 1, 2))
                if mode == "sd":
                    eng.set_synthetic_rates(curve.vllm_rates(k))
                elif plugin:
                    eng.set_plugin_curve(curve)
            for cap in capacities:
                for mns in mns_list:
                    run_labels = labels | {"alpha": alpha, "max_num_seqs": mns, "psd_capacity": cap}
                    if not clock.left():
                        emit({"kind": "skipped", **run_labels, "reason": "deadline"})
                        continue
                    eng.set_max_num_seqs(mns)
                    if cap is not None:
                        eng.set_psd_capacity(cap)
                    in_flight = 2 * mns if cap == "double" else mns
                    n = a.waves * in_flight
                    req = Requests(arrival=np.zeros(n), prompt_len=np.full(n, a.input_len, dtype=np.int64),
                                   output_len=np.full(n, a.output_len, dtype=np.int64))
                    sink = RunRecorder(a.trace_dir, run_labels)
                    records = sink.records
                    t = time.monotonic()
                    res = run_policy(eng, policy, req, sink, online=False, seed=a.seed,
                                     header_config={"benchmark": "gpu_psd", **run_labels},
                                     num_gpus=tp if not plugin or shared else tp + 1)
                    sink.close()
                    m = policy_metrics(records, policy, res, False, eng.facts)
                    out = {"kind": "result", **run_labels, "requests_in_flight": in_flight, "num_prompts": n,
                           "input_len": a.input_len, "output_len": a.output_len,
                           "run_s": round(time.monotonic() - t, 3), **m,
                           "engine": {key: eng.facts.get(key) for key in ("vllm_version", "platform", "model_runner",
                                                                          "async_scheduling", "enforce_eager",
                                                                          "num_gpu_blocks")}}
                    if plugin:
                        out["plugin"] = eng.facts.get("plugin")
                        out["overlap"] = overlap_stats(records)
                    emit(out)
    return 0


def measure_swap(a: argparse.Namespace) -> int:
    """Alternating halves vs one steady batch, on the target's own vLLM runner (driven forward by forward).

    PSD verifies half A, then half B: vLLM's V1 runner drops the requests it did not see last step from its
    persistent batch and adds them back (copying each one's token ids and block table row), and the
    scheduler ships each re-entering request's full token list (``all_token_ids``) in the SchedulerOutput
    (through shared memory to the workers under tensor parallelism). This times one decode step of ``b``
    rows at context ``L`` both ways, and the SchedulerOutput's pickled size, on whatever device is here.
    """
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import_minedraft()
    import pickle

    import numpy as np
    from vllm import SamplingParams

    from minedraft.executor import compat
    from minedraft.executor.models import resolve_model

    target = resolve_model(target_drafter_pairs(a.pairs)[0][0], "--target")
    ctxs = ints(a.swap_contexts)
    b = max(ints(a.max_num_seqs))
    spec = {"model": target.path, "load_format": target.load_format, "max_model_len": max(ctxs) + 64,
            "max_num_seqs": b, "max_num_batched_tokens": max(2048, b * 8, max(ctxs) + 64), "seed": a.seed,
            "enforce_eager": True if a.enforce_eager else None,
            "kv_cache_memory_bytes": int(a.kv_cache_memory_gib * (1 << 30)) if a.kv_cache_memory_gib else None,
            "gpu_memory_utilization": None if a.kv_cache_memory_gib else a.gpu_memory_utilization}
    core, cfg = compat.draft_engine_core(spec)
    bs, nblocks, groups = compat.engine_core_kv_layout(core)
    params = SamplingParams(temperature=0.0, max_tokens=1)
    emit({"kind": "setup", "measure": "swap", "vllm": compat.vllm_version(),
          "target": target_drafter_pairs(a.pairs)[0][0],
          "rows_per_half": b, "block_size": bs, "platform": compat.platform_name()})
    rng = np.random.default_rng(a.seed)
    for L in ctxs:
        per = -(-(L + 64) // bs)
        if 2 * b * per >= nblocks:
            emit({"kind": "skipped", "context": L, "reason": "KV cache too small"})
            continue
        free = list(range(1, nblocks))
        reqs = {}
        for h in (0, 1):
            for i in range(b):
                rid = f"{h}-{i}"
                toks = rng.integers(10, 1000, L).tolist()
                reqs[rid] = [toks, [free.pop() for _ in range(per)], 0]  # tokens, blocks, computed
        for h in (0, 1):  # prefill both halves (chunks within the budget), then decode
            ids = [f"{h}-{i}" for i in range(b)]
            for rid in ids:
                toks, blocks, _ = reqs[rid]
                so = compat.drafter_scheduler_output([(rid, toks, 0, blocks)], [], {rid: L}, set(), params, groups)
                out = compat.run_forward(core, so)
                reqs[rid][0] = toks + [int(out.sampled_token_ids[0][-1])]
                reqs[rid][2] = L

        def step(half: int, prev: set[str]) -> tuple[float, int]:
            ids = [f"{half}-{i}" for i in range(b)]
            cached = [(rid, reqs[rid][2], len(reqs[rid][0]) - L) for rid in ids]
            so = compat.drafter_scheduler_output([], cached, dict.fromkeys(ids, 1), set(), params, groups)
            t0 = time.perf_counter()
            # what vLLM's scheduler adds for requests absent from the previous step: their whole token list
            so.scheduled_cached_reqs.all_token_ids = {rid: list(reqs[rid][0]) for rid in ids if rid not in prev}
            out = compat.run_forward(core, so)
            dt = time.perf_counter() - t0
            for rid, tk in zip(out.req_ids, out.sampled_token_ids):
                reqs[rid][0].append(int(tk[-1]))
                reqs[rid][2] += 1
            return dt, len(pickle.dumps(so, protocol=pickle.HIGHEST_PROTOCOL))

        res = {}
        for name, order in (("steady", [0] * 24), ("alternating", [0, 1] * 12)):
            prev: set[str] = set()
            times, sizes = [], []
            for n_step, h in enumerate(order):
                dt, size = step(h, prev)
                prev = {f"{h}-{i}" for i in range(b)}
                if n_step >= 4:
                    times.append(dt)
                    sizes.append(size)
            res[name] = (float(np.median(times)), float(np.median(sizes)))
        emit({"kind": "swap", "context": L, "rows": b, "steady_step_s": res["steady"][0],
              "alternating_step_s": res["alternating"][0],
              "swap_cost_s": res["alternating"][0] - res["steady"][0],
              "swap_cost_per_row_us": 1e6 * (res["alternating"][0] - res["steady"][0]) / b,
              "scheduler_output_bytes_steady": res["steady"][1],
              "scheduler_output_bytes_alternating": res["alternating"][1]})
        core.model_executor.execute_model(compat.drafter_scheduler_output([], [], {}, set(reqs), params, groups))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.measure_swap:
        return measure_swap(a)
    if a.job is None:
        return parent(a, argv)
    return child(a)


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a PSD drafter op's time goes: the plugin's drafter (``DraftRunner``, vLLM's runner driven forward by
forward) timed in-process, forward by forward, optionally as a PSD run drives it.

A drafter op syncs each request's copy (keep / append the target's tokens) and runs k forwards; its first
forward re-enters every copy into vLLM's runner (new-request path) and computes the appended tokens, the
later ones decode one token per row. Prints one JSON line per batch size: the op's median time, each
forward's median, and the first forward's excess over a later one (re-entry plus the extra tokens).

Inside PSD runs the op's first forward costs 3-8 ms more than its later ones, in isolation (this script's default)
0.4-1.4 ms. Two conditions of a run can be replayed here to find out which one costs it: ``--halves 2`` alternates
the ops between two sets of requests, as PSD's halves do (each op re-enters one half while the runner drops the
other), and ``--idle-ms`` waits before each op, as the drafter waits for the target's verify (its process and the
GPU idle in between). One JSON line per (mode, rows, halves, idle).

CPU (vLLM's CPU build, a tiny random model; the default) or a GPU (``--model qwen3-0.6b``, vLLM 0.26 on a
lent machine): ``python benchmarks/drafter_op.py --rows 16,64 --halves 1,2 --idle-ms 0,20``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _gpu_common import import_minedraft, ints  # beside this script


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny (a random 2-layer Qwen3, for CPU) | a preset | a model dir")
    p.add_argument("--rows", default="16,64", help="comma list of rows (requests) per op")
    p.add_argument("-k", type=int, default=3)
    p.add_argument("--context", type=int, default=256, help="prompt tokens per request")
    p.add_argument("--accepted", type=int, default=1, help="drafts the target accepted before each op (+1 bonus)")
    p.add_argument("--ops", type=int, default=30, help="timed ops per batch size (after 5 warm-up ops)")
    p.add_argument("--fused", default="0,1", help="comma list: 0 = one runner pass per forward (the default "
                   "drafter), 1 = fused (the plugin's drafter_fused: vLLM's draft_model proposer in the same pass)")
    p.add_argument("--alpha", type=float, default=None,
                   help="draw each row's accepted drafts from a geometric curve instead (--accepted for all rows): rows "
                        "then need one or two tokens at an op's start, as in a run")
    p.add_argument("--uniform", default="0", help="comma list: 0 = the drafter's default passes, 1 = "
                   "drafter_uniform_passes (rows two tokens behind catch up first; every pass one token a row)")
    p.add_argument("--cudagraph-mode", default="", help="comma list of vLLM cudagraph_mode values for the drafter's "
                   "engine, one engine each ('' = vLLM's default; FULL: mixed passes under full graphs too)")
    p.add_argument("--halves", default="1", help="comma list: sets of requests the ops alternate between (PSD: 2)")
    p.add_argument("--idle-ms", default="0", help="comma list: milliseconds to wait before each op (PSD: the "
                   "target's verify)")
    a = p.parse_args(argv)
    if a.alpha is not None and not 0 < a.alpha < 1:
        p.error(f"--alpha: must be in (0, 1); got {a.alpha}")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import_minedraft()
    import numpy as np

    from minedraft.executor import compat
    from minedraft.executor.models import resolve_model, tiny_qwen3_config
    from minedraft.executor.psd.drafter import DraftRunner

    tmp = tempfile.mkdtemp(prefix="drafter-op-")
    model = resolve_model(tiny_qwen3_config() if a.model == "tiny" else a.model, "--model", Path(tmp))
    rows, halves, idles = ints(a.rows), ints(a.halves), [float(x) for x in a.idle_ms.split(",") if x.strip()]
    spec = {"model": model.path, "load_format": model.load_format, "max_model_len": a.context + (a.ops + 6) * 2 * a.k + 64,
            "max_num_seqs": max(rows), "max_num_batched_tokens": max(2048, max(rows) * (a.k + 2))}
    if compat.is_cpu_build():
        spec["kv_cache_memory_bytes"] = 256 << 20
    else:
        spec["gpu_memory_utilization"] = 0.5
    times: list[float] = []
    inner = compat.run_forward

    def timed(core, so):
        t = time.perf_counter()
        out = inner(core, so)
        times.append(time.perf_counter() - t)
        return out

    compat.run_forward = timed
    drafts: dict[tuple, np.ndarray] = {}
    modes = [m.strip() for m in a.cudagraph_mode.split(",")]  # [""]: vLLM's default only
    for fused, graphs in ((f, g) for f in ints(a.fused) for g in modes):
        # one engine per mode, one after the other (the drafter process holds one)
        runner = DraftRunner(spec | {"fused_drafts": a.k - 1 if fused else 0, "cudagraph_mode": graphs or None})
        next_id = 0
        combos = [(b, h, idle, u) for b in rows for h in halves for idle in idles for u in ints(a.uniform)]
        for b, h, idle, uniform in combos:
            runner.uniform = bool(uniform)
            rng = np.random.default_rng([b, h, int(idle * 1e3)])  # the same tokens and acceptances in every mode
            sets = [list(range(next_id + j * b, next_id + (j + 1) * b)) for j in range(h)]
            next_id += h * b
            for ids in sets:
                runner.prefill(ids, [rng.integers(10, 500, a.context + 1).tolist() for _ in ids])
            ops, fwd, cpus, caught, got_all, seen = [], [], [], [], [], set()
            for i in range(h * (a.ops + 5)):
                ids = sets[i % h]
                # the target accepted `accepted` drafts of the set's last op and added its own token
                acc = np.minimum(rng.geometric(1 - a.alpha, len(ids)) - 1, a.k) if a.alpha is not None else \
                    np.full(len(ids), a.accepted)
                keep = [len(runner.copies[r].tokens) - (a.k - int(x)) for r, x in zip(ids, acc)] if ids[0] in seen \
                    else [len(runner.copies[r].tokens) for r in ids]
                seen.add(ids[0])
                app = [rng.integers(10, 500, 1).tolist() for _ in ids]
                if idle:
                    time.sleep(idle / 1e3)
                times.clear()
                t, c, c0 = time.perf_counter(), time.thread_time(), runner.catch_ups
                got = runner.draft(ids, keep, app, a.k)
                cpu = time.thread_time() - c
                got_all.append(got)
                if i >= 5 * h:
                    ops.append(time.perf_counter() - t)
                    fwd.append(list(times))
                    cpus.append(cpu)
                    caught.append(runner.catch_ups > c0)
            for ids in sets:
                runner.free(ids)
            drafts[(fused, uniform, graphs, b, h, idle)] = np.concatenate(got_all)
            counts = [len(x) for x in fwd]  # a catch-up pass adds one (uniform passes): the usual count's ops
            usual = max(set(counts), key=counts.count)
            keep_ops = [j for j, c in enumerate(counts) if c == usual]
            catch_up_share = float(np.mean(caught))
            fwd, ops, cpus = ([x[j] for j in keep_ops] for x in (fwd, ops, cpus))
            f = np.median(np.asarray(fwd), axis=0)
            print(json.dumps({"rows": b, "k": a.k, "fused": bool(fused), "uniform_passes": bool(uniform),
                              "cudagraph_mode": graphs or None, "halves": h,
                              "idle_ms": idle, "alpha": a.alpha,
                              "model": a.model, "platform": compat.platform_name(), "vllm": compat.vllm_version(),
                              "op_ms": round(float(np.median(ops)) * 1e3, 3), "runner_passes": len(f),
                              "cpu_ms": round(float(np.median(cpus)) * 1e3, 3), "ops": len(ops),
                              "catch_up_share": round(catch_up_share, 3) if uniform else None,
                              "forward_ms": [round(float(x) * 1e3, 3) for x in f],
                              "first_forward_excess": round(float(f[0] / np.median(f[1:]) - 1), 3) if len(f) > 1
                              else None,
                              "outside_forwards_ms": round(float(np.median(ops) - f.sum()) * 1e3, 3)}), flush=True)
        runner.core.shutdown()
        del runner
    for (fused, uniform, graphs, b, h, idle), d in drafts.items():  # every mode decodes the same greedy tokens
        base = drafts.get((0, 0, modes[0], b, h, idle))
        if (fused or uniform or graphs != modes[0]) and base is not None:
            print(json.dumps({"rows": b, "halves": h, "idle_ms": idle, "fused": bool(fused),
                              "uniform_passes": bool(uniform), "cudagraph_mode": graphs or None,
                              "drafts_equal_fraction": round(float(np.mean(base == d)), 4)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Simulator speed: 100,000 requests x 256 output tokens, max_num_seqs 64, SD and PSD.

Usage: python benchmarks/sim_speed.py [--num-prompts N] [--policies sd,psd]

Runs on one core (BLAS threads pinned to 1; the simulator itself is single-threaded) with the default
roofline latency models (Qwen3-32B TP4 + Qwen3-0.6B on H100), k = 5, geometric acceptance 0.7, offline.
Prints wall time, simulated requests/s and simulated output tokens/s per wall second. The goal is under
20 s per policy on one core of the 2-core CPU machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

from minedraft import AcceptanceCurve, LengthDist, PolicyConfig, Roofline, StepCosts, Workload  # noqa: E402
from minedraft.metrics import compute_metrics  # noqa: E402
from minedraft.presets import gpu_spec, model_shape  # noqa: E402
from minedraft.simulator import simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-prompts", type=int, default=100_000)
    ap.add_argument("--policies", default="sd,psd")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    gpu = gpu_spec("h100")
    costs = StepCosts(Roofline(model_shape("qwen3-32b"), gpu, 4), Roofline(model_shape("qwen3-0.6b"), gpu, 1))
    wl = Workload(num_prompts=args.num_prompts, input_len=LengthDist("fixed", 256), output_len=LengthDist("fixed", 256))
    t = time.perf_counter()
    req = wl.generate()
    gen = time.perf_counter() - t
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"pinned to one core; workload generation {gen:.2f} s")
    print(f"{'policy':6} {'wall s':>8} {'sim req/s':>10} {'sim tok/s':>12} {'ops':>9} {'ops/s':>9}  completed")
    for name in args.policies.split(","):
        cfg = PolicyConfig(max_num_seqs=64, num_speculative_tokens=5)
        t = time.perf_counter()
        tr = simulate(name, req, cfg, costs, AcceptanceCurve.geometric(0.7), seed=0)
        wall = time.perf_counter() - t
        m = compute_metrics(tr)
        toks = int(req.output_len.sum())
        print(f"{name:6} {wall:8.2f} {len(req) / wall:10,.0f} {toks / wall:12,.0f} {tr.num_ops:9,} "
              f"{tr.num_ops / wall:9,.0f}  {m['completed']:,} ({'under' if wall < 20 else 'OVER'} 20 s)")


if __name__ == "__main__":
    main()

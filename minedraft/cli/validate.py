"""``minedraft-validate``: re-simulate measured runs exactly and report predicted vs measured.

RUN is a trace written by ``minedraft-exec`` (or ``benchmarks/gpu_ar_sd.py``); ``--all DIR`` validates
every run in a folder (``*.jsonl`` traces, or ``traces_*.tgz`` archives of them) and prints the summary.
Step times come from fitted step models: ``--profile-dir`` or the ones shipped for ``--gpu``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.table import Table

from minedraft.calibration.plugin import plugin_file, with_plugin_costs
from minedraft.calibration.steps import PROFILES, draft_key, load_step_model, model_key
from minedraft.cli import common
from minedraft.costs import StepCosts
from minedraft.errors import require
from minedraft.metrics import compute_metrics
from minedraft.report import console
from minedraft.simulator.replay import measured_run, replay
from minedraft.trace import load_runs
from minedraft.validation import compare, run_figure, step_times, summary_figure


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-validate", description=__doc__.split("\n\n")[0])
    p.add_argument("run", nargs="*", help="measured trace(s) (JSONL)")
    p.add_argument("--all", default=None, help="validate every run in this folder (*.jsonl or traces_*.tgz)")
    p.add_argument("--gpu", default=None, help="use the step models shipped for this GPU (e.g. h200)")
    p.add_argument("--profile-dir", default=None, help="folder of step models: <target>.json, <target>+<draft>.json")
    p.add_argument("--seed", default="0", help="simulation seed (default 0)")
    p.add_argument("--json", default=None, help="write the comparison as JSON to PATH ('-' = stdout)")
    p.add_argument("--html", default=None, help="write the figure (one run: bars and step CDFs; --all: scatter) as one "
                   "self-contained HTML file (plotly inlined: it opens offline)")
    p.add_argument("--quiet", action="store_true")
    return p


def step_models(a: argparse.Namespace) -> Path:
    require(a.gpu is not None or a.profile_dir is not None, "--gpu",
            "give --gpu (shipped step models) or --profile-dir (your own fits)")
    folder = Path(a.profile_dir) if a.profile_dir else PROFILES / a.gpu.lower()
    flag = "--profile-dir" if a.profile_dir else "--gpu"
    shipped = sorted(p.name for p in PROFILES.iterdir()) if PROFILES.is_dir() else []
    require(folder.is_dir(), flag, "must name a folder of step models" if a.profile_dir else
            f"has no shipped step models; shipped: {', '.join(shipped) or 'none'}", a.profile_dir or a.gpu)
    return folder


def costs_for(folder: Path, target: str, draft: str | None, flag: str, plugin: Path | None = None,
              tp: int = 1, resident: bool = True) -> StepCosts:
    """The step models in ``folder`` (the target's at TP ``tp``); with ``plugin`` (a run of the plugin), also the
    plugin costs fitted there (``resident``: of the plugin with resident halves, else of the one before)."""
    target = model_key(target, tp)
    t = folder / f"{target}.json"
    require(t.is_file(), flag, f"has no step model for target {target} ({t.name})", str(folder))
    target_model, _ = load_step_model(t, flag)
    draft_model = None
    if draft:
        d = folder / f"{draft_key(draft, target)}.json"
        require(d.is_file(), flag, f"has no step model for drafter {draft} with {target} ({d.name})", str(folder))
        draft_model, _ = load_step_model(d, flag)
    costs = StepCosts(target_model, draft_model)
    return with_plugin_costs(costs, plugin, flag, plugin_file(plugin, resident)) if plugin is not None else costs


def validate(name: str, records: list[dict], folder: Path, flag: str, seed: int, plugin: Path | None = None) -> dict:
    """Replay one measured run with the step models in ``folder`` (plugin costs from ``plugin``, else ``folder``)."""
    run = measured_run(records, name)
    costs = costs_for(folder, run.target, run.draft, flag, plugin=(plugin or folder) if run.plugin else None,
                      tp=run.target_gpus, resident=run.resident)
    predicted_trace = replay(run, costs, seed=seed)
    measured, predicted = compute_metrics(run.trace), compute_metrics(predicted_trace)
    ms, ps = step_times(run.trace), step_times(predicted_trace)
    return {"name": name, "policy": run.policy, "target": run.target, "draft": run.draft, "k": run.k,
            "alpha": run.alpha, "max_num_seqs": run.cfg.max_num_seqs, "psd_capacity": run.cfg.psd_capacity,
            "psd_drafter": run.cfg.psd_drafter, "measured": measured, "predicted": predicted,
            "rows": compare(measured, predicted, ms, ps), "_steps": (ms, ps)}


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    seed = common.as_int(a.seed, "--seed", 0, 2**63 - 1)
    json_out = common.output_path(a.json, "--json")
    html_out = common.output_path(a.html, "--html")
    folder = step_models(a)
    flag = "--profile-dir" if a.profile_dir else "--gpu"
    runs = load_runs(a.run, a.all)
    results = [validate(n, recs, folder, flag, seed) for n, recs in runs.items()]
    out = console()
    if len(results) == 1 and not a.all:
        r = results[0]
        t = Table(title=f"{r['name']}: predicted vs measured", title_justify="left")
        for c in ("figure", "measured", "predicted", "error"):
            t.add_column(c, justify="left" if c == "figure" else "right")
        for row in r["rows"]:
            m, p, e = row["measured"], row["predicted"], row["error"]
            t.add_row(row["label"], "–" if m is None else f"{m:,.2f}", "–" if p is None else f"{p:,.2f}",
                      "–" if e is None else f"{e:+.1%}")
        if not a.quiet:
            out.print(t)
        if html_out:
            run_figure(r["name"], r["rows"], *r["_steps"]).write_html(html_out, include_plotlyjs=True)
    else:
        t = Table(title="predicted vs measured", title_justify="left")
        for c in ("run", "tok/s meas", "pred", "err", "E2E ms meas", "pred", "err"):
            t.add_column(c, justify="left" if c == "run" else "right")
        for r in results:
            m, p = r["measured"], r["predicted"]
            et = p["output_throughput"] / m["output_throughput"] - 1
            ee = p["mean_e2el_ms"] / m["mean_e2el_ms"] - 1
            t.add_row(r["name"], f"{m['output_throughput']:,.0f}", f"{p['output_throughput']:,.0f}", f"{et:+.1%}",
                      f"{m['mean_e2el_ms']:,.0f}", f"{p['mean_e2el_ms']:,.0f}", f"{ee:+.1%}")
        if not a.quiet:
            out.print(t)
            out.print(summary_line(results))
        if html_out:
            summary_figure(results).write_html(html_out, include_plotlyjs=True)
    if json_out:
        clean = [{k: v for k, v in r.items() if k != "_steps"} for r in results]
        text = json.dumps({"profiles": str(folder), "results": clean, "summary": summary(results)}, indent=2,
                          default=float)
        if json_out == "-":
            print(text)
        else:
            Path(json_out).write_text(text + "\n")
    return 0


def summary(results: list[dict]) -> dict:
    out = {"runs": len(results)}
    for key in ("output_throughput", "mean_e2el_ms"):
        e = np.abs([r["predicted"][key] / r["measured"][key] - 1 for r in results])
        out[key] = {"median_abs_error": float(np.median(e)), "max_abs_error": float(e.max())}
    return out


def summary_line(results: list[dict]) -> str:
    s = summary(results)
    return (f"{s['runs']} runs: output throughput |error| median {s['output_throughput']['median_abs_error']:.1%}, "
            f"max {s['output_throughput']['max_abs_error']:.1%}; mean E2E |error| median "
            f"{s['mean_e2el_ms']['median_abs_error']:.1%}, max {s['mean_e2el_ms']['max_abs_error']:.1%}")


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()

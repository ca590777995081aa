"""Write docs/published_layout.md: the simulator's predictions for issue 11's runs, made before them.

The published layout (``../shared/reference/paper-notes.md``): PSD on 5 GPUs (Qwen3-32B at TP 4 + the
drafter alone on a fifth) against SD on 4 (TP 4, drafter sharing the target's GPUs); drafters Qwen3-0.6B,
1.7B, 4B; k = 1..5; max_num_seqs 16 (and 8, 32, 64 with the 0.6B); 1000 offline prompts of 256 output
tokens. Every figure here comes from ``minedraft-sim`` (run in-process with ``--json``, PSD as published:
``--psd-split always``), under the
step-time sources it states: no TP 4 profile is shipped yet, so the target is the roofline at TP 4
(modelled); with ``--plugin-costs h200`` the plugin's own costs measured at TP 1 on H200s are added.

Acceptance, stated (both are assumptions for dummy-weight runs, where acceptance is synthetic):
- ``geometric 0.8``: P(draft j accepted | drafts before it accepted) = 0.8;
- ``trained pair``: our trained pair's measured greedy curve (calibration/data/curves/trained_pair_greedy.json).

Usage: python scripts/published_predictions.py [--num-prompts 1000] [--out docs/published_layout.md]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.progress import track

from minedraft.cli.common import run_cli
from minedraft.cli.sim import main as sim_main
from minedraft.report import save_figure

ROOT = Path(__file__).resolve().parents[1]
CURVES = {"geometric 0.8": "0.8", "trained pair": str(ROOT / "calibration/data/curves/trained_pair_greedy.json")}
DRAFTS = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b")
KS = (1, 2, 3, 4, 5)


def grid() -> list[tuple[str, int, int]]:
    """(drafter, k, max_num_seqs) of issue 11."""
    out = [(d, k, 16) for d in DRAFTS for k in KS]
    out += [("qwen3-0.6b", k, m) for m in (8, 32, 64) for k in KS]
    return out


def _plugin_costs() -> str:
    """The shipped plugin fit, as the page states it (calibration/data/profiles/h200/plugin.json: the costs of the
    plugin with resident halves, the one a run now would measure), and what it was fitted on."""
    from minedraft.calibration.plugin import PLUGIN_FILE, load_plugin_costs
    from minedraft.calibration.steps import PROFILES

    c = load_plugin_costs(PROFILES / "h200")
    d = json.loads((PROFILES / "h200" / PLUGIN_FILE).read_text())
    prov, fit = d["provenance"], d.get("fit", {})
    own, shared = len(fit.get("own_gpu_runs", [])), len(fit.get("shared_gpu_runs", []))
    text = (f"drafter op {c['drafter_op_s'] * 1e3:.1f} ms, half swap {c['verify_swap_s'] * 1e3:.2f} ms + "
            f"{c['verify_swap_row_s'] * 1e6:.0f} us/row; `{PLUGIN_FILE}`, fitted {prov.get('date', '')} on {own} "
            f"run{'s' if own != 1 else ''} with the drafter on a GPU of its own and {shared} with it sharing the "
            f"target's: `{prov['command']}`; the sharing terms do not apply here")
    if own == 0:
        text += (", and no run of this plugin with its drafter on a GPU of its own was measured: these two terms come "
                 "from the one-GPU runs" + (" and the half-swap micro-benchmark (`--swap-from`)"
                                            if "--swap-from" in prov["command"] else ""))
    return text


def simulate(draft: str, k: int, mns: int, curve: str, n: int, capacity: str, plugin: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.json"
        args = ["--gpu", "h200", "--target", "qwen3-32b", "--draft", draft, "-tp", "4", "--policy", "sd,psd",
                "-k", str(k), "--max-num-seqs", str(mns), "--num-prompts", str(n), "--input-len", "256",
                "--output-len", "256", "--accept-curve", curve, "--psd-capacity", capacity, "--psd-split", "always",
                "--json", str(path), "--quiet"] + (["--plugin-costs", "h200"] if plugin else [])
        rc = run_cli(sim_main, args)
        if rc != 0:
            raise SystemExit(f"minedraft-sim {' '.join(args)} failed ({rc})")
        data = json.loads(path.read_text())
    res = {r["policy"]: r for r in data["results"]}
    return {"config": data["config"], "sd": res["sd"], "psd": res["psd"]}


def row(r: dict) -> dict:
    sd, psd = r["sd"], r["psd"]
    return {"tput": psd["output_throughput"] / sd["output_throughput"],
            "per_gpu": psd["output_throughput_per_gpu"] / sd["output_throughput_per_gpu"],
            "latency": psd["latency_per_request_ms"] / sd["latency_per_request_ms"],
            "e2e": psd["mean_e2el_ms"] / sd["mean_e2el_ms"],
            "sd_tput": sd["output_throughput"], "psd_tput": psd["output_throughput"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "docs/published_layout.md"))
    a = p.parse_args(argv)
    cases = [(d, k, m, c, cap, pl) for (d, k, m) in grid() for c in CURVES for cap in ("double", "split")
             for pl in (False, True)]
    got: dict[tuple, dict] = {}
    sources = None
    for case in track(cases, description="simulating"):
        d, k, m, c, cap, pl = case
        r = simulate(d, k, m, CURVES[c], a.num_prompts, cap, pl)
        got[case] = row(r)
        if sources is None:
            sources = r["config"].get("timing")

    lines = ["# The published 5-GPU layout: predictions made before the run (issue 11)", "",
             "Generated by `python scripts/published_predictions.py` (see its docstring); nothing here is measured.",
             "These are the numbers the x8 run will be compared with, in `docs/validation.md`, once "
             "`nvidia-h200-x8` is lent.", "",
             f"Step times: {json.dumps(sources)}.", "",
             "- PSD: Qwen3-32B at TP 4 + the drafter alone on a fifth GPU (5 GPUs); SD: TP 4, drafter on the target's "
             "GPUs (4 GPUs). 1000 offline prompts, 256 input / 256 output tokens, H200.",
             "- **same max_num_seqs** (`double`, the published basis: PSD holds 2x the requests), **equal "
             "concurrency** (`split`: the halves share max_num_seqs), **per GPU** (throughput / GPUs, 5 vs 4).",
             "- *latency* as published = makespan / requests (the inverse of throughput); E2E = mean per-request "
             "end-to-end latency.",
             "- *design*: the simulator's PSD as published; *+ plugin*: with minedraft's vLLM plugin's costs "
             f"measured at TP 1 on H200s ({_plugin_costs()}).", ""]
    for c in CURVES:
        lines += [f"## Acceptance: {c}", "",
                  "| drafter | k | max_num_seqs | SD tok/s | PSD/SD tput (design) | PSD/SD tput (+ plugin) | "
                  "latency ratio (design) | per GPU (design) | equal concurrency (design) | "
                  "equal concurrency (+ plugin) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for d, k, m in grid():
            dd, dp = got[(d, k, m, c, "double", False)], got[(d, k, m, c, "double", True)]
            sd_, sp = got[(d, k, m, c, "split", False)], got[(d, k, m, c, "split", True)]
            lines.append(f"| {d} | {k} | {m} | {dd['sd_tput']:,.0f} | {dd['tput']:.2f}x | {dp['tput']:.2f}x | "
                         f"{dd['latency']:.2f}x | {dd['per_gpu']:.2f}x | {sd_['tput']:.2f}x | {sp['tput']:.2f}x |")
        lines.append("")
    best = max(((case, v) for case, v in got.items() if case[4] == "double" and not case[5]),
               key=lambda cv: cv[1]["tput"])
    bp = max(((case, v) for case, v in got.items() if case[4] == "double" and case[5]), key=lambda cv: cv[1]["tput"])
    lines += ["## Against the published headline", "",
              "The paper reports up to +75% throughput and -39% latency (makespan per request) over SD, on the "
              "published basis. Predicted best on that basis:", "",
              f"- design: {best[1]['tput']:.2f}x throughput, latency {best[1]['latency'] - 1:+.0%} "
              f"({best[0][0]}, k = {best[0][1]}, max_num_seqs {best[0][2]}, acceptance {best[0][3]});",
              f"- with the plugin's measured costs: {bp[1]['tput']:.2f}x, latency {bp[1]['latency'] - 1:+.0%} "
              f"({bp[0][0]}, k = {bp[0][1]}, max_num_seqs {bp[0][2]}, acceptance {bp[0][3]}).", "",
              "Caveats: the TP 4 target is the uncalibrated roofline (the x8 run brings the TP 4 profile); vLLM V1's "
              "SD shards its drafter at the target's TP (`draft_tensor_parallel_size` must equal it), where the "
              "published SD ran it at TP 1 on GPU 0: the x8 run measures both (vLLM's SD, and the plugin's mode `sd` "
              "with the drafter sharing GPU 0).", "",
              "![PSD/SD throughput](figures/published_layout.png)", ""]
    Path(a.out).write_text("\n".join(lines))
    _figure(got)
    print(f"wrote {a.out} ({len(cases)} simulations)")
    return 0


def _figure(got: dict) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = dict(zip(DRAFTS, ("#1f77b4", "#2ca02c", "#d62728")))
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(CURVES), shared_yaxes=True)
    for col, c in enumerate(CURVES, start=1):
        for d in DRAFTS:
            for pl, dash in ((False, "solid"), (True, "dot")):
                ys = [got[(d, k, 16, c, "double", pl)]["tput"] for k in KS]
                fig.add_trace(go.Scatter(x=list(KS), y=ys, mode="lines+markers",
                                         line={"dash": dash, "color": colors[d]},
                                         name=f"{d} {'+ plugin costs' if pl else 'design'}", legendgroup=f"{d}{pl}",
                                         showlegend=col == 1), row=1, col=col)
        fig.add_hline(y=1.75, line_dash="dash", line_color="gray", row=1, col=col,
                      **({"annotation_text": "published +75%"} if col == 1 else {}))
        fig.add_hline(y=1.0, line_color="black", row=1, col=col)
        fig.update_xaxes(title_text="k", row=1, col=col)
    fig.update_yaxes(title_text="PSD / SD output throughput (predicted)", row=1, col=1)
    fig.update_layout(title="Qwen3-32B TP 4 on H200, max_num_seqs 16: PSD (5 GPUs) over SD (4 GPUs), predicted",
                      template="plotly_white")
    save_figure(fig, ROOT / "docs/figures/published_layout", 1100, 480)


if __name__ == "__main__":
    raise SystemExit(main())

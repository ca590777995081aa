"""Make the theory figures of docs/theory.md and print the numbers it quotes.

    python scripts/theory_figures.py            # writes docs/figures/theory_*.html and .png, prints numbers

Figures (Plotly; HTML always, PNG when a static exporter is available: plotly's own with kaleido >= 1, or
kaleido 0.2.1's bundled Chromium):

- theory_37_map:   makespan reduction of PSD vs SD over (k T_d / T_v, alpha), facets k = 1, 2, 3, 5, 8, for
                   three readings (same k; PSD re-tunes k; both tuned), contour at 37%;
- theory_bases:    the reduction on each comparison basis as a function of rho = D / V (closed form);
- theory_optimal_k: throughput against k for SD and PSD (constant times), and the optimal-k schedule per
                   batch size on the roofline model;
- theory_load:     mean E2E latency under Poisson load, the approximation against the simulator.
Every number printed here comes from minedraft.theory (and minedraft.simulator for the load check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from minedraft.simulator import simulate
from minedraft.theory.compare import compare
from minedraft.theory.load import crossover_rate, e2e_under_load, max_rate
from minedraft.theory.optimal_k import free_k, k_schedule, optimal_k
from minedraft.theory.reduction import (
    CERTIFIED_BOXES,
    basis_gamma,
    certify_tuned,
    prove_published,
    prove_same_concurrency,
    prove_unified,
    reduction_grid,
    reduction_window,
    unified_reduction,
)
from minedraft.theory.serving import Setup, steady
from plotly.subplots import make_subplots

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.latency import Constant, Roofline
from minedraft.metrics import compute_metrics
from minedraft.policies import PolicyConfig
from minedraft.presets import gpu_spec, model_shape
from minedraft.report import save_figure
from minedraft.workload import LengthDist, Workload

OUT = Path(__file__).resolve().parent.parent / "docs" / "figures"


def save(fig: go.Figure, name: str, width: int, height: int) -> str:
    got = save_figure(fig, OUT / name, width, height)
    if got != "png":
        print(f"  ({name}: no PNG exporter; HTML only)", file=sys.stderr)
    return got


# ------------------------------------------------------------------------------------------ the 37% map
def fig_map() -> dict:
    rhos = np.round(np.geomspace(0.05, 5.0, 64), 4)
    alphas = np.round(np.linspace(0.30, 0.98, 40), 4)
    ks = (1, 2, 3, 5, 8)
    readings = [("same_k", "same k (published basis)"), ("psd_tuned", "SD at k, PSD re-tunes k' <= 10"),
                ("both_tuned", "both tuned, k <= 10")]
    fig = make_subplots(rows=len(readings), cols=len(ks), shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.02, vertical_spacing=0.06,
                        subplot_titles=[f"k = {k}" if r == 0 else "" for r in range(len(readings)) for k in ks])
    share = {}
    for r, (reading, label) in enumerate(readings):
        for c, k in enumerate(ks):
            z = reduction_grid(rhos, alphas, k, reading).astype(np.float32)  # float32: half the HTML
            share[f"{reading}_k{k}"] = float(np.mean(z >= np.float32(0.37)))
            fig.add_trace(go.Heatmap(x=rhos, y=alphas, z=z, zmin=0.0, zmax=0.5, zmid=0.37, colorscale="RdBu",
                                     colorbar=dict(title="makespan<br>reduction", tickformat=".0%"),
                                     showscale=(r == 0 and c == 0),
                                     hovertemplate="rho %{x:.2f}<br>alpha %{y:.2f}<br>R %{z:.1%}<extra></extra>"),
                          row=r + 1, col=c + 1)
            fig.add_trace(go.Contour(x=rhos, y=alphas, z=z, showscale=False, contours=dict(
                start=0.37, end=0.37, size=1, coloring="none"), line=dict(color="black", width=2),
                hoverinfo="skip", showlegend=False), row=r + 1, col=c + 1)
        fig.update_yaxes(title_text=f"{label}<br>alpha", row=r + 1, col=1)
    fig.update_xaxes(type="log")
    for c in range(len(ks)):
        fig.update_xaxes(title_text="k T_d / T_v", row=len(readings), col=c + 1)
    fig.update_layout(title="PSD vs SD makespan reduction (published basis, constant step times); black: 37%",
                      margin=dict(l=90, r=20, t=70, b=50))
    return {"format": save(fig, "theory_37_map", 1500, 900), "share_of_map_at_least_37": share}


def fig_bases() -> dict:
    rho = np.geomspace(0.05, 10, 400)
    lines = [("same max_num_seqs (published)", 1.0), ("same GPUs, tp=4", basis_gamma("same_gpus", tp=4)),
             ("same GPUs, tp=8", basis_gamma("same_gpus", tp=8)),
             ("same concurrency, phi=0 (linear in batch)", basis_gamma("same_concurrency", 0.0)),
             ("same concurrency, phi=0.26", basis_gamma("same_concurrency", 0.26)),
             ("same concurrency, phi=0.5", basis_gamma("same_concurrency", 0.5)),
             ("same concurrency, constant times (phi=1)", basis_gamma("same_concurrency", 1.0))]
    fig = go.Figure()
    out = {}
    for name, g in lines:
        fig.add_trace(go.Scatter(x=rho, y=unified_reduction(rho, g), name=f"{name}: gamma={g:.3g}", mode="lines"))
        w = reduction_window(g)
        out[name] = {"gamma": g, "max_reduction": 1 - g / 2, "window_rho": w}
    fig.add_hline(y=0.37, line_dash="dash", annotation_text="37%")
    fig.update_xaxes(type="log", title="rho = D / V of one PSD half (drafting over verification)")
    fig.update_yaxes(title="makespan reduction R = 1 - gamma max(1, rho) / (1 + rho)", tickformat=".0%",
                     range=[-0.6, 0.55])
    fig.update_layout(title="PSD vs SD on each comparison basis (o = tau = 0)", legend=dict(x=0.01, y=0.01))
    out["format"] = save(fig, "theory_bases", 1000, 600)
    return out


def fig_optimal_k() -> dict:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "constant step times, alpha=0.8",
        "roofline Qwen3-32B TP4 + 0.6B on H100, alpha=0.7"))
    curve = AcceptanceCurve.geometric(0.8)
    out: dict = {"constant": {}, "roofline": {}}
    ks = np.arange(1, 11)
    for c, dash in ((0.05, "dot"), (0.15, "dash"), (0.3, "solid")):
        s = Setup(curve, StepCosts(Constant(0.010), Constant(0.010 * c)), 16)
        sd = np.array([steady("sd", s, int(k)).throughput for k in ks])
        psd = np.array([steady("psd", s, int(k)).throughput for k in ks])
        best = sd.max()
        fig.add_trace(go.Scatter(x=ks, y=sd / best, name=f"SD, T_d/T_v={c}", line=dict(dash=dash, color="#d62728")),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=ks, y=psd / best, name=f"PSD, T_d/T_v={c}", line=dict(dash=dash, color="#1f77b4")),
                      row=1, col=1)
        out["constant"][str(c)] = {"optimal_k_sd": optimal_k("sd", s), "optimal_k_psd": optimal_k("psd", s),
                                   "free_k_psd": free_k(s)}
    fig.update_xaxes(title_text="k", row=1, col=1)
    fig.update_yaxes(title_text="output tok/s / SD's best", row=1, col=1)
    gpu = gpu_spec("h100")
    costs = StepCosts(Roofline(model_shape("qwen3-32b"), gpu, 4), Roofline(model_shape("qwen3-0.6b"), gpu, 1))
    s = Setup(AcceptanceCurve.geometric(0.7), costs, 64, target_gpus=4, context_len=256 + 128)
    for p, color in (("sd", "#d62728"), ("psd", "#1f77b4")):
        sched = k_schedule(p, s, 10)
        b = np.arange(1, 65)
        kk = np.array([next(k for lo, hi, k in sched if lo <= x <= hi) for x in b])
        fig.add_trace(go.Scatter(x=b, y=kk, name=f"{p.upper()} schedule", line=dict(shape="hv", color=color)),
                      row=1, col=2)
        out["roofline"][p] = [list(r) for r in sched]
    fig.update_xaxes(title_text="batch size (PSD: per half)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="optimal k", row=1, col=2)
    fig.update_layout(title="Optimal speculation length: throughput against k (left), optimal k per batch size (right)")
    out["format"] = save(fig, "theory_optimal_k", 1300, 520)
    return out


def fig_load(num_prompts: int) -> dict:
    curve = AcceptanceCurve.geometric(0.8)
    costs = StepCosts(Constant(0.010), Constant(0.0015))
    m, k, out_len = 8, 4, 65
    fig = go.Figure()
    out: dict = {"setting": "constant V=10 ms, X=1.5 ms, k=4, alpha=0.8, max_num_seqs 8, output 65", "points": []}
    colors = {"sd": "#d62728", "psd double": "#1f77b4", "psd split": "#2ca02c"}
    for name, pol, cap in (("sd", "sd", "double"), ("psd double", "psd", "double"), ("psd split", "psd", "split")):
        s = Setup(curve, costs, m, cap)
        top = max_rate(pol, s, k, out_len)
        rates = np.linspace(0.03, 0.97, 60) * top
        e2e = [e2e_under_load(pol, s, k, float(r), out_len).e2e_s * 1e3 for r in rates]
        fig.add_trace(go.Scatter(x=rates, y=e2e, name=f"{name} theory", line=dict(color=colors[name])))
        sim_x, sim_y = [], []
        for frac in (0.2, 0.5, 0.75, 0.9):
            r = frac * top
            wl = Workload(num_prompts=num_prompts, request_rate=r, input_len=LengthDist("fixed", 32),
                          output_len=LengthDist("fixed", out_len), seed=3)
            cfg = PolicyConfig(max_num_seqs=m, num_speculative_tokens=k, psd_capacity=cap)
            got = compute_metrics(simulate(pol, wl.generate(), cfg, costs, curve, seed=3))["mean_e2el_ms"]
            want = e2e_under_load(pol, s, k, r, out_len).e2e_s * 1e3
            sim_x.append(r)
            sim_y.append(got)
            out["points"].append({"policy": name, "rate": r, "sim_ms": got, "theory_ms": want,
                                  "rel_err": got / want - 1})
        fig.add_trace(go.Scatter(x=sim_x, y=sim_y, mode="markers", name=f"{name} simulated",
                                 marker=dict(color=colors[name], size=9, symbol="x")))
    s = Setup(curve, costs, m)
    out["crossover"] = crossover_rate("sd", "psd", s, s, k, k, out_len)
    fig.update_xaxes(title="Poisson arrival rate (requests/s)")
    fig.update_yaxes(title="mean E2E latency (ms)", type="log")
    fig.update_layout(title=f"Mean E2E latency under Poisson load: theory (lines) and simulator (crosses)<br>"
                            f"<sup>{out['setting']}; PSD (double) beats SD above "
                            f"{out['crossover']['rate']:.1f} req/s</sup>")
    out["format"] = save(fig, "theory_load", 1000, 600)
    return out


def published_table() -> dict:
    """Our numbers for the comparison with the published ones (roofline, experiment-1 models)."""
    gpu = gpu_spec("h100")
    costs = StepCosts(Roofline(model_shape("qwen3-32b"), gpu, 4), Roofline(model_shape("qwen3-0.6b"), gpu, 1))
    rows = []
    for alpha in (0.6, 0.7, 0.8):
        for mns in (8, 16, 32, 64):
            s = Setup(AcceptanceCurve.geometric(alpha), costs, mns, target_gpus=4, context_len=256 + 128)
            best = None
            for k in range(1, 6):  # the published k range
                v = compare("sd", "psd", s, k, k, "same_max_num_seqs", 1000, 256, 256)
                if best is None or v.throughput_ratio > best[1]:
                    best = (k, v.throughput_ratio, v.makespan_reduction)
            conc = compare("sd", "psd", s, best[0], best[0], "same_concurrency", 1000, 256, 256)
            gpus = compare("sd", "psd", s, best[0], best[0], "same_gpus", 1000, 256, 256)
            rows.append({"alpha": alpha, "max_num_seqs": mns, "k": best[0], "throughput_ratio": best[1],
                         "makespan_reduction": best[2], "same_concurrency_ratio": conc.throughput_ratio,
                         "same_gpus_ratio": gpus.throughput_ratio})
    return {"roofline_qwen3_32b_tp4_0p6b_h100": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-prompts", type=int, default=1500, help="requests per simulated load point")
    args = ap.parse_args()
    t0 = time.time()
    res = {
        "proofs": {"published": bool(prove_published()["proven"]),
                   "same_concurrency": bool(prove_same_concurrency()["proven"]),
                   "unified": bool(prove_unified()["proven"])},
        "certificates": [certify_tuned(a, c, km) for a, c, km in CERTIFIED_BOXES],
        "map": fig_map(), "bases": fig_bases(), "optimal_k": fig_optimal_k(), "published": published_table(),
        "load": fig_load(args.num_prompts),
    }
    for c in res["certificates"]:
        c.pop("failed", None)
    (OUT / "theory_numbers.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(json.dumps(res, indent=1, default=lambda x: round(float(x), 4)))
    print(f"wrote {OUT}/theory_*.html|png and theory_numbers.json in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

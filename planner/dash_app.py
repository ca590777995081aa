"""The what-if dashboard (``minedraft-dash``): change a knob, see what AR, SD, PSD and PEARL deliver.

Every update turns the controls into a ``minedraft-sim`` command line (:func:`sim_args`), parses it with
that CLI's own parser and builds the run with its functions (:func:`minedraft.planner.sweep.sim_build`: PSD's
``auto`` schedule with the step model's threshold, as that CLI takes it), so the page shows exactly what the
"copy as command" line prints, PSD's line on when and why it splits included. Bad input (a curve that rises,
k beyond the curve, a negative rate) comes back as ``minedraft-sim``'s one-line error, shown in the page; the
figures keep their last good state.

:func:`compute` is the whole update as a plain function (tests call it directly); :func:`make_app`
wraps it in a Dash app.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from minedraft.errors import InputError, require
from minedraft.ops import OP_KINDS, RESOURCES
from minedraft.planner.report import COLORS
from minedraft.planner.sweep import PSD_ALWAYS_LINE, SimRun, sim_build
from minedraft.policies import POLICIES

#: The dashboard simulates small workloads so that it answers within a second or two.
MAX_PROMPTS = 2000
MAX_SEQS = 1024
GANTT_STEPS = 8
KIND_COLORS = {"prefill": "#9467bd", "draft_prefill": "#c5b0d5", "decode": "#7f7f7f", "draft": "#ff7f0e",
               "verify": "#1f77b4"}
READINGS = {"same_k": "A: same k (published basis)", "psd_tuned": "SD at k, PSD k re-tuned",
            "both_tuned": "B: both k tuned"}
SHORT = {"same_k": "reading A", "psd_tuned": "PSD k re-tuned", "both_tuned": "reading B"}

DEFAULTS = {"policies": ["ar", "sd", "psd", "pearl"], "timing": "presets", "target": "qwen3-32b",
            "draft": "qwen3-0.6b", "gpu": "h100-sxm", "tp": "4", "draft_ms": "1.5", "verify_ms": "10",
            "accept": "0.7", "k": 5, "max_num_seqs": "16", "psd_capacity": "double", "rate": "inf",
            "num_prompts": "200", "input_len": "", "output_len": "256", "reading": "same_k",
            "psd_drafter": "own", "plugin_costs": "none", "psd_split": "auto"}
#: PSD's schedule (minedraft-sim's --psd-split)
PSD_SPLIT = {"auto": "auto: two halves only where they pay", "always": "always: two halves (published)"}
#: How PSD/PEARL are charged: the published design alone, or with the measured costs of minedraft's vLLM plugin
PLUGIN_COSTS = {"none": "design (as published)", "h200": "minedraft's vLLM plugin (costs measured on H200)"}


def _flag(flag: str, value: object) -> list[str]:
    v = "" if value is None else str(value).strip()
    return [f"{flag}={v}"] if v.startswith("-") else [flag, v]


def sim_args(s: dict, policies: list[str] | None = None) -> list[str]:
    """The ``minedraft-sim`` flags for the dashboard state ``s`` (a dict shaped like :data:`DEFAULTS`)."""
    pols = policies if policies is not None else list(s.get("policies") or [])
    require(len(pols) > 0, "--policy", "select at least one policy", "none")
    argv = ["--policy", ",".join(p for p in POLICIES if p in pols)]
    if s.get("timing") == "constant":
        argv += _flag("--draft-ms", s.get("draft_ms")) + _flag("--verify-ms", s.get("verify_ms"))
    else:
        argv += _flag("--target", s.get("target")) + _flag("--draft", s.get("draft")) + _flag("--gpu", s.get("gpu"))
        argv += _flag("--tensor-parallel-size", s.get("tp"))
    argv += _flag("--accept-curve", s.get("accept")) + _flag("--num-speculative-tokens", s.get("k"))
    argv += _flag("--max-num-seqs", s.get("max_num_seqs")) + _flag("--psd-capacity", s.get("psd_capacity"))
    if "psd" in pols:
        argv += _flag("--psd-split", s.get("psd_split") or "auto")
    if (s.get("psd_drafter") or "own") != "own":
        argv += _flag("--psd-drafter", s.get("psd_drafter"))
    if (s.get("plugin_costs") or "none") != "none":
        argv += _flag("--plugin-costs", s.get("plugin_costs"))
    argv += _flag("--request-rate", s.get("rate") or "inf") + _flag("--num-prompts", s.get("num_prompts"))
    if str(s.get("input_len") or "").strip():
        argv += _flag("--input-len", s.get("input_len"))
    argv += _flag("--output-len", s.get("output_len") or "256")
    return argv


def command(argv: list[str]) -> str:
    return "minedraft-sim " + shlex.join(argv)


@dataclass
class View:
    """Everything one update shows."""

    command: str
    header: str
    basis: str
    rows: list[dict]
    figures: dict[str, go.Figure] = field(default_factory=dict)
    #: PSD's schedule as minedraft-sim prints it (when and why it splits) and the share of its decode steps run
    #: as two halves; empty without PSD
    psd_split: str = ""


def _inputs(argv: list[str]) -> SimRun:
    try:
        return sim_build(argv)
    except SystemExit:  # argparse's own complaint (already one line on stderr); should not happen here
        raise InputError("controls", "could not be read as minedraft-sim flags", " ".join(argv)) from None


def compute(s: dict) -> View:
    """One dashboard update: simulate, ask the theory, draw. Bad input raises :class:`InputError`."""
    from minedraft.cli.common import as_int
    from minedraft.report import basis_line
    from minedraft.simulator.run import Comparison

    argv = sim_args(s)
    n = as_int(s.get("num_prompts"), "--num-prompts", 1, MAX_PROMPTS)
    as_int(s.get("max_num_seqs"), "--max-num-seqs", 1, MAX_SEQS)
    run = _inputs(argv)
    a, cfg, curve, wl, costs, tp, info = run.args, run.cfg, run.curve, run.workload, run.costs, run.tp, run.info
    policies = run.policies
    runs = Comparison(policies, run.requests, cfg, costs, curve, seed=wl.seed, target_gpus=tp).run()
    results = [m for _, m in runs]
    # the analysis (theory, timeline, regime map) needs a drafter and a curve even when only AR is selected
    an = _inputs(sim_args(s, ["sd", "psd"]))
    acfg, acurve, acosts, req = an.cfg, an.curve, an.costs, an.requests
    from minedraft.theory.serving import Setup

    setup = Setup(acurve, acosts, acfg.max_num_seqs, acfg.psd_capacity, acfg.sd_drafter, tp,
                  context_len=float(np.mean(req.prompt_len) + np.mean(req.output_len) / 2), psd_drafter=acfg.psd_drafter)
    k = cfg.num_speculative_tokens
    where = (f"constant step times: verify {a.verify_ms} ms, draft {a.draft_ms} ms per forward"
             if info["latency_model"] == "constant" else
             f"{info['target']} TP{tp} + {info['draft']} on {info['gpu']}; {info['latency_sources']}")
    arrivals = "offline" if wl.offline else f"{wl.request_rate:g} req/s Poisson"
    header = (f"{where}; k={k}, acceptance {curve.source if curve else acurve.source}; max_num_seqs "
              f"{cfg.max_num_seqs}; {n} prompts {arrivals}")
    if acfg.psd_drafter == "shared":
        header += (f"; PSD drafter sharing the target's GPU: a verify gains {info['shared_verify_stretch']} x the "
                   f"drafter's later passes, the drafter's op slows by {info['shared_gpu_slowdown']}")
    figs = {"throughput": throughput_figure(results, setup, k, wl, req),
            "latency": latency_figure(results),
            "tradeoff": tradeoff_figure(policies, setup, k),
            "gantt": gantt_figure(s, acfg),
            "regime": regime_figure(setup, k, acurve, s.get("reading") or "same_k")}
    rows = [{"policy": m["policy"], "out tok/s": m["output_throughput"], "tok/s/GPU": m["output_throughput_per_gpu"],
             "GPUs": m["num_gpus"], "p99 TTFT ms": m["p99_ttft_ms"], "p99 TPOT ms": m["p99_tpot_ms"],
             "p99 E2E ms": m["p99_e2el_ms"], "acc len": m["mean_acceptance_length"],
             "two halves": _pct(m.get("split_fraction"))} for m in results]
    return View(command(argv), header, basis_line(results, cfg), rows, figs, psd_split_text(run, results))


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{x:.0%}"


def psd_split_text(run: SimRun, results: list[dict]) -> str:
    """PSD's schedule in one line: minedraft-sim's (auto: when it splits and why), and what this run did."""
    psd = next((m for m in results if m["policy"] == "psd"), None)
    if psd is None:
        return ""
    line = run.split_line or (PSD_ALWAYS_LINE if run.cfg.psd_split == "always" else f"PSD {run.cfg.psd_split}")
    frac = psd.get("split_fraction")
    return line + (f"; this run split {frac:.0%} of its decode steps" if frac is not None else "")


# ------------------------------------------------------------------------------------------ figures
def _style(fig: go.Figure, title: str, height: int = 340) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=height, margin=dict(l=60, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=-0.18))
    return fig


def throughput_figure(results: list[dict], setup, k: int, wl, req) -> go.Figure:
    from minedraft.theory.serving import offline

    pols = [m["policy"] for m in results]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=pols, y=[m["output_throughput"] for m in results], name="simulated out tok/s",
                         marker_color=[COLORS[p] for p in pols],
                         text=[f"{m['output_throughput']:,.0f}" for m in results], textposition="outside"))
    fig.add_trace(go.Bar(x=pols, y=[m["output_throughput_per_gpu"] for m in results], name="per GPU",
                         marker_color=[COLORS[p] for p in pols], opacity=0.45))
    if wl.offline:  # the theory's offline throughput for the same requests (validated within ~2%)
        th = [offline(p, setup, 0 if p == "ar" else k, len(req), req.output_len, float(np.mean(req.prompt_len)))
              .throughput for p in pols]
        fig.add_trace(go.Scatter(x=pols, y=th, mode="markers",
                                 name="theory (offline; PSD as two halves)" if "psd" in pols else "theory (offline)",
                                 marker=dict(symbol="diamond", size=12, color="black")))
    fig.update_layout(barmode="group", yaxis_title="output tokens/s")
    return _style(fig, "Throughput (simulated)")


def latency_figure(results: list[dict]) -> go.Figure:
    pols = [m["policy"] for m in results]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("TTFT (ms)", "TPOT (ms)", "E2E (s)"))
    for col, (key, scale) in enumerate((("ttft", 1.0), ("tpot", 1.0), ("e2el", 1e-3)), start=1):
        for stat, op in (("mean", 1.0), ("p99", 0.45)):
            ys = [(m[f"{stat}_{key}_ms"] or 0.0) * scale for m in results]
            fig.add_trace(go.Bar(x=pols, y=ys, name=stat, marker_color=[COLORS[p] for p in pols], opacity=op,
                                 showlegend=False, hovertemplate=f"{stat} %{{x}}: %{{y:,.1f}}<extra></extra>"),
                          row=1, col=col)
    fig.update_layout(barmode="group")
    return _style(fig, "Latency per request (simulated; solid = mean, pale = p99)")


def tradeoff_figure(policies: list[str], setup, k: int) -> go.Figure:
    """The theory's throughput against per-token latency as the batch fills (1 .. capacity in flight)."""
    from minedraft.theory.serving import steady

    fig = go.Figure()
    for p in policies:
        cap = setup.capacity(p)
        lo = 2 if p == "psd" else 1
        ns = sorted({int(x) for x in np.unique(np.round(np.geomspace(lo, max(lo, cap), 24)))})
        pts = [steady(p, setup, 0 if p == "ar" else k, n) for n in ns]
        fig.add_trace(go.Scatter(x=[st.tpot_s * 1e3 for st in pts], y=[st.throughput for st in pts], mode="lines",
                                 name=p, line=dict(color=COLORS[p]),
                                 text=[f"{n} in flight" for n in ns],
                                 hovertemplate="%{text}: TPOT %{x:.2f} ms, %{y:,.0f} tok/s<extra></extra>"))
        fig.add_trace(go.Scatter(x=[pts[-1].tpot_s * 1e3], y=[pts[-1].throughput], mode="markers", showlegend=False,
                                 marker=dict(color=COLORS[p], size=11, line=dict(color="black", width=1)),
                                 hovertemplate=f"{p} at capacity ({ns[-1]} in flight)<extra></extra>"))
    fig.update_layout(xaxis_title="per-token latency (ms)", yaxis_title="output tokens/s")
    return _style(fig, "Theory: throughput vs TPOT as the batch fills (dot: full)")


def gantt_figure(s: dict, cfg) -> go.Figure:
    """Target and drafter ops of SD and PSD from a short offline run, from the first verification on."""
    from minedraft.simulator.run import Comparison

    m = cfg.max_num_seqs
    prompts = str(min(256, 2 * m))
    g = dict(s, rate="inf", num_prompts=prompts)
    r = _inputs(sim_args(g, ["sd", "psd"]))
    gcfg = r.cfg
    runs = Comparison(["sd", "psd"], r.requests, gcfg, r.costs, r.curve, seed=r.workload.seed, target_gpus=r.tp).run()
    fig = go.Figure()
    rows = []
    span = None
    for trace, _ in runs:
        kinds = np.array(OP_KINDS)[trace.op_kind]
        first = np.flatnonzero(kinds == "verify")
        if not len(first):
            continue
        t0 = trace.op_t_start[first[0]]
        verify_ends = trace.op_t_end[first]
        if span is None:  # the same window for both: GANTT_STEPS of SD's steps
            span = verify_ends[min(GANTT_STEPS, len(verify_ends)) - 1] - t0
        sel = (trace.op_t_end > t0) & (trace.op_t_start < t0 + span)
        label = trace.policy.upper()
        for kind in KIND_COLORS:
            idx = np.flatnonzero(sel & (kinds == kind))
            if not len(idx):
                continue
            res = np.array(RESOURCES)[trace.op_resource[idx]]
            drafter = "drafter (on the target's GPU)" if trace.policy != "sd" and gcfg.psd_drafter == "shared" or \
                trace.policy == "sd" and gcfg.sd_drafter == "shared" else "drafter GPU"
            y = [f"{label} · {'target GPU' if r == 'target' else drafter}" for r in res]
            start = (trace.op_t_start[idx] - t0) * 1e3
            dur = (trace.op_t_end[idx] - trace.op_t_start[idx]) * 1e3
            fig.add_trace(go.Bar(y=y, x=dur, base=start, orientation="h", name=f"{kind}",
                                 marker=dict(color=KIND_COLORS[kind], line=dict(color="white", width=1)),
                                 legendgroup=kind, showlegend=kind not in rows,
                                 customdata=np.stack([trace.op_size[idx], trace.op_batch_id[idx]], axis=1),
                                 hovertemplate=f"{label} {kind}: %{{base:.2f}} ms + %{{x:.2f}} ms, "
                                               "%{customdata[0]} requests (batch %{customdata[1]})<extra></extra>"))
            rows.append(kind)
    order = ["SD · target GPU", "SD · drafter GPU", "PSD · target GPU", "PSD · drafter GPU"]
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
    fig.update_layout(barmode="overlay", xaxis_title="ms since the first verification")
    return _style(fig, f"Timeline: SD vs PSD ({gcfg.psd_split}), {GANTT_STEPS} SD steps after prefill ({prompts} "
                       "prompts, offline)", 300)


@lru_cache(maxsize=16)
def _grid(k: int, reading: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from minedraft.theory.reduction import reduction_grid

    rhos = np.linspace(0.05, 3.0, 60)
    alphas = np.linspace(0.3, 0.98, 35)
    return rhos, alphas, reduction_grid(rhos, alphas, k, reading, k_max=10)


def regime_figure(setup, k: int, curve, reading: str) -> go.Figure:
    """The theory's >= 37% map (theory.reduction.reduction_grid) with the current (rho, alpha) on it."""
    from minedraft.theory.summary import claim_37

    require(reading in READINGS, "reading", f"must be one of {', '.join(READINGS)}", reading)
    rhos, alphas, grid = _grid(k, reading)
    cl = claim_37(setup, k, 10)["reading_a"]
    rho, alpha = cl["rho"], curve.rates[0]
    fig = go.Figure(go.Heatmap(x=rhos, y=alphas, z=grid * 100, zmin=-20, zmax=50, colorscale="RdBu",
                               colorbar=dict(title="R %"),
                               hovertemplate="rho %{x:.2f}, alpha %{y:.2f}: R = %{z:.1f}%<extra></extra>"))
    fig.add_trace(go.Contour(x=rhos, y=alphas, z=grid, contours=dict(start=0.37, end=0.37, coloring="none"),
                             line=dict(color="black", width=2), showscale=False, name="37%", hoverinfo="skip"))
    inside = rho <= rhos[-1]
    fig.add_trace(go.Scatter(x=[min(rho, rhos[-1])], y=[alpha], mode="markers+text", name="this setup",
                             text=[f"ρ={rho:.2f}" + ("" if inside else " →")], textposition="top center",
                             marker=dict(symbol="x", size=14, color="black", line=dict(width=2)),
                             hovertemplate=f"this setup: rho = kT_d/T_v = {rho:.3f}, alpha = {alpha:.2f}, "
                                           f"reading A R = {cl['reduction']:.1%}<extra></extra>"))
    fig.update_layout(xaxis_title="rho = k T_d / T_v (one PSD half)", yaxis_title="alpha (first-position acceptance)")
    return _style(fig, f"PSD vs SD reduction R ({SHORT[reading]}, k={k}); line: 37%", 340)


# ------------------------------------------------------------------------------------------ the app
def _controls():
    from dash import dcc, html

    from minedraft.presets import gpu_presets, model_presets

    models = list(model_presets())
    gpus = sorted({g.key for g in gpu_presets().values()})
    d = DEFAULTS

    def row(label, comp):
        return html.Div([html.Label(label, style={"fontWeight": 600, "fontSize": "13px"}), comp],
                        style={"marginBottom": "10px"})

    return html.Div([
        row("Policies", dcc.Checklist(id="policies", options=[{"label": p.upper(), "value": p} for p in POLICIES],
                                      value=d["policies"], inline=True)),
        row("Step times", dcc.RadioItems(id="timing", options=[{"label": "model + GPU presets", "value": "presets"},
                                                               {"label": "constant (ms)", "value": "constant"}],
                                         value=d["timing"], inline=True)),
        row("Target model", dcc.Dropdown(id="target", options=models, value=d["target"], clearable=False)),
        row("Draft model", dcc.Dropdown(id="draft", options=models, value=d["draft"], clearable=False)),
        row("GPU", dcc.Dropdown(id="gpu", options=gpus, value=d["gpu"], clearable=False)),
        row("Target TP", dcc.Input(id="tp", value=d["tp"], debounce=True, style={"width": "80px"})),
        row("Draft / verify forward (ms, constant mode)", html.Div([
            dcc.Input(id="draft-ms", value=d["draft_ms"], debounce=True, style={"width": "70px"}),
            dcc.Input(id="verify-ms", value=d["verify_ms"], debounce=True, style={"width": "70px",
                                                                                    "marginLeft": "6px"})])),
        row("Acceptance: alpha, or rates 0.9,0.76,…", dcc.Input(id="accept-curve", value=d["accept"], debounce=True,
                                                                 style={"width": "100%"})),
        row("k (draft tokens per step)", dcc.Slider(id="k", min=1, max=10, step=1, value=d["k"],
                                                    marks={i: str(i) for i in range(1, 11)})),
        row("max_num_seqs (batch)", dcc.Input(id="max-num-seqs", value=d["max_num_seqs"], debounce=True,
                                              style={"width": "80px"})),
        row("PSD capacity", dcc.RadioItems(id="psd-capacity", options=["double", "split"], value=d["psd_capacity"],
                                           inline=True)),
        row("PSD schedule", dcc.RadioItems(id="psd-split", options=[{"label": v, "value": k}
                                                                    for k, v in PSD_SPLIT.items()],
                                           value=d["psd_split"])),
        row("PSD drafter", dcc.RadioItems(id="psd-drafter", options=[{"label": "own GPU", "value": "own"},
                                                                     {"label": "sharing the target's", "value": "shared"}],
                                          value=d["psd_drafter"], inline=True)),
        row("PSD as", dcc.RadioItems(id="plugin-costs", options=[{"label": v, "value": k}
                                                                 for k, v in PLUGIN_COSTS.items()],
                                     value=d["plugin_costs"])),
        row("Request rate (req/s; inf = offline)", dcc.Input(id="request-rate", value=d["rate"], debounce=True,
                                                              style={"width": "100px"})),
        row("Prompts / input len / output len", html.Div([
            dcc.Input(id="num-prompts", value=d["num_prompts"], debounce=True, style={"width": "60px"}),
            dcc.Input(id="input-len", value=d["input_len"], debounce=True, placeholder="dataset",
                      style={"width": "70px", "marginLeft": "6px"}),
            dcc.Input(id="output-len", value=d["output_len"], debounce=True, style={"width": "60px",
                                                                                     "marginLeft": "6px"})])),
        row("Regime map reading", dcc.Dropdown(id="reading", options=[{"label": v, "value": k}
                                                                      for k, v in READINGS.items()],
                                               value=d["reading"], clearable=False)),
    ], style={"width": "300px", "flex": "0 0 300px", "paddingRight": "16px"})


INPUT_IDS = ("policies", "timing", "target", "draft", "gpu", "tp", "draft-ms", "verify-ms", "accept-curve", "k",
             "max-num-seqs", "psd-capacity", "request-rate", "num-prompts", "input-len", "output-len", "reading",
             "psd-drafter", "plugin-costs", "psd-split")
STATE_KEYS = ("policies", "timing", "target", "draft", "gpu", "tp", "draft_ms", "verify_ms", "accept", "k",
              "max_num_seqs", "psd_capacity", "rate", "num_prompts", "input_len", "output_len", "reading",
              "psd_drafter", "plugin_costs", "psd_split")
GRAPHS = ("throughput", "latency", "tradeoff", "regime", "gantt")
SPAN = {"gantt": {"gridColumn": "1 / span 2"}}


def update(*values) -> tuple:
    """The callback: control values (in INPUT_IDS order) -> figures, table, PSD's schedule line, header, command,
    error message.

    On bad input the figures, table, PSD line, header and command are Dash's ``no_update`` (they keep their last
    good state); without Dash installed (tests of this function alone) they are None.
    """
    try:
        from dash import no_update
    except ImportError:
        no_update = None

    s = dict(zip(STATE_KEYS, values))
    try:
        v = compute(s)
    except InputError as exc:
        return (*([no_update] * len(GRAPHS)), no_update, no_update, no_update, no_update, f"error: {exc.line()}")
    except Exception as exc:  # noqa: BLE001 - the page never crashes; it says what went wrong
        return (*([no_update] * len(GRAPHS)), no_update, no_update, no_update, no_update,
                f"internal error: {exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}")
    try:
        table = _table(v.rows)
    except ImportError:
        table = v.rows
    return (*(v.figures[g] for g in GRAPHS), table, v.psd_split, f"{v.header}. {v.basis}", v.command, "")


def _table(rows: list[dict]):
    from dash import html

    if not rows:
        return html.Div()
    cols = list(rows[0])

    def fmt(x):
        if x is None:
            return "–"
        if isinstance(x, float):
            return f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"
        return str(x)

    return html.Table([html.Thead(html.Tr([html.Th(c) for c in cols])),
                       html.Tbody([html.Tr([html.Td(fmt(r[c])) for c in cols]) for r in rows])],
                      className="results", style={"borderCollapse": "collapse", "fontSize": "13px"})


def make_app():
    """The Dash app (``app.run(host, port)`` serves it)."""
    from dash import Dash, Input, Output, dcc, html

    app = Dash(__name__, title="minedraft what-if", serve_locally=True)
    app.index_string = app.index_string.replace("</head>", "<style>table.results td, table.results th"
                                                "{border:1px solid #ddd;padding:2px 8px;text-align:right}"
                                                "table.results th{background:#f4f4f4}</style></head>")
    graph_style = {"border": "1px solid #eee", "minWidth": "0"}
    app.layout = html.Div([
        html.H2("minedraft what-if: AR, SD, PSD, PEARL", style={"margin": "8px 0"}),
        html.Div(id="error", role="alert", style={"color": "#b00020", "fontWeight": 600, "minHeight": "1.2em"}),
        html.Div(id="header", style={"fontSize": "13px", "color": "#444", "marginBottom": "6px"}),
        html.Div([
            _controls(),
            html.Div([
                html.Div([html.Pre(id="command", style={"whiteSpace": "pre-wrap", "background": "#f6f6f6",
                                                        "padding": "6px", "fontSize": "12px", "flex": "1",
                                                        "margin": 0}),
                          dcc.Clipboard(target_id="command", title="copy as command", id="copy",
                                        style={"fontSize": "20px", "marginLeft": "6px", "cursor": "pointer"})],
                         style={"display": "flex", "alignItems": "flex-start", "marginBottom": "8px"}),
                html.Div(id="results-table", style={"marginBottom": "4px"}),
                html.Div(id="psd-split-line", style={"fontSize": "13px", "color": "#444", "marginBottom": "8px"}),
                dcc.Loading(html.Div([dcc.Graph(id=f"{g}-graph", style=graph_style | SPAN.get(g, {}),
                                                config={"displaylogo": False}) for g in GRAPHS],
                                     style={"display": "grid", "gridTemplateColumns": "1fr 1fr", "gap": "8px"}),
                            type="default", delay_show=400),
            ], style={"flex": "1", "minWidth": "0"}),
        ], style={"display": "flex"}),
    ], style={"fontFamily": "system-ui, sans-serif", "margin": "0 16px"})

    app.callback([Output(f"{g}-graph", "figure") for g in GRAPHS]
                 + [Output("results-table", "children"), Output("psd-split-line", "children"),
                    Output("header", "children"), Output("command", "children"),
                    Output("error", "children")],
                 [Input(i, "value") for i in INPUT_IDS])(update)

    def toggle(mode):
        constant = mode == "constant"
        return constant, constant, constant, constant, not constant, not constant

    app.callback([Output("target", "disabled"), Output("draft", "disabled"), Output("gpu", "disabled"),
                  Output("tp", "disabled"), Output("draft-ms", "disabled"), Output("verify-ms", "disabled")],
                 [Input("timing", "value")])(toggle)
    return app


def default_view() -> View:
    """The page's first state (tests and the screenshot script start here)."""
    return compute(dict(DEFAULTS))


__all__ = ["DEFAULTS", "View", "command", "compute", "make_app", "psd_split_text", "sim_args", "update"]

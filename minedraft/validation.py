"""Predicted vs measured: the comparison every validation prints, and its figures.

Compares the metrics of a simulated replay with those of the measured run (both from
:func:`minedraft.metrics.compute_metrics`, so the definitions are the same) and the distribution of
engine-step times: the intervals between the starts of consecutive engine steps (a step starts with a
``prefill``, ``decode`` or ``verify`` op; for vLLM's SD the drafting that follows belongs to the step).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from minedraft.ops import DECODE, PREFILL, VERIFY
from minedraft.trace import KIND_CODE, Trace

#: The figures validation reports, in order: (metric key, label).
COMPARED = (
    ("output_throughput", "output tok/s"),
    ("mean_e2el_ms", "mean E2E ms"),
    ("median_e2el_ms", "p50 E2E ms"),
    ("p99_e2el_ms", "p99 E2E ms"),
    ("mean_ttft_ms", "mean TTFT ms"),
    ("mean_tpot_ms", "mean TPOT ms"),
    ("mean_acceptance_length", "acceptance length"),
)


def step_times(trace: Trace) -> np.ndarray:
    """Seconds between the starts of consecutive engine steps (the last step: its own end)."""
    starts = np.isin(trace.op_kind, [KIND_CODE[k] for k in (PREFILL, DECODE, VERIFY)])
    t0 = trace.op_t_start[starts]
    if not len(t0):
        return np.empty(0)
    ends = np.append(t0[1:], trace.op_t_end.max())
    return ends - t0


def rel_error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured in (None, 0):
        return None
    return predicted / measured - 1.0


def compare(measured: dict, predicted: dict, measured_steps: np.ndarray, predicted_steps: np.ndarray) -> list[dict]:
    """One row per compared figure: measured, predicted, relative error."""
    rows = [{"metric": key, "label": label, "measured": measured.get(key), "predicted": predicted.get(key),
             "error": rel_error(predicted.get(key), measured.get(key))} for key, label in COMPARED]
    for q in (50, 90):
        m = float(np.percentile(measured_steps, q)) * 1e3 if len(measured_steps) else None
        p = float(np.percentile(predicted_steps, q)) * 1e3 if len(predicted_steps) else None
        rows.append({"metric": f"p{q}_step_ms", "label": f"p{q} step ms", "measured": m, "predicted": p,
                     "error": rel_error(p, m)})
    return rows


def run_figure(name: str, rows: list[dict], measured_steps: np.ndarray, predicted_steps: np.ndarray) -> go.Figure:
    """Bars (measured vs predicted, error in the labels) and the two step-time CDFs."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("predicted / measured", "engine step time CDF"))
    shown = [r for r in rows if r["measured"] is not None and r["predicted"] is not None]
    labels = [r["label"] for r in shown]
    fig.add_bar(x=labels, y=[1.0] * len(shown), name="measured", marker_color="#636efa", row=1, col=1)
    fig.add_bar(x=labels, y=[r["predicted"] / r["measured"] for r in shown], name="predicted",
                marker_color="#ef553b", text=[f"{r['error']:+.1%}" for r in shown], textposition="outside",
                row=1, col=1)
    for steps, label, color in ((measured_steps, "measured", "#636efa"), (predicted_steps, "predicted", "#ef553b")):
        s = np.sort(steps) * 1e3
        fig.add_scatter(x=s, y=np.arange(1, len(s) + 1) / max(len(s), 1), name=f"{label} steps", mode="lines",
                        line={"color": color}, row=1, col=2)
    fig.update_xaxes(title_text="step ms", type="log", row=1, col=2)
    fig.update_layout(title=name, barmode="group", height=420, width=1100, template="plotly_white")
    return fig


def summary_figure(results: list[dict]) -> go.Figure:
    """Predicted vs measured output throughput and mean E2E over many runs, with the ±5% / ±10% bands.

    ``results``: dicts with ``name``, ``measured`` and ``predicted`` metric dicts.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("output throughput (tok/s)", "mean E2E latency (ms)"))
    for col, key in ((1, "output_throughput"), (2, "mean_e2el_ms")):
        m = np.array([r["measured"][key] for r in results])
        p = np.array([r["predicted"][key] for r in results])
        lo, hi = float(min(m.min(), p.min())) * 0.8, float(max(m.max(), p.max())) * 1.2
        xs = np.array([lo, hi])
        for f, dash in ((1.0, "solid"), (1.05, "dot"), (0.95, "dot"), (1.10, "dash"), (0.90, "dash")):
            fig.add_scatter(x=xs, y=xs * f, mode="lines", line={"color": "grey", "dash": dash, "width": 1},
                            showlegend=False, hoverinfo="skip", row=1, col=col)
        fig.add_scatter(x=m, y=p, mode="markers", text=[r["name"] for r in results], showlegend=False,
                        marker={"size": 7, "color": "#ef553b"}, row=1, col=col)
        fig.update_xaxes(title_text="measured", type="log", row=1, col=col)
        fig.update_yaxes(title_text="predicted", type="log", row=1, col=col)
    fig.update_layout(height=450, width=1000, template="plotly_white")
    return fig

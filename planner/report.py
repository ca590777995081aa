"""A plan's report: one self-contained HTML page (Plotly figures, plotly.js inlined: it opens offline) and a
Markdown summary with the same tables. Both are written from the JSON :func:`minedraft.planner.plan` returns.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import plotly.graph_objects as go

from minedraft.planner.sweep import PSD_ALWAYS_LINE

COLORS = {"ar": "#7f7f7f", "sd": "#1f77b4", "psd": "#d62728", "pearl": "#2ca02c"}
DASHES = {"psd": "dash", "pearl": "dot"}  # so that equal-cost lines stay visible
METRIC_NAMES = {"p99_tpot_ms": "p99 TPOT", "p99_ttft_ms": "p99 TTFT", "p99_e2el_ms": "p99 E2E"}
#: What starts each line of :func:`psd_split_lines` in the reports and on the terminal.
SPLIT_PREFIX = "PSD's schedule: "


def _f(v, fmt: str = ",.2f", none: str = "–") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, fmt)


def _cost_unit(plan: dict) -> tuple[str, str]:
    priced = plan["inputs"]["usd_per_gpu_hour"] is not None
    return ("usd_per_million_tokens", "$ / M output tokens") if priced else \
        ("gpu_hours_per_million_tokens", "GPU-hours / M output tokens")


# ------------------------------------------------------------------------------------------ tables
def best_rows(plan: dict) -> tuple[list[str], list[list[str]]]:
    """The best deployment of each policy (confirmed runs), one row each."""
    key, unit = _cost_unit(plan)
    head = ["policy", "configuration", "GPU split", "replicas × GPUs", "SLO capacity / replica (req/s)",
            "rate / replica (req/s)", "p99 TTFT ms", "p99 TPOT ms", "p99 E2E ms", "meets SLO", unit, "step times"]
    rows = []
    for p, b in plan["best"].items():
        if b is None:
            rows.append([p, _shortfall_text(plan, p)] + ["–"] * (len(head) - 2))
            continue
        m, c = b["metrics"], b["candidate"]
        rows.append([p + (" ★" if plan["recommendation"] == p else ""), b["config"], c["layout"],
                     f"{b['replicas']} × {b['gpus_per_replica']} = {b['gpus']}",
                     _f(b["slo_capacity_per_replica_req_s"]), _f(b["rate_per_replica_req_s"], ".4g"),
                     _f(m["p99_ttft_ms"], ",.0f"), _f(m["p99_tpot_ms"], ".1f"), _f(m["p99_e2el_ms"], ",.0f"),
                     "yes" if b["meets_slo"] else "no", _f(b[key], ",.2f" if "usd" in key else ".3g"),
                     _short_source(b["latency_source"])])
    return head, rows


def psd_split_lines(plan: dict) -> list[str]:
    """One line per PSD deployment in the best table: its schedule (``--psd-split``), minedraft-sim's line on when
    and why it splits (auto), and the share of decode steps its confirming run ran as two halves."""
    out = []
    for b in plan["best"].values():
        s = (b or {}).get("psd_split")
        if not s:
            continue
        why = s["line"] or (PSD_ALWAYS_LINE if s["mode"] == "always" else f"PSD {s['mode']}")
        frac = s["split_fraction"]
        ran = (f"the confirming run split {frac:.0%} of its decode steps" if frac is not None else
               "the confirming run has no decode steps")
        out.append(f"{b['config']}: {why}; {ran}.")
    return out


def _shortfall_text(plan: dict, policy: str) -> str:
    sf = plan.get("shortfall", {}).get(policy)
    rate = plan["inputs"]["request_rate"]
    if sf is None:
        return "no configuration meets the SLO (see: pruned before simulation)"
    what = f"{sf['in_budget_req_s']:.3g} req/s" + (f" of the {rate:g} needed" if rate is not None else "")
    return (f"over budget: at most {what} within the SLO on {sf['max_replicas']} × {sf['gpus_per_replica']} GPUs "
            f"({sf['config']})")


def by_gpu_rows(plan: dict) -> tuple[list[str], list[list[str]]]:
    rate = plan["inputs"]["request_rate"] is not None
    head = ["GPU", "target", "policy", "best swept configuration", "SLO capacity / replica (req/s)",
            "GPUs needed" if rate else "SLO goodput in budget (tok/s)", "step times"]
    rows = []
    for r in plan["best_by_gpu"]:
        need = _f(r["gpus_needed"], "d", "over budget") if rate else _f(r["slo_goodput_in_budget_tok_s"], ",.0f")
        rows.append([r["gpu"], r["target"], r["policy"], r["config"], _f(r["slo_capacity_per_replica_req_s"]), need,
                     _short_source(r["latency_source"])])
    return head, rows


def load_rows(plan: dict) -> tuple[list[str], list[list[str]]]:
    priced = plan["inputs"]["usd_per_gpu_hour"] is not None
    pols = plan["inputs"]["policies"]
    head = ["offered load (req/s)"] + [f"{p} {'$/h' if priced else 'GPUs'}" for p in pols] + ["cheapest", "its configuration"]
    rows = []
    for r in plan["load"]["rows"]:
        cells = [_f(r["rate_req_s"], ".4g")]
        for p in pols:
            v = r["by_policy"].get(p)
            cells.append("over budget" if v is None else (_f(v["usd_per_hour"], ",.2f") if priced else str(v["gpus"])))
        w = r["winner"]
        cells += [w or "none", r["by_policy"][w]["config"] if w else "–"]
        rows.append(cells)
    return head, rows


def acceptance_rows(plan: dict) -> tuple[list[str], list[list[str]]]:
    rate = plan["inputs"]["request_rate"] is not None
    pols = plan["inputs"]["policies"]
    head = ["alpha"] + [f"{p} {'GPUs (k)' if rate else 'goodput tok/s (k)'}" for p in pols] + ["best"]
    rows = []
    for r in plan["acceptance"]["rows"]:
        cells = [f"{r['alpha']:g}"]
        for p in pols:
            v = r["by_policy"].get(p)
            if v is None:
                cells.append("–")
                continue
            k = f" (k={v['k']})" if v["k"] else ""
            if rate:
                cells.append((str(v["gpus"]) if v["feasible"] else "over budget") + k)
            else:
                cells.append(_f(v["goodput_tok_s"], ",.0f") + k)
        cells.append(r["winner"] or "none")
        rows.append(cells)
    return head, rows


def _short_source(text: str) -> str:
    if not text:
        return "–"
    measured = "measured" in text or "fitted" in text
    roof = "roofline" in text
    return "measured + roofline" if measured and roof else ("measured (shipped fit)" if measured else "roofline (uncalibrated)")


# ------------------------------------------------------------------------------------------ figures
def figures(plan: dict) -> dict[str, go.Figure]:
    return {"pareto": pareto_figure(plan), "capacity": capacity_figure(plan), "cost": cost_figure(plan),
            "load": load_figure(plan), "acceptance": acceptance_figure(plan)}


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", height=460,
                      margin=dict(l=70, r=30, t=60, b=60), legend=dict(orientation="h", y=-0.2))
    return fig


def pareto_figure(plan: dict) -> go.Figure:
    par = plan["pareto"]
    metric = par["metric"]
    fig = go.Figure()
    for p in plan["inputs"]["policies"]:
        pts = [x for x in par["points"] if x["policy"] == p]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[x["p99_ms"] for x in pts], y=[x["output_tok_s_per_gpu"] for x in pts], mode="markers", name=p,
            marker=dict(color=COLORS.get(p), size=9, symbol=["circle" if x["meets_slo"] else "circle-open" for x in pts]),
            text=[f"{x['config']}<br>{x['rate_per_replica_req_s']:g} req/s per replica" for x in pts],
            hovertemplate="%{text}<br>%{x:.1f} ms, %{y:,.0f} tok/s/GPU<extra></extra>"))
    front = par["front"]
    if front:
        fig.add_trace(go.Scatter(x=[x["p99_ms"] for x in front], y=[x["output_tok_s_per_gpu"] for x in front],
                                 mode="lines", name="Pareto front", line=dict(color="black", dash="dot", shape="hv")))
    target = _target_of(plan, metric)
    if target:
        fig.add_vline(x=target, line=dict(color="#444", dash="dash"), annotation_text="SLO")
    return _layout(fig, f"Throughput vs {METRIC_NAMES[metric]} (every simulated point; open = misses the SLO)",
                   f"{METRIC_NAMES[metric]} (ms)", "output tokens/s per GPU")


def _target_of(plan: dict, metric: str) -> float | None:
    slo = plan["inputs"]["slo"]
    return {"p99_tpot_ms": slo["tpot_ms"], "p99_ttft_ms": slo["ttft_ms"], "p99_e2el_ms": slo["e2e_ms"]}[metric]


def capacity_figure(plan: dict) -> go.Figure:
    """The SLO's worst p99 / target against the per-replica rate, per simulated configuration."""
    fig = go.Figure()
    for c in plan["configs"]:
        pts = sorted(c["points"], key=lambda x: x["rate_req_s"])
        y = [5.0 if x["slo_ratio"] is None else min(x["slo_ratio"], 5.0) for x in pts]
        fig.add_trace(go.Scatter(x=[x["rate_req_s"] for x in pts], y=y, mode="lines+markers", name=c["id"],
                                 line=dict(color=COLORS.get(c["policy"])), opacity=0.75, legendgroup=c["policy"],
                                 hovertemplate=c["id"] + "<br>%{x:g} req/s: %{y:.2f}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color="#444", dash="dash"), annotation_text="SLO met below")
    fig = _layout(fig, "SLO: worst p99 / target as load grows (one line per simulated configuration)",
                  "requests/s per replica", "worst p99 / target (capped at 5)")
    fig.update_layout(showlegend=False)
    return fig


def cost_figure(plan: dict) -> go.Figure:
    key, unit = _cost_unit(plan)
    pols = [p for p, b in plan["best"].items() if b is not None]
    vals = [plan["best"][p][key] for p in pols]
    fig = go.Figure(go.Bar(x=pols, y=vals, marker_color=[COLORS.get(p) for p in pols],
                           text=[f"{plan['best'][p]['gpus']} GPUs" for p in pols], textposition="outside"))
    what = "at the offered load" if plan["inputs"]["request_rate"] is not None else "at SLO capacity"
    return _layout(fig, f"Cost of each policy's best deployment {what}", "policy", unit)


def load_figure(plan: dict) -> go.Figure:
    priced = plan["inputs"]["usd_per_gpu_hour"] is not None
    fig = go.Figure()
    curve = plan["load"]["curve"]
    for p in plan["inputs"]["policies"]:
        xs, ys = [], []
        for r in curve:
            v = r["by_policy"].get(p)
            xs.append(r["rate_req_s"])
            ys.append(None if v is None else (v["usd_per_hour"] if priced else v["gpus"]))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=p, line=dict(color=COLORS.get(p), shape="hv",
                                                                               dash=DASHES.get(p, "solid"))))
    base = plan["load"]["base_rate_req_s"]
    tops = [y for t in fig.data for y in t.y if y is not None]
    if base and tops:  # a trace, not add_vline: shapes on a log axis take log10 coordinates
        fig.add_trace(go.Scatter(x=[base, base], y=[0, max(tops)], mode="lines", line=dict(color="#444", dash="dash"),
                                 name="offered load" if plan["inputs"]["request_rate"] is not None else "best capacity"))
    fig = _layout(fig, "What the choice costs as the load changes (gaps: over the budget)", "offered load (req/s)",
                  "$ / hour" if priced else "GPUs")
    fig.update_xaxes(type="log")
    return fig


def acceptance_figure(plan: dict) -> go.Figure:
    rate = plan["inputs"]["request_rate"] is not None
    fig = go.Figure()
    rows = plan["acceptance"]["rows"]
    for p in plan["inputs"]["policies"]:
        xs, ys, ks = [], [], []
        for r in rows:
            v = r["by_policy"].get(p)
            if v is None:
                continue
            xs.append(r["alpha"])
            ys.append((v["gpus"] if v["feasible"] else None) if rate else v["goodput_tok_s"])
            ks.append(f"k={v['k']}" if v["k"] else "")
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers+text", name=p, text=ks, textposition="top center",
                                     line=dict(color=COLORS.get(p))))
    return _layout(fig, "How the choice changes with acceptance (geometric alpha; k re-tuned)", "alpha",
                   "GPUs needed for the offered load" if rate else "SLO goodput in the budget (tok/s)")


# ------------------------------------------------------------------------------------------ text
def headline(plan: dict) -> str:
    i = plan["inputs"]
    rec = plan["recommendation"]
    if rec is None:
        return ("No configuration meets the SLO within the budget of "
                f"{i['budget_gpus']} GPUs: relax the SLO, raise the budget, or try other GPUs or model pairs.")
    b = plan["best"][rec]
    m = b["metrics"]
    what = (f"serves {i['request_rate']:g} req/s with {b['gpus']} of {i['budget_gpus']} GPUs"
            if i["request_rate"] is not None else
            f"carries {b['total_rate_req_s']:.3g} req/s within the SLO on {b['gpus']} of {i['budget_gpus']} GPUs")
    key, unit = _cost_unit(plan)
    cost = f"${b[key]:,.2f} per million output tokens" if "usd" in key else \
        f"{b[key]:,.2f} GPU-hours per million output tokens"
    return (f"Recommended: {rec.upper()} — {b['config']}, {b['replicas']} replica(s) of {b['candidate']['layout']}; "
            f"it {what} (p99 TTFT {m['p99_ttft_ms']:,.0f} ms, p99 TPOT {m['p99_tpot_ms']:.1f} ms, "
            f"p99 E2E {m['p99_e2el_ms']:,.0f} ms; {cost}).")


def source_warning(plan: dict) -> str | None:
    """A caution when the best configurations rest on different kinds of step-time model."""
    kinds = {p: _short_source(b["latency_source"]) for p, b in plan["best"].items() if b is not None}
    if len(set(kinds.values())) <= 1:
        return None
    by = {}
    for p, k in kinds.items():
        by.setdefault(k, []).append(p)
    return ("Caution: these best configurations rest on different step-time models ("
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in by.items())
            + "). The uncalibrated roofline is not a measurement: compare within one kind (e.g. restrict "
              "--tensor-parallel-size or --gpu to where measured step models exist) before deciding.")


def inputs_lines(plan: dict) -> list[str]:
    i, c = plan["inputs"], plan["counts"]
    wl = i["workload"]
    load = f"{i['request_rate']:g} req/s (Poisson)" if i["request_rate"] is not None else \
        "none given: maximise the SLO goodput of the budget"
    prices = ", ".join(f"{g} ${p:g}/h" for g, p in i["usd_per_gpu_hour"].items()) if i["usd_per_gpu_hour"] else \
        "none (costs in GPU-hours)"
    return [
        f"Models: targets {', '.join(i['targets'])}; drafters {', '.join(i['drafts'])}",
        f"GPUs: {', '.join(i['gpus'])}; budget {i['budget_gpus']} GPUs; prices: {prices}",
        f"Workload: {load}; prompts {wl['input_len']} (mean {i['mean_prompt_tokens']:.0f} tokens), outputs "
        f"{wl['output_len']} (mean {i['mean_output_tokens']:.0f}); {wl['num_prompts']} requests per simulated point, "
        f"seed {wl['seed']}",
        f"Acceptance: {i['accept_curve']}" + (f" (Beta concentration {i['accept_concentration']})"
                                             if i["accept_concentration"] else ""),
        f"SLO: {i['slo_text']}",
        f"Searched: policies {', '.join(i['policies'])}; TP {', '.join(map(str, i['tensor_parallel_sizes']))}; "
        f"k {', '.join(map(str, i['ks']))}" + (" + the theory's k schedule" if i["k_schedule"] else "")
        + f"; max_num_seqs {', '.join(map(str, i['max_num_seqs']))}; psd_capacity {', '.join(i['psd_capacity'])}; "
        + (f"psd_split {', '.join(i['psd_split'])}; " if i.get("psd_split") else "")
        + f"SD drafter {', '.join(i['sd_drafter'])}",
        f"Search: {c['candidates']} configurations; {c['theory_estimates']} estimated by the theory "
        f"({c['theory_s']:.1f} s); {c['simulated_configs']} simulated; {c.get('simulated', 0)} points simulated "
        f"now, {c.get('resumed', 0)} taken from the checkpoint; {c['total_s']:.0f} s in all",
    ]


METHOD = [
    "Each configuration is one replica: the target on `tp` GPUs, plus one GPU when the drafter has its own "
    "(PSD, PEARL, SD with drafter-own). The budget holds floor(budget / GPUs per replica) replicas; each "
    "takes an equal share of the Poisson traffic.",
    "Pruning: configurations over the budget, or whose weights + KV cache (every request in flight at full "
    "length, 90% of GPU memory less 2 GB) do not fit, are dropped; the theory (minedraft.theory) keeps each "
    "family's best k at the batch sizes it runs, drops those whose no-load mean latency already misses the "
    "SLO, and ranks the rest by the rate at which its mean latencies meet the SLO.",
    "Survivors are simulated (minedraft-sim, same seed) on a grid of per-replica rates around that estimate. "
    "Rates stop at 95% of the theory's maximum sustainable rate (theory.load.max_rate), so each point is a "
    "load the replica sustains (a point finishing requests at < 50% of its rate would not count). SLO "
    "capacity: the highest rate whose p99s meet every target, interpolated between the last point that "
    "meets the SLO and the first that does not.",
    "PSD runs minedraft-sim's --psd-split: auto (the default) runs one batch, drafted then verified, until the "
    "step model says two halves pay (minedraft.cli.common.with_split_rows: the threshold minedraft-sim takes), "
    "always runs the published two halves; the theory estimates both as two halves. Each PSD row says its "
    "schedule, why, and the share of its decode steps run as two halves (split_fraction).",
    "Each policy's best deployment is confirmed by one more run at its operating point; the table quotes "
    "those runs. The load what-if uses the swept capacities; the acceptance what-if re-tunes k by the "
    "theory and re-sweeps each policy's best family.",
    "Every number is reproducible with the minedraft-sim command in plan.json (key `command`).",
]


def markdown(plan: dict) -> str:
    out = ["# minedraft-plan report", "", headline(plan), ""]
    if source_warning(plan):
        out += [f"> {source_warning(plan)}", ""]
    out += [f"- {x}" for x in inputs_lines(plan)] + [""]
    out += ["## Best configuration of each policy (same budget, same SLO)", "",
            "Confirmed by a simulation at the operating point. ★ = recommended.", ""]
    out += _md_table(*best_rows(plan)) + [""]
    out += [SPLIT_PREFIX + x for x in psd_split_lines(plan)] + ([""] if psd_split_lines(plan) else [])
    if len({(r["gpu"], r["target"]) for r in plan["best_by_gpu"]}) > 1:
        out += ["## Best per GPU type and target (swept, not confirmed)", ""] + _md_table(*by_gpu_rows(plan)) + [""]
    out += ["## Throughput-latency Pareto front", "",
            f"Non-dominated simulated points ({METRIC_NAMES[plan['pareto']['metric']]} against output tok/s per GPU):", ""]
    out += _md_table(["policy", "configuration", "rate / replica", METRIC_NAMES[plan["pareto"]["metric"]] + " ms",
                      "tok/s/GPU", "meets SLO"],
                     [[p["policy"], p["config"], _f(p["rate_per_replica_req_s"], ".4g"), _f(p["p99_ms"], ".1f"),
                       _f(p["output_tok_s_per_gpu"], ",.0f"), "yes" if p["meets_slo"] else "no"]
                      for p in plan["pareto"]["front"]]) + [""]
    if plan["load"]["rows"]:
        out += ["## How the choice changes with load", "",
                "The cheapest swept configuration of each policy at each load (from SLO capacities):", ""]
        out += _md_table(*load_rows(plan)) + [""]
    if plan["acceptance"]["rows"]:
        out += ["## How the choice changes with acceptance", "", plan["acceptance"]["note"] + ".", ""]
        out += _md_table(*acceptance_rows(plan)) + [""]
    out += ["## Step-time models", ""] + [f"- {k}: {v}" for k, v in plan["latency_sources"].items()] + [""]
    pr = plan["counts"]["pruned"]
    if pr:
        out += ["## Pruned before simulation", ""] + [f"- {k}: {v}" for k, v in pr.items()] + [""]
    out += ["## Method", ""] + [f"- {x}" for x in METHOD] + [""]
    return "\n".join(out)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return lines


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222;
line-height:1.45;padding:0 16px}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f4f4f4}.headline{background:#eef6ee;border-left:4px solid #2ca02c;padding:10px 14px;font-size:1.05em}
code{background:#f4f4f4;padding:1px 4px}.warning{background:#fff6e5;border-left:4px solid #e69500;padding:8px 14px}.figure{margin:8px 0 24px}
"""


def html_report(plan: dict) -> str:
    from plotly.offline import get_plotlyjs

    figs = figures(plan)
    parts = []
    divs = {name: fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}",
                              config={"displaylogo": False}) for name, fig in figs.items()}
    li = "".join(f"<li>{html.escape(x)}</li>" for x in inputs_lines(plan))
    warn = source_warning(plan)
    parts.append(f"<h1>minedraft-plan report</h1><p class='headline' id='headline'>{html.escape(headline(plan))}</p>"
                 + (f"<p class='warning' id='warning'>{html.escape(warn)}</p>" if warn else "") + f"<ul>{li}</ul>")
    parts.append("<h2>Best configuration of each policy (same budget, same SLO)</h2>"
                 "<p>Confirmed by a simulation at the operating point. ★ = recommended.</p>"
                 f"<div id='best-table'>{_html_table(*best_rows(plan))}</div>"
                 + "".join(f"<p class='psd-split'>{html.escape(SPLIT_PREFIX + x)}</p>" for x in psd_split_lines(plan)))
    parts.append(f"<div class='figure'>{divs['cost']}</div>")
    if len({(r["gpu"], r["target"]) for r in plan["best_by_gpu"]}) > 1:
        parts.append("<h2>Best per GPU type and target (swept, not confirmed)</h2>" + _html_table(*by_gpu_rows(plan)))
    parts.append("<h2>Throughput-latency Pareto front</h2>" + f"<div class='figure'>{divs['pareto']}</div>")
    parts.append("<h2>SLO capacity of each simulated configuration</h2>" + f"<div class='figure'>{divs['capacity']}</div>")
    if plan["load"]["rows"]:
        parts.append("<h2>How the choice changes with load</h2>" + f"<div class='figure'>{divs['load']}</div>"
                     + _html_table(*load_rows(plan)))
    if plan["acceptance"]["rows"]:
        parts.append("<h2>How the choice changes with acceptance</h2>"
                     f"<p>{html.escape(plan['acceptance']['note'])}.</p>" + f"<div class='figure'>{divs['acceptance']}</div>"
                     + _html_table(*acceptance_rows(plan)))
    src = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in plan["latency_sources"].items())
    pr = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in plan["counts"]["pruned"].items())
    parts.append(f"<h2>Step-time models</h2><ul>{src}</ul><h2>Pruned before simulation</h2><ul>{pr}</ul>")
    parts.append("<h2>Method</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in METHOD) + "</ul>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>minedraft-plan report</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>{body}</body></html>\n")


def write(plan: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write plan.html, plan.md and plan.json into ``out_dir``; returns their paths."""
    import json

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {"html": d / "plan.html", "markdown": d / "plan.md", "json": d / "plan.json"}
    paths["html"].write_text(html_report(plan), encoding="utf-8")
    paths["markdown"].write_text(markdown(plan), encoding="utf-8")
    paths["json"].write_text(json.dumps(plan, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return paths

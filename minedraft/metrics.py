"""Metrics from a :class:`~minedraft.trace.Trace`, the same for simulated and measured runs.

Names and definitions follow ``vllm bench serve``: E2E latency = finish - arrival; TTFT = first token -
arrival; TPOT = (finish - first token) / (output_len - 1), per request; ITL = gaps between successive
token chunks (with speculation one chunk carries 1 + accepted tokens); throughput over the makespan
(first arrival to last finish). Mean acceptance length is vLLM's ``1 + accepted / drafts`` over the
verifications that checked drafts. ``latency_per_request_ms`` is the published MineDraft "latency"
(makespan / requests, i.e. inverse throughput), reported beside the per-request figures.
"""

from __future__ import annotations

import numpy as np

from minedraft.ops import DRAFT, DRAFT_PREFILL, TARGET, VERIFY
from minedraft.trace import KIND_CODE, RES_CODE, Trace

#: The keys every ``--json`` result carries (simulator and executor alike), in this order.
RESULT_KEYS = (
    "policy", "request_throughput", "output_throughput", "output_throughput_per_gpu", "num_gpus",
    "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
    "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "mean_acceptance_length", "makespan_s",
    "target_busy_fraction", "drafter_busy_fraction", "completed",
)


def _stats(prefix: str, x_s: np.ndarray) -> dict:
    x = x_s[~np.isnan(x_s)] * 1e3
    if not len(x):
        return {f"mean_{prefix}_ms": None, f"median_{prefix}_ms": None, f"p90_{prefix}_ms": None,
                f"p99_{prefix}_ms": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {f"mean_{prefix}_ms": float(x.mean()), f"median_{prefix}_ms": float(p50), f"p90_{prefix}_ms": float(p90),
            f"p99_{prefix}_ms": float(p99)}


def compute_metrics(trace: Trace) -> dict:
    """All metrics of one run as a flat dict (``RESULT_KEYS`` first, then extras)."""
    done = ~np.isnan(trace.finish)
    completed = int(done.sum())
    start = float(np.nanmin(trace.arrival)) if len(trace.arrival) else 0.0
    end = float(trace.finish[done].max()) if completed else start
    makespan = end - start
    out_tokens = int(trace.output_len[done].sum())
    tput = out_tokens / makespan if makespan > 0 else 0.0
    e2e = np.where(done, trace.finish - trace.arrival, np.nan)
    ttft = trace.first_token - trace.arrival
    decode_time = trace.finish - trace.first_token
    multi = done & (trace.output_len > 1)
    tpot = np.where(multi, decode_time / np.maximum(trace.output_len - 1, 1), np.nan)
    gaps = int(trace.steps[multi].sum())
    itl = float(np.nansum(decode_time[multi]) / gaps * 1e3) if gaps else None

    rows = int(trace.op_drafted_rows.sum())
    accept_len = 1.0 + trace.op_accepted.sum() / rows if rows else None
    dur = trace.op_t_end - trace.op_t_start
    on_target = trace.op_resource == RES_CODE[TARGET]
    drafting = np.isin(trace.op_kind, [KIND_CODE[DRAFT], KIND_CODE[DRAFT_PREFILL]])
    busy_t = float(dur[on_target].sum())
    busy_d = float(dur[drafting].sum())

    m = {
        "policy": trace.policy,
        "request_throughput": completed / makespan if makespan > 0 else 0.0,
        "output_throughput": tput,
        "output_throughput_per_gpu": tput / trace.num_gpus if trace.num_gpus else None,
        "num_gpus": trace.num_gpus,
    }
    e, t, p = _stats("e2el", e2e), _stats("ttft", ttft), _stats("tpot", tpot)
    m |= {k: e[k] for k in ("mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms")}
    m |= {k: t[k] for k in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms")}
    m |= {k: p[k] for k in ("mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms")}
    m |= {
        "mean_itl_ms": itl,
        "mean_acceptance_length": accept_len,
        "makespan_s": makespan,
        "target_busy_fraction": busy_t / makespan if makespan > 0 else 0.0,
        "drafter_busy_fraction": busy_d / makespan if makespan > 0 else 0.0,
        "completed": completed,
    }
    reached = trace.pos_drafts
    npos = int(np.count_nonzero(reached))
    m |= {
        "p90_e2el_ms": e["p90_e2el_ms"], "p90_ttft_ms": t["p90_ttft_ms"], "p90_tpot_ms": p["p90_tpot_ms"],
        "total_output_tokens": out_tokens,
        "latency_per_request_ms": makespan / completed * 1e3 if completed else None,
        "target_idle_s": max(0.0, makespan - busy_t),
        "acceptance_rates": (trace.pos_accepted[:npos] / reached[:npos]).tolist() if npos else [],
        "num_ops": trace.num_ops,
        "split_fraction": split_fraction(trace) if trace.policy == "psd" else None,
    }
    return m


def split_fraction(trace: Trace) -> float | None:
    """PSD: the share of its decode steps run as two halves, a verify with a draft op of the other half started
    inside it (the rest: a draft or a verify alone, as one batch runs and as two halves start). None without any."""
    verify = trace.ops_of(VERIFY)
    draft = trace.ops_of(DRAFT)
    vs, ve = trace.op_t_start[verify], trace.op_t_end[verify]
    order = np.argsort(vs, kind="stable")
    vs, ve = vs[order], ve[order]
    ds = trace.op_t_start[draft]
    i = np.searchsorted(vs, ds + 1e-9, side="right") - 1  # the verify started last at or before each draft op
    beside = (i >= 0) & (ds < ve[np.maximum(i, 0)])
    split = int(np.unique(i[beside]).size)
    total = len(vs) + len(ds) - split
    return split / total if total else None

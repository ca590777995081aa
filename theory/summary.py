"""Everything ``minedraft-theory`` reports, as one JSON-ready dict: the library call behind the CLI.

:func:`report` evaluates AR, SD, PSD and PEARL on one :class:`~minedraft.theory.serving.Setup`: steady
throughput and per-token latency, offline makespan, ratios on every comparison basis, optimal k and
per-batch-size k schedules, the >= 37% readings, and latency under Poisson load. With ``k=None`` each
policy runs at its own integer-optimal k in 1..k_max (on the chosen basis), so the ratios compare tuned
configurations; with a k, every policy runs at it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
from minedraft.theory.compare import BASES, compare, setup_on
from minedraft.theory.load import crossover_rate, e2e_under_load, max_rate
from minedraft.theory.optimal_k import free_k, k_range, k_schedule, optimal_k
from minedraft.theory.reduction import (
    CERTIFIED_BOXES,
    published_reduction,
    tuned_reduction,
)
from minedraft.theory.serving import POLICIES, Setup, offline, steady

from minedraft.ops import DRAFT, VERIFY

BASIS_TEXT = {
    "same_max_num_seqs": "same max_num_seqs (published): PSD per psd_capacity, drafter GPU extra",
    "same_concurrency": "same concurrency: PSD halves share max_num_seqs (split)",
    "same_gpus": "same GPU count: per-GPU throughput, GPU-seconds per request",
    "same_slo": "same SLO: each policy's best (k, in-flight) meeting the TPOT target",
}
WINDOW = (37 / 63, 63 / 37)


def _policy_ks(setup: Setup, basis: str, k: int | None, k_max: int) -> dict[str, int]:
    if k is not None:
        return {p: (0 if p == "ar" else k) for p in POLICIES}
    return {p: optimal_k(p, setup_on(basis, p, setup), k_max) for p in POLICIES}


def report(setup: Setup, k: int | None = None, k_max: int = 10, basis: str = "same_max_num_seqs",
           num_requests: int = 1000, output_len: int | Sequence[int] = 256, prompt_len: float = 0.0,
           slo_tpot_s: float | None = None, request_rate: float | None = None) -> dict:
    """The full theory report (see the module docstring). ``basis`` picks the headline ratios."""
    if basis == "same_slo" and slo_tpot_s is None:
        raise ValueError("the same_slo basis needs slo_tpot_s")
    # the per-policy table: on the basis's setups (same_slo: the published setups, ratios below)
    view = "same_max_num_seqs" if basis == "same_slo" else basis
    setups = {p: setup_on(view, p, setup) for p in POLICIES}
    ks = _policy_ks(setup, view, k, k_max)
    policies = {}
    for p in POLICIES:
        st = steady(p, setups[p], ks[p])
        off = offline(p, setups[p], ks[p], num_requests, output_len, prompt_len)
        policies[p] = {
            "k": st.k, "in_flight": st.in_flight, "gpus": st.gpus, "tokens_per_step": st.tokens_per_step,
            "cycle_ms": st.cycle_s * 1e3, "throughput_tok_s": st.throughput,
            "throughput_per_gpu": st.throughput_per_gpu, "tpot_ms": st.tpot_s * 1e3,
            "makespan_s": off.makespan_s, "latency_per_request_ms": off.latency_per_request_s * 1e3,
        }
    comparisons: dict[str, dict] = {}
    for b in BASES:
        if b == "same_slo" and slo_tpot_s is None:
            continue
        kb = _policy_ks(setup, b, k, k_max) if b != "same_slo" else ks
        table = {}
        for pa, pb in combinations(POLICIES, 2):
            v = compare(pa, pb, setup, kb[pa], kb[pb], b, num_requests, output_len, prompt_len, slo_tpot_s, k_max)
            table[f"{pb}_vs_{pa}"] = v.to_json() if v is not None else None
        comparisons[b] = table
    head = comparisons[basis]
    psd_sd, sd_ar = head["psd_vs_sd"], head["sd_vs_ar"]
    return {
        "basis": basis,
        "basis_description": BASIS_TEXT[basis],
        "k_given": k is not None,
        "k": ks["sd"] if k is None else k,
        "k_by_policy": ks,
        "expected_tokens_per_step": setup.curve.expected_tokens(ks["sd"]),
        "expected_tokens_per_step_by_policy": {p: policies[p]["tokens_per_step"] for p in POLICIES},
        "sd_speedup_over_ar": sd_ar["throughput_ratio"] if sd_ar else None,
        "psd_throughput_ratio_over_sd": psd_sd["throughput_ratio"] if psd_sd else None,
        "psd_tpot_ratio_over_sd": psd_sd["tpot_ratio"] if psd_sd else None,
        "psd_makespan_reduction_vs_sd": psd_sd["makespan_reduction"] if psd_sd else None,
        "optimal_k_sd": optimal_k("sd", setups["sd"], k_max),
        "optimal_k_psd": optimal_k("psd", setups["psd"], k_max),
        "optimal_k_pearl": optimal_k("pearl", setups["pearl"], k_max),
        "free_k_psd": free_k(setups["psd"], k_max),
        "policies": policies,
        "comparisons": comparisons,
        "k_sweep": k_sweep(setup, view, k_max),
        "k_schedule": {p: [list(r) for r in k_schedule(p, setups[p], k_max)] for p in ("sd", "psd", "pearl")},
        "claim_37": claim_37(setup, ks["psd"], k_max),
        "under_load": under_load(setup, ks, output_len, prompt_len, request_rate),
    }


def k_sweep(setup: Setup, basis: str, k_max: int) -> list[dict]:
    """SD, PSD and PEARL at every k in 1..k_max on ``basis``: E, throughput, TPOT, PSD's ratios over SD."""
    rows = []
    for k in k_range(setup, k_max):
        pols = ("sd", "psd", "pearl") if k < setup.curve.positions else ("sd", "psd")  # PEARL's guess: k + 1
        st = {p: steady(p, setup_on(basis, p, setup), k) for p in pols}
        rows.append({"k": k, "expected_tokens": setup.curve.expected_tokens(k),
                     **{f"{p}_throughput": st[p].throughput for p in st},
                     **{f"{p}_tpot_ms": st[p].tpot_s * 1e3 for p in st},
                     "psd_over_sd": st["psd"].throughput / st["sd"].throughput})
    return rows


def claim_37(setup: Setup, k: int, k_max: int) -> dict:
    """Readings A and B of the >= 37% claim at this setup (see :mod:`minedraft.theory.reduction`)."""
    c = setup.costs
    half = max(1, setup.capacity("psd") // 2)
    ctx = setup.context_len
    v = c.op_time(VERIFY, half, k=k, context_len=ctx)
    d = c.op_time(DRAFT, half, k=k, context_len=ctx)
    rho = d / v
    a = float(published_reduction(rho))
    o, tau = c.step_overhead_s, c.transfer_s
    full = 1 - (o + max(v, d) + tau) / (o + v + d)
    out = {
        "reading_a": {
            "statement": "published basis (PSD half = SD batch), same k: R = (min(V, D) - tau) / (o + V + D); "
                         "with o = tau = 0, R = min(rho,1)/(1+rho) >= 37% iff 37/63 <= rho <= 63/37",
            "rho": rho, "reduction_no_overheads": a, "reduction": full, "holds": bool(full >= 0.37 - 1e-12),
            "window_rho": list(WINDOW)},
    }
    rates = setup.curve.rates
    geometric = not setup.curve.heterogeneous and all(
        abs(r - rates[0] ** (i + 1)) < 1e-9 for i, r in enumerate(rates))
    if geometric and 0 < rates[0] < 1:
        x1 = c.op_time(DRAFT, half, k=1, context_len=ctx)  # one drafter forward of a half
        cc = x1 / c.op_time(VERIFY, half, k=1, context_len=ctx)
        red, ksd, kpsd = tuned_reduction(rates[0], cc, k_max)
        out["reading_b"] = {
            "statement": f"published basis, idealised constant step times (V independent of k) at this setup's "
                         f"T_d/T_v, both k tuned in 1..{k_max}; certified R >= 37% on "
                         + "; ".join(f"alpha in [{a[0]}, {a[1]}], T_d/T_v in [{c[0]}, {c[1]}] (k <= {km})"
                                     for a, c, km in CERTIFIED_BOXES),
            "alpha": rates[0], "draft_over_verify": cc, "reduction": red, "k_sd": ksd, "k_psd": kpsd,
            "holds": bool(red >= 0.37)}
    return out


def under_load(setup: Setup, ks: dict[str, int], output_len: int | Sequence[int], prompt_len: float,
               request_rate: float | None) -> dict:
    """Mean E2E latency under Poisson arrivals (approximation) and where PSD overtakes SD."""
    out: dict = {"max_rate_req_s": {p: max_rate(p, setup, ks[p], output_len, prompt_len) for p in POLICIES}}
    cross = crossover_rate("sd", "psd", setup, setup, ks["sd"], ks["psd"], output_len, prompt_len)
    out["psd_vs_sd_crossover_req_s"] = cross["rate"]
    out["psd_better_at_low_load"] = cross["b_better_below"]
    # where PSD's doubled capacity starts to be used: P(more than max_num_seqs in the system) = 5%
    out["psd_capacity_used_above_req_s"] = _capacity_rate(setup, ks["psd"], output_len, prompt_len)
    if request_rate is not None:
        out["request_rate"] = request_rate
        pts = {p: e2e_under_load(p, setup, ks[p], request_rate, output_len, prompt_len) for p in POLICIES}
        out["mean_e2e_ms"] = {p: (pt.e2e_s * 1e3 if pt.stable else None) for p, pt in pts.items()}
    return out


def _capacity_rate(setup: Setup, k: int, output_len, prompt_len: float, level: float = 0.05) -> float | None:
    if setup.capacity("psd") <= setup.max_num_seqs:
        return None
    hi = max_rate("psd", setup, k, output_len, prompt_len) * (1 - 1e-6)
    grid = np.geomspace(hi * 1e-3, hi, 80)
    for r in grid:
        if e2e_under_load("psd", setup, k, float(r), output_len, prompt_len).p_above >= level:
            return float(r)
    return math.inf

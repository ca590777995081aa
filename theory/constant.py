"""Closed forms for offline serving when step times do not depend on the batch (constant mode).

Let ``X`` be one drafter forward, ``Y`` one target forward (a decode or a verification), ``k`` the draft
length, ``M`` = max_num_seqs, ``E = E[1 + A]`` (``AcceptanceCurve.expected_tokens``) and ``m(n)`` the
exact expected steps for ``n`` tokens (``theory.steps``). Prefill and overheads are zero, every request
has the same output length ``L`` (its first token comes from the prefill, so ``n = L - 1``), and ``N``
requests are offline. Then, per policy, the period of one engine step and the requests it advances:

- AR:  a step of ``Y`` advances M requests by one token;
- SD:  ``kX + Y`` advances M requests by ``1 + A``;
- PSD: ``max(Y, kX)`` advances one half (M with capacity double, M/2 with split) by ``1 + A``;
- PEARL: ``max(Y, kX)`` advances M requests, each by ``1 + A`` (valid drafts) or 1 (a probe).

Steady-state throughput = requests advanced x tokens per request-step / period. Offline makespan =
(N / slots) x m(L - 1) x (slot period), where a slot is a place in the running set and its period the
time between two steps of the request in it; this ignores only the drain at the end (the last
requests do not all finish together), a relative error of order sqrt(M / N).
Step durations come from :class:`minedraft.costs.StepCosts`, the simulator's one source of step times;
the general forms (any step-time model) live in :mod:`minedraft.theory.serving`, which these call.
:func:`symbolic_forms` states the same closed forms in sympy (with overhead ``o`` and transfer ``tau``).
"""

from __future__ import annotations

import sympy as sp
from minedraft.theory.serving import Setup, offline, steady

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.ops import DECODE, DRAFT, VERIFY


def step_period(policy: str, costs: StepCosts, k: int, batch: int = 1, context_len: float = 0.0) -> float:
    """Seconds between the starts of two consecutive engine steps in steady state (step overhead incl.)."""
    o = costs.step_overhead_s
    if policy == "ar":
        return o + costs.op_time(DECODE, batch, context_len=context_len)
    verify = costs.op_time(VERIFY, batch, k=k, context_len=context_len, cross_device=policy != "sd")
    draft = costs.op_time(DRAFT, batch, k=k, context_len=context_len, cross_device=policy != "sd")
    if policy == "sd":
        return o + draft + verify
    if policy in ("psd", "pearl"):
        return o + max(verify, draft)
    raise ValueError(f"unknown policy {policy!r}")


def steady_throughput(policy: str, curve: AcceptanceCurve | None, k: int, max_num_seqs: int, costs: StepCosts,
                      psd_capacity: str = "double") -> float:
    """Output tokens per second with a full running set."""
    return steady(policy, Setup(curve, costs, max_num_seqs, psd_capacity), k).throughput


def offline_makespan(policy: str, curve: AcceptanceCurve | None, k: int, max_num_seqs: int, costs: StepCosts,
                     num_requests: int, output_len: int, psd_capacity: str = "double") -> float:
    """Expected makespan of ``num_requests`` offline requests of ``output_len`` tokens (drain ignored)."""
    return offline(policy, Setup(curve, costs, max_num_seqs, psd_capacity), k, num_requests, output_len).makespan_s


# ----------------------------------------------------------------------------------- sympy forms
X, Y, o, tau, M, E = sp.symbols("X Y o tau M E", positive=True)
ks = sp.Symbol("k", positive=True, integer=True)


def symbolic_forms() -> dict[str, dict[str, sp.Expr]]:
    """Constant-mode throughput (tokens/s) and per-token latency per policy, as sympy expressions.

    ``E`` is ``E[1 + A]`` (PEARL: its own tokens per step), ``M`` max_num_seqs, ``o`` the per-step
    overhead, ``tau`` one draft<->target transfer. SD's drafter shares the target's GPUs (no transfer);
    ``sd_own`` has it on a GPU of its own; ``psd_split`` keeps max_num_seqs in flight.
    """
    d, v = ks * X, Y
    cyc = {
        "ar": o + Y,
        "sd": o + d + v,
        "sd_own": o + d + v + 2 * tau,
        "psd": 2 * (o + sp.Max(v, d) + tau),
        "psd_split": 2 * (o + sp.Max(v, d) + tau),
        "pearl": o + sp.Max(v, (ks + 1) * X) + tau,  # PEARL's drafter: a guess, then k drafts
    }
    slots = {"ar": M, "sd": M, "sd_own": M, "psd": 2 * M, "psd_split": M, "pearl": M}
    per = {p: (1 if p == "ar" else E) for p in cyc}
    return {p: {"throughput": slots[p] * per[p] / cyc[p], "tpot": cyc[p] / per[p], "cycle": cyc[p]} for p in cyc}

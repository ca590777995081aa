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
Step durations come from :class:`minedraft.costs.StepCosts`, the simulator's one source of step times.
"""

from __future__ import annotations

import math

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.ops import DECODE, DRAFT, VERIFY
from minedraft.theory.steps import expected_steps, pearl_expected_steps, pearl_tokens_per_step


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


def _slots_and_cycle(policy: str, costs: StepCosts, k: int, max_num_seqs: int, psd_capacity: str) -> tuple[int, float]:
    """Requests in flight and the time between two steps of one request."""
    period = step_period(policy, costs, k)
    if policy == "psd":
        half = max_num_seqs if psd_capacity == "double" else max_num_seqs // 2
        return 2 * half, 2 * period
    return max_num_seqs, period


def steady_throughput(policy: str, curve: AcceptanceCurve | None, k: int, max_num_seqs: int, costs: StepCosts,
                      psd_capacity: str = "double") -> float:
    """Output tokens per second with a full running set."""
    slots, cycle = _slots_and_cycle(policy, costs, k, max_num_seqs, psd_capacity)
    if policy == "ar":
        per_step = 1.0
    elif policy == "pearl":
        per_step = pearl_tokens_per_step(curve, k)
    else:
        per_step = curve.expected_tokens(k)
    return slots * per_step / cycle


def offline_makespan(policy: str, curve: AcceptanceCurve | None, k: int, max_num_seqs: int, costs: StepCosts,
                     num_requests: int, output_len: int, psd_capacity: str = "double") -> float:
    """Expected makespan of ``num_requests`` offline requests of ``output_len`` tokens (drain ignored)."""
    slots, cycle = _slots_and_cycle(policy, costs, k, max_num_seqs, psd_capacity)
    n = output_len - 1
    if policy == "ar":
        return math.ceil(num_requests / slots) * n * cycle
    steps = pearl_expected_steps(curve, k, n) if policy == "pearl" else expected_steps(curve, k, n)
    return num_requests / slots * steps * cycle

"""The speculation length k: integer optimum per policy, PSD's free k, and a per-batch-size schedule.

At a fixed number of requests in flight, throughput ``n E_k / cycle(k)`` and per-token latency
``cycle(k) / E_k`` are optimised by the same k, so one integer search serves both. SD pays for every
draft token in series (``cycle = o + D_k + V_k``); PSD pays ``max(V_k, D_k)``, so while the drafter's
``D_k`` stays under the verification ``V_k`` a larger k costs nothing and PSD's optimum is at least the
largest such *free* k whenever ``V_k`` does not grow with k (constant step times; proven in
docs/theory.md, checked in tests). The schedule is vLLM's ``num_speculative_tokens_per_batch_size``:
inclusive ``(start, end, k)`` ranges over the batch size a step sees (SD, PEARL: requests running;
PSD: the half being drafted), validated by :func:`minedraft.policies.base.normalize_k_schedule`.
"""

from __future__ import annotations

from minedraft.theory.serving import Setup, steady

from minedraft.ops import DRAFT, VERIFY
from minedraft.policies.base import normalize_k_schedule


def k_range(setup: Setup, k_max: int, policy: str = "") -> range:
    """k = 1.. up to ``k_max`` and what the curve covers (PEARL's guess needs one position more)."""
    return range(1, min(k_max, setup.curve.positions - (1 if policy == "pearl" else 0)) + 1)


def optimal_k(policy: str, setup: Setup, k_max: int = 10, in_flight: int | None = None) -> int:
    """Integer k in 1..k_max with the highest steady throughput (ties: the smaller k). AR: 0."""
    if policy == "ar":
        return 0
    best_k, best = 1, -1.0
    for k in k_range(setup, k_max, policy):
        t = steady(policy, setup, k, in_flight).throughput
        if t > best * (1 + 1e-12):
            best_k, best = k, t
    return best_k


def free_k(setup: Setup, k_max: int = 10, half: int | None = None) -> int:
    """Largest k <= k_max whose PSD drafting of a half hides under its verification (0 if none).

    ``half``: requests per PSD half (default: a full half under ``setup``).
    """
    h = half if half is not None else setup.capacity("psd") // 2 or 1
    c, ctx, cross = setup.costs, setup.context_len, setup.cross("psd")
    best = 0
    for k in k_range(setup, k_max):
        if c.op_time(DRAFT, h, k=k, context_len=ctx, cross_device=cross) <= \
                c.op_time(VERIFY, h, k=k, context_len=ctx, cross_device=cross) * (1 + 1e-12):
            best = k
    return best


def k_schedule(policy: str, setup: Setup, k_max: int = 10, max_batch: int | None = None) -> tuple[tuple[int, int, int], ...]:
    """Optimal k for every batch size 1..max_batch, as vLLM's inclusive ``(start, end, k)`` ranges.

    The batch size is what the policy's ``k_for`` sees: SD and PEARL, the running requests; PSD, the
    half being drafted (so ``in_flight = 2 x batch``). ``max_batch`` defaults to ``max_num_seqs``.
    """
    top = max_batch or setup.max_num_seqs
    ranges: list[list[int]] = []
    for b in range(1, top + 1):
        n = 2 * b if policy == "psd" else b
        k = optimal_k(policy, setup, k_max, in_flight=n)
        if ranges and ranges[-1][2] == k:
            ranges[-1][1] = b
        else:
            ranges.append([b, b, k])
    return normalize_k_schedule([tuple(r) for r in ranges])

"""When PSD should split its running requests into two halves (the ``auto`` schedule), and when run one batch.

With ``n`` requests in flight PSD either alternates two halves (verify one while drafting the other: the cycle
``2o + max(V(h1), D(h2)) + max(V(h2), D(h1))``) or runs them as one batch, SD with PSD's drafter
(``o + D(n) + V(n)``): :func:`minedraft.theory.serving.cycle_time` with ``split=True`` / ``split=False``. A
request gains the same tokens per step of its own either way, so splitting pays, in throughput and in
per-token latency alike, iff the split cycle is the shorter (:func:`split_pays`). :func:`split_threshold`
finds numerically (any step-time model, any GPU layout) the smallest ``n`` from which it pays up to a bound.

Closed form (affine step times, drafter on its own GPU, ``n`` even): with ``V(b) = v0 + v1 b`` (one batch),
a split verify ``V(b) + s0 + s1 b`` (the swap of the target's batch), ``D(b) = d0 + d1 b`` and overhead ``o``,

    one - split = min((d1 - s1) n - (o + v0 + 2 s0 - d0),  v1 n - (o + d0 - v0)),

the two branches of the max (verify-bound, draft-bound), each linear in ``n``; so splitting pays iff
``n > n* = max((o + v0 + 2 s0 - d0) / (d1 - s1), (o + d0 - v0) / v1)`` (:func:`split_threshold_expr`,
proven by :func:`prove_split_threshold`). Without swap costs: ``n* = max((o + v0 - d0) / d1, (o + d0 - v0) / v1)``.
An odd ``n`` has halves one row apart, which adds the condition ``n > 1 + 2 (o + s0 + s1) / (v1 + d1 - s1)``;
without a per-row swap cost it is at most ``n* + 1`` (the weighted mean of the branches, plus one).
:func:`affine_coefficients` and :func:`swap_coefficients` read the coefficients off ``StepCosts.op_time``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp
from minedraft.theory.serving import Setup, cycle_time, psd_ops

from minedraft.errors import require
from minedraft.latency import Affine, Constant

o, v0, v1, d0, d1 = sp.symbols("o v0 v1 d0 d1", positive=True)
s0, s1 = sp.symbols("s0 s1", nonnegative=True)
n = sp.Symbol("n", positive=True)


# ------------------------------------------------------------------------------------------- numeric
def split_pays(setup: Setup, k: int, n: int) -> bool:
    """Whether two halves cycle faster than one batch with ``n >= 2`` requests in flight."""
    require(n >= 2, "in_flight", "must be >= 2 (one request cannot be split)", n)
    return cycle_time("psd", setup, k, n)[0] < cycle_time("psd", setup, k, n, split=False)[0]


def split_cycles(setup: Setup, k: int, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """``cycle_time("psd", ...)`` with ``split=True`` and ``split=False`` for ``n = 2 .. n_max`` at once.

    The same ``op_time`` calls (:func:`psd_ops`), overlaps (``Setup.overlapped``) and sums as ``cycle_time``,
    each op evaluated once per row count (tests hold the two equal bit for bit).
    """
    draft, verify = psd_ops(setup, k)
    o_s, both, n_even, n_odd = setup.costs.step_overhead_s, setup.overlapped, n_max // 2, (n_max - 1) // 2
    d = [0.0, *map(draft, range(1, n_max + 1))]  # indexed by rows
    v = [0.0, *map(verify, range(1, n_max + 1))]
    vs = [0.0] + [verify(b, swap=True) for b in range(1, n_even + 2)]
    rows = np.arange(2, n_max + 1)
    one = o_s + np.array(d)[rows] + np.array(v)[rows]
    # n = 2h: halves (h, h); n = 2h + 1: verify h + 1 while drafting h, then verify h while drafting h + 1
    even = np.array([both("psd", vs[h], d[h], h, k) for h in range(1, n_even + 1)])
    odd_a = np.array([both("psd", vs[h + 1], d[h], h, k) for h in range(1, n_odd + 1)])
    odd_b = np.array([both("psd", vs[h], d[h + 1], h + 1, k) for h in range(1, n_odd + 1)])
    split = np.empty(rows.size)
    split[0::2], split[1::2] = 2 * o_s + even + even, 2 * o_s + odd_a + odd_b
    return split, one


def split_threshold(setup: Setup, k: int, n_max: int | None = None) -> int | None:
    """The smallest ``n`` in ``[2, n_max]`` from which splitting pays for every larger ``n`` up to ``n_max``
    (default ``setup.capacity("psd")``); None when it does not pay at ``n_max``."""
    n_max = setup.capacity("psd") if n_max is None else int(n_max)
    require(n_max >= 2, "n_max", "must be >= 2", n_max)
    split, one = split_cycles(setup, k, n_max)
    pays = split < one
    if not pays[-1]:
        return None
    fails = np.flatnonzero(~pays)  # index i is n = i + 2
    return int(fails[-1]) + 3 if fails.size else 2


def auto_split_rows(setup: Setup, k: int) -> int:
    """PSD ``auto``'s ``psd_split_rows`` under ``setup``: the threshold where one batch can hold the requests
    (``n <= max_num_seqs``); else two halves only beyond one full batch when the halves at PSD's capacity outrun one
    full batch (``max_num_seqs + 1``), and otherwise never (``capacity + 1``: one batch of at most max_num_seqs)."""
    m, cap = setup.max_num_seqs, setup.capacity("psd")
    rows = split_threshold(setup, k, n_max=m) if m >= 2 else None
    if rows is not None:
        return rows
    if cap > m:
        halves = cap / cycle_time("psd", setup, k, cap)[0]
        one = m / cycle_time("psd", setup, k, m, split=False)[0]
        if halves > one:
            return m + 1
    return cap + 1


# ------------------------------------------------------------------------------------------- closed form
def _ops(swap: bool):
    """The affine ops: ``V(b)`` (a verify of one batch), ``Vs(b)`` (a split verify: ``+ s0 + s1 b`` with ``swap``),
    ``D(b)``."""
    a, b_ = (s0, s1) if swap else (0, 0)
    return (lambda b: v0 + v1 * b), (lambda b: v0 + v1 * b + a + b_ * b), (lambda b: d0 + d1 * b)


def _gaps(swap: bool) -> tuple[sp.Expr, sp.Expr]:
    """One-batch cycle minus split cycle at even ``n``, per branch of the split's max: verify-bound, draft-bound."""
    V, Vs, D = _ops(swap)
    one = o + D(n) + V(n)
    return sp.expand(one - (2 * o + 2 * Vs(n / 2))), sp.expand(one - (2 * o + 2 * D(n / 2)))


def _root(gap: sp.Expr) -> sp.Expr:
    """Where a gap linear in ``n`` crosses zero."""
    return sp.simplify(-gap.subs(n, 0) / sp.diff(gap, n))


def split_threshold_expr(swap: bool = False) -> sp.Expr:
    """``n*`` (split pays at even ``n`` iff ``n > n*``) in ``o, v0, v1, d0, d1`` (and ``s0, s1``: the swap cost
    of a split verify ``s0 + s1 b``, with ``swap``): ``max((o + v0 + 2 s0 - d0) / (d1 - s1), (o + d0 - v0) / v1)``."""
    return sp.Max(*(_root(g) for g in _gaps(swap)))


@lru_cache(maxsize=1)
def _branch_terms():
    """Slope and value at ``n = 0`` of each gap, as one numeric function of ``(o, v0, v1, d0, d1, s0, s1)``."""
    terms = [(sp.diff(g, n), g.subs(n, 0)) for g in _gaps(swap=True)]
    return sp.lambdify((o, v0, v1, d0, d1, s0, s1), terms, modules="math")


def affine_split_threshold(o: float, v0: float, v1: float, d0: float, d1: float, s0: float = 0.0,
                           s1: float = 0.0) -> float:
    """:func:`split_threshold_expr` evaluated: splitting pays at even ``n`` iff ``n > n*`` (``inf``: never;
    a branch with a slope of 0 that always pays gives ``-inf``)."""
    out = -math.inf
    for slope, at0 in _branch_terms()(o, v0, v1, d0, d1, s0, s1):
        if slope > 0:
            out = max(out, -at0 / slope)
        elif not (slope == 0 and at0 > 0):  # this branch never pays for every large n
            return math.inf
    return out


def affine_coefficients(setup: Setup, k: int) -> tuple[float, float, float, float, float]:
    """``(o, v0, v1, d0, d1)``: the step overhead and the lines ``V(b) = v0 + v1 b`` (PSD's verify of one batch)
    and ``D(b) = d0 + d1 b`` (its draft op) through ``op_time`` at ``b = 1, 2``.

    Transfers land in ``v0`` and ``d0`` alike, the drafter's own-process cost in ``d0``, the cached context in the
    slopes; a split verify's swap cost is :func:`swap_coefficients`. Needs affine models without a knee and the
    drafter on its own GPU (the closed form's case; :func:`split_threshold` takes any).
    """
    c = setup.costs
    require(setup.psd_drafter == "own", "psd_drafter", "must be own for the closed form (split_threshold: any)",
            setup.psd_drafter)
    for m in (c.target, c.draft):
        require(isinstance(m, Constant) or (isinstance(m, Affine) and m.knee_tokens == 0), "costs",
                "must be Affine without a knee (or Constant) for the closed form (split_threshold: any)",
                getattr(m, "label", m))
    draft, verify = psd_ops(setup, k)
    (v0_, v1_), (d0_, d1_) = _line(verify), _line(draft)
    return c.step_overhead_s, v0_, v1_, d0_, d1_


def swap_coefficients(setup: Setup, k: int) -> tuple[float, float]:
    """``(s0, s1)``: what a split verify of ``b`` rows adds over a verify of one batch, ``s0 + s1 b``."""
    _, verify = psd_ops(setup, k)
    return _line(lambda b: verify(b, swap=True) - verify(b))


def _line(f) -> tuple[float, float]:
    slope = f(2) - f(1)
    return f(1) - slope, slope


# ------------------------------------------------------------------------------------------- proof
@lru_cache(maxsize=1)
def prove_split_threshold() -> dict:
    """sympy: each branch's gap (one-batch minus split cycle) is linear in ``n`` with a positive slope; at ``n*``
    the cycles are equal on the binding branch (the other's gap is >= 0); above ``n*`` both gaps are positive,
    below it the binding one is negative; odd ``n`` keeps both branches and adds one cross term whose root is at
    most ``n* + 1`` without a per-row swap cost; a transfer on both ops leaves ``n*`` unchanged. All with swap
    costs ``s0, s1`` (``d1 > s1``: ``d1 = s1 + e``); the swap-free form is the special case ``s0 = s1 = 0``."""
    e, g, t, m = sp.symbols("e g t m", positive=True)
    ga, gb = (x.subs(d1, s1 + e) for x in _gaps(swap=True))
    ra, rb = _root(ga), _root(gb)
    linear = all(sp.diff(x, n, 2) == 0 for x in (ga, gb)) and sp.simplify(sp.diff(ga, n) - e) == 0 \
        and sp.simplify(sp.diff(gb, n) - v1) == 0
    stated = sp.Max((o + v0 - d0) / d1, (o + d0 - v0) / v1)
    swap_free = sp.simplify(split_threshold_expr() - stated) == 0 and sp.simplify(
        split_threshold_expr(swap=True).subs({s0: 0, s1: 0}) - stated) == 0
    V, Vs, D = (lambda b, f=f: f(b).subs(d1, s1 + e) for f in _ops(swap=True))
    # the cycles themselves at even n, the max left to sympy
    one = o + D(n) + V(n)
    split = 2 * o + 2 * sp.Max(Vs(n / 2), D(n / 2))
    equal, above, below = True, True, True
    for bind, other in ((ra, rb), (rb, ra)):  # one branch binds: its root exceeds the other's by g >= 0
        sol = {v0: sp.solve(sp.Eq(bind - other, g), v0)[0]}
        gaps = [sp.simplify(x.subs(sol)) for x in (ga, gb)]
        nstar = sp.simplify(bind.subs(sol))
        at = [sp.simplify(x.subs(n, nstar)) for x in gaps]
        own, oth = (at[0], at[1]) if bind is ra else (at[1], at[0])
        equal &= own == 0 and bool(oth.is_nonnegative)  # cycles equal; the max picks the binding branch
        equal &= sp.simplify(oth - (v1 * g if bind is ra else e * g)) == 0
        equal &= sp.simplify((split - one).subs(sol).subs(n, nstar)) == 0
        above &= all(bool(sp.simplify(x.subs(n, nstar + t)).is_positive) for x in gaps)
        bgap = gaps[0] if bind is ra else gaps[1]
        below &= bool(sp.simplify(bgap.subs(n, nstar - t)).is_negative)
    # odd n = 2m + 1: halves m + 1 and m; the split is 2o + max(Vs(m+1), D(m)) + max(Vs(m), D(m+1))
    one_odd = one.subs(n, 2 * m + 1)
    at_n = {n: 2 * m + 1}
    same_branches = sp.simplify(one_odd - (2 * o + Vs(m + 1) + Vs(m)) - ga.subs(at_n)) == 0 and sp.simplify(
        one_odd - (2 * o + D(m + 1) + D(m)) - gb.subs(at_n)) == 0
    gc = sp.expand((one_odd - (2 * o + Vs(m + 1) + D(m + 1))).subs(m, (n - 1) / 2))
    gd = sp.expand((one_odd - (2 * o + Vs(m) + D(m))).subs(m, (n - 1) / 2))
    rc = _root(gc)
    cross_ok = bool(sp.simplify(gd - gc).is_positive) and sp.diff(gc, n, 2) == 0 and bool(
        sp.simplify(sp.diff(gc, n)).is_positive)
    # the cross root minus 1 is the mean of the branch roots weighted (e, v1), <= n*, plus 2 s1 / (e + v1)
    mean = (e * ra + v1 * rb) / (e + v1)
    odd = same_branches and cross_ok and sp.simplify(rc - 1 - mean - 2 * s1 / (e + v1)) == 0
    tau = sp.Symbol("tau", positive=True)
    transfer = sp.simplify(split_threshold_expr(swap=True).subs({v0: v0 + tau, d0: d0 + tau}, simultaneous=True)
                           - split_threshold_expr(swap=True)) == 0
    out = {"gaps_linear_slopes_positive": bool(linear), "swap_free_form": bool(swap_free),
           "equal_at_threshold": bool(equal), "pays_above": bool(above), "not_below": bool(below),
           "odd_n_at_most_one_more": bool(odd), "transfer_cancels": bool(transfer)}
    return out | {"proven": all(out.values())}


__all__ = ["affine_coefficients", "affine_split_threshold", "prove_split_threshold", "split_cycles", "split_pays",
           "split_threshold", "split_threshold_expr", "swap_coefficients"]

"""The ">= 37% lower end-to-end latency" claim: which comparison gives it, proven, and where it fails.

The published "latency" is makespan / requests offline, so a latency reduction is a makespan reduction
``R = 1 - makespan_PSD / makespan_SD`` (offline, same requests, same output lengths). Four readings,
each an exact statement (docs/theory.md states them as theorems and sketches the proofs):

A. **Published basis, same k** (same ``max_num_seqs``, PSD doubles capacity, each half as large as SD's
   batch; any step-time model evaluated at that batch): with ``V`` = verification, ``D = k T_d`` drafting
   of one batch, ``o`` the step overhead and ``tau`` one transfer,
   ``R = (min(V, D) - tau) / (o + V + D)`` (from :func:`minedraft.theory.constant.symbolic_forms`).
   With ``o = tau = 0`` and ``rho = D / V``: ``R = min(rho, 1) / (1 + rho) <= 1/2``, and
   ``R >= 0.37  <=>  37/63 <= rho <= 63/37`` (``0.587 <= rho <= 1.703``), whatever alpha, k, L, M.
B. **Both k tuned** (published basis, constant step times, ``c = T_d / T_v`` per drafter forward, i.i.d.
   alpha, each policy at its integer-optimal ``k <= k_max``): no closed form; a certified bound over a
   box of (alpha, c), by exact rational interval bounds on cells (:func:`certify_tuned`).
C. **Same concurrency** (PSD splits ``max_num_seqs``), affine step times ``T(b) = a + beta b (...)``: with
   ``phi`` the batch-independent share of SD's step (``a_t + k a_d`` over ``V(M) + D(M)``),
   ``R <= (1 - phi) / 2``, with equality iff the halves balance (``V(M/2) = D(M/2)``); so ``R >= 0.37``
   needs ``phi <= 0.26``. Constant step times (``phi = 1``): ``R <= 0``, PSD never wins.
D. **Same GPUs** (GPU-seconds: PSD has ``tp + 1`` GPUs, SD ``tp``), constant: ``R = 1 - (tp + 1) / tp *
   max(rho, 1) / (1 + rho) <= (tp - 1) / (2 tp)``; 37% needs ``tp >= 4`` and, at ``tp = 4``,
   ``62/63 <= rho <= 63/62``.

A, C and D are one formula, ``R = 1 - gamma max(1, rho) / (1 + rho)`` with ``rho = D / V`` of a PSD half
and ``gamma`` = 1, ``1 + phi``, ``(tp + 1) / tp`` (:func:`prove_unified`): ``R >= 37%`` iff
``gamma / 0.63 - 1 <= rho <= 0.63 / (gamma - 0.63)``, which is empty once ``gamma > 1.26``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import sympy as sp
from minedraft.theory.constant import E, M, X, Y, ks, o, symbolic_forms, tau

THRESHOLD = sp.Rational(37, 100)
#: Boxes (alpha range, T_d/T_v range, k_max) on which reading B is certified (tests re-run the certificates).
CERTIFIED_BOXES = (((0.6, 0.97), (0.15, 1.6), 10), ((0.6, 0.95), (0.2, 1.6), 5))
rho = sp.Symbol("rho", positive=True)
phi = sp.Symbol("phi", nonnegative=True)


# ------------------------------------------------------------------------------------------- reading A
def published_reduction_expr() -> sp.Expr:
    """``R`` on the published basis with the same k, from the constant-mode closed forms (``D = k X``, ``V = Y``)."""
    f = symbolic_forms()
    return sp.simplify(1 - f["sd"]["throughput"] / f["psd"]["throughput"])


def published_reduction_rho() -> sp.Expr:
    """Reading A with ``o = tau = 0`` in terms of ``rho = k X / Y``: ``min(rho, 1) / (1 + rho)``."""
    # R is homogeneous of degree 0 in (X, Y, o, tau): measure time in units of Y.
    e = published_reduction_expr().subs({o: 0, tau: 0}).subs(X, rho * Y / ks).subs(Y, 1)
    return sp.simplify(e)


@lru_cache(maxsize=1)
def prove_published() -> dict:
    """sympy: the general form, the 37% window in rho, and the maximum 1/2 at rho = 1."""
    general = published_reduction_expr()
    # The general form equals (min(V, D) - tau) / (o + V + D):
    v, d = Y, ks * X
    expected = (sp.Min(v, d) - tau) / (o + v + d)
    general_ok = _equal_piecewise(general, expected, v, d)
    r = published_reduction_rho()
    window = sp.solve_univariate_inequality(r >= THRESHOLD, rho, relational=False).intersect(sp.Interval.open(0, sp.oo))
    lo, hi = sp.Rational(37, 63), sp.Rational(63, 37)
    window_ok = window == sp.Interval(lo, hi)
    # Max: rho / (1 + rho) increases on (0, 1]; 1 / (1 + rho) decreases on [1, oo); both are 1/2 at 1.
    up, down = rho / (1 + rho), 1 / (1 + rho)
    inc = sp.simplify(sp.diff(up, rho)) == 1 / (1 + rho) ** 2
    dec = sp.simplify(sp.diff(down, rho)) == -1 / (1 + rho) ** 2
    pieces_ok = sp.simplify(r.subs(rho, sp.Rational(1, 2)) - up.subs(rho, sp.Rational(1, 2))) == 0 and \
        sp.simplify(r.subs(rho, 2) - down.subs(rho, 2)) == 0
    return {"expr": general, "rho_expr": r, "window": (lo, hi), "max": sp.Rational(1, 2),
            "proven": bool(general_ok and window_ok and inc and dec and pieces_ok)}


def _equal_piecewise(a: sp.Expr, b: sp.Expr, v: sp.Expr, d: sp.Expr) -> bool:
    """Equal on both sides of ``v = d`` (Min/Max resolved on each side)."""
    big = sp.Symbol("big", positive=True)
    ok = True
    for subs in ({X: (Y + big) / ks}, {Y: ks * X + big}):  # D > V, then V > D
        ok &= sp.simplify((a - b).subs(subs)) == 0
    return ok


def published_reduction(rho_value: float | np.ndarray) -> float | np.ndarray:
    """Reading A, numerically (``o = tau = 0``)."""
    r = np.asarray(rho_value, dtype=float)
    return np.minimum(r, 1.0) / (1.0 + r)


# ------------------------------------------------------------------------------------------- reading C
@lru_cache(maxsize=1)
def prove_same_concurrency() -> dict:
    """sympy: with halves of ``M/2``, ``R = 1 - 2 max(V_h, D_h) / (V(M) + D(M))`` and ``V(M) + D(M) =
    2 (V_h + D_h) - F`` (affine: the fixed parts ``F = a_t + k a_d`` do not double). Since
    ``2 max >= V_h + D_h``, ``R <= 1 - (S + F) / (2 S) = (1 - phi) / 2`` with ``S = V(M) + D(M)``,
    ``phi = F / S``; equality at ``V_h = D_h``."""
    a_t, a_d, b_t, b_d, m, kk = sp.symbols("a_t a_d beta_t beta_d M k", positive=True)
    vh = a_t + b_t * (m / 2) * (kk + 1)
    dh = kk * a_d + 2 * kk * b_d * (m / 2)  # the draft op: k a_d + beta_d b (k + 1) + (k - 1) beta_d b
    v_full = a_t + b_t * m * (kk + 1)
    d_full = kk * a_d + 2 * kk * b_d * m
    f = a_t + kk * a_d
    doubling_ok = sp.simplify(v_full + d_full - (2 * (vh + dh) - f)) == 0
    s = v_full + d_full
    bound = 1 - (s + f) / (2 * s)
    bound_ok = sp.simplify(bound - (1 - f / s) / 2) == 0
    # at balance (V_h = D_h) the bound is attained: R = 1 - 2 V_h / (4 V_h - F)
    x, ff = sp.symbols("x F", positive=True)
    at_balance = 1 - 2 * x / (4 * x - ff)
    attained = sp.simplify(at_balance - (1 - ff / (4 * x - ff)) / 2) == 0
    need = sp.solve_univariate_inequality((1 - phi) / 2 >= THRESHOLD, phi, relational=False).intersect(
        sp.Interval(0, 1))
    return {"bound": (1 - phi) / 2, "phi_max": sp.Rational(26, 100),
            "proven": bool(doubling_ok and bound_ok and attained and need == sp.Interval(0, sp.Rational(26, 100)))}


def draft_op_affine_check() -> bool:
    """The draft op's affine form used above equals StepCosts.op_time with Affine latency models."""
    from minedraft.costs import StepCosts
    from minedraft.latency import Affine
    from minedraft.ops import DRAFT

    c = StepCosts(Affine(1e-3, 1e-5), Affine(2e-4, 3e-6))
    for b in (1, 7, 32):
        for k in (1, 3, 6):
            want = k * 2e-4 + 2 * k * 3e-6 * b
            if abs(c.op_time(DRAFT, b, k=k) - want) > 1e-15:
                return False
    return True


# ------------------------------------------------------------------------------------------- reading D
def same_gpus_window(tp: int) -> sp.Set:
    """rho where GPU-second reduction ``1 - (tp + 1) / tp * max(rho, 1) / (1 + rho)`` reaches 37%."""
    r = 1 - sp.Rational(tp + 1, tp) * sp.Max(rho, 1) / (1 + rho)
    s = sp.solve_univariate_inequality(r >= THRESHOLD, rho, relational=False)
    return s.intersect(sp.Interval.open(0, sp.oo))


def same_gpus_max(tp: int) -> sp.Rational:
    return sp.Rational(tp - 1, 2 * tp)


# ------------------------------------------------------------------------------------------- all bases
gamma = sp.Symbol("gamma", positive=True)


def basis_gamma(basis: str, phi_value: float = 0.0, tp: int = 4) -> float:
    """The factor ``gamma`` of :func:`unified_reduction` for a comparison basis (constant or affine times).

    Published (same max_num_seqs): 1. Same concurrency: ``1 + phi`` (``phi`` = batch-independent share of
    SD's step; 1 for constant step times). Same GPUs: ``(tp + 1) / tp``.
    """
    return {"same_max_num_seqs": 1.0, "same_concurrency": 1.0 + phi_value, "same_gpus": (tp + 1) / tp}[basis]


def unified_reduction_expr() -> sp.Expr:
    """``R = 1 - gamma max(1, rho) / (1 + rho)``, ``rho = D / V`` of a PSD half, ``o = tau = 0``.

    gamma = 1 is reading A; ``1 + phi`` reading C (halves of M/2: SD's step is ``S = 2 (V_h + D_h) - F``
    with ``F = phi S``, so ``S = 2 (V_h + D_h) / (1 + phi)``); ``(tp + 1) / tp`` reading D (GPU-seconds).
    """
    return 1 - gamma * sp.Max(1, rho) / (1 + rho)


@lru_cache(maxsize=1)
def prove_unified() -> dict:
    """sympy: R >= 37% iff ``gamma / 0.63 - 1 <= rho <= 0.63 / (gamma - 0.63)``, non-empty iff ``gamma <= 1.26``;
    the maximum over rho is ``1 - gamma / 2`` at ``rho = 1``; and the bases' special cases agree."""
    keep = 1 - THRESHOLD  # 63/100
    r = unified_reduction_expr()
    lo, hi = gamma / keep - 1, keep / (gamma - keep)
    # On rho <= 1 the condition is gamma / (1 + rho) <= 63/100; on rho >= 1 it is gamma rho / (1 + rho) <= 63/100.
    left = sp.solve(sp.Eq(gamma / (1 + rho), keep), rho)
    right = sp.solve(sp.Eq(gamma * rho / (1 + rho), keep), rho)
    ends_ok = sp.simplify(left[0] - lo) == 0 and sp.simplify(right[0] - hi) == 0
    # non-empty iff lo <= 1 <= hi iff gamma <= 2 * 63/100
    nonempty_ok = sp.simplify(lo.subs(gamma, 2 * keep) - 1) == 0 and sp.simplify(hi.subs(gamma, 2 * keep) - 1) == 0
    max_ok = sp.simplify(r.subs(rho, 1) - (1 - gamma / 2)) == 0
    a_ok = _same_on_grid(r.subs(gamma, 1), published_reduction_rho())
    win_a = (sp.nsimplify(lo.subs(gamma, 1)), sp.nsimplify(hi.subs(gamma, 1)))
    win_d4 = (sp.nsimplify(lo.subs(gamma, sp.Rational(5, 4))), sp.nsimplify(hi.subs(gamma, sp.Rational(5, 4))))
    return {"expr": r, "window": (lo, hi), "gamma_max": 2 * keep, "window_published": win_a, "window_same_gpus_tp4":
            win_d4, "proven": bool(ends_ok and nonempty_ok and max_ok and a_ok
                                   and win_a == (sp.Rational(37, 63), sp.Rational(63, 37))
                                   and win_d4 == (sp.Rational(62, 63), sp.Rational(63, 62)))}


def _same_on_grid(a: sp.Expr, b: sp.Expr) -> bool:
    return all(abs(float(a.subs(rho, x)) - float(b.subs(rho, x))) < 1e-12
               for x in (sp.Rational(1, 10), sp.Rational(1, 2), 1, 2, 7))


def unified_reduction(rho_value, gamma_value: float):
    r = np.asarray(rho_value, dtype=float)
    return 1.0 - gamma_value * np.maximum(1.0, r) / (1.0 + r)


def reduction_window(gamma_value: float, threshold: float = 0.37) -> tuple[float, float] | None:
    """rho interval where ``R >= threshold`` for a basis factor gamma (None when empty)."""
    keep = 1 - threshold
    lo, hi = gamma_value / keep - 1, keep / (gamma_value - keep) if gamma_value > keep else math.inf
    return (lo, hi) if lo <= 1 <= hi else None


# ------------------------------------------------------------------------------------------- reading B
def tuned_reduction(alpha: float, c: float, k_max: int = 10) -> tuple[float, int, int]:
    """Reading B numerically: ``(R, k_SD, k_PSD)`` with each policy at its integer-optimal k <= k_max.

    Per-token latency (seconds per token of one request, in units of ``T_v``): SD ``(1 + k c) / E_k``,
    PSD ``max(1, k c) / E_k``; E_k is ``AcceptanceCurve.geometric(alpha).expected_tokens(k)``.
    """
    from minedraft.acceptance import AcceptanceCurve

    curve = AcceptanceCurve.geometric(alpha, k_max)
    e = np.array([curve.expected_tokens(k) for k in range(1, k_max + 1)])
    kk = np.arange(1, k_max + 1)
    sd = (1 + kk * c) / e
    psd = np.maximum(1.0, kk * c) / e
    i, j = int(np.argmin(sd)), int(np.argmin(psd))
    return 1.0 - psd[j] / sd[i], i + 1, j + 1


@lru_cache(maxsize=64)
def _e_poly(k: int):
    """E_k as a polynomial in alpha, from :func:`minedraft.theory.tokens.iid_sum` (no float rounding)."""
    from minedraft.theory.tokens import alpha as a_sym
    from minedraft.theory.tokens import iid_sum
    from minedraft.theory.tokens import k as k_sym

    return sp.lambdify(a_sym, iid_sum().subs(k_sym, k).doit(), modules=[])


def _e_exact(a: Fraction, k: int) -> Fraction:
    """E_k for i.i.d. alpha in exact rational arithmetic."""
    return Fraction(_e_poly(k)(a))


def tuned_cell_lower_bound(a0: Fraction, a1: Fraction, c0: Fraction, c1: Fraction, k_max: int) -> Fraction:
    """A certified lower bound of reading B's R over the cell [a0, a1] x [c0, c1] (exact rationals).

    E_k rises with alpha and the costs ``1 + k c``, ``max(1, k c)`` rise with c, so SD's best per-token
    time is at least ``min_k (1 + k c0) / E_k(a1)`` and PSD's at most ``min_k max(1, k c1) / E_k(a0)``.
    """
    sd_lb = min((1 + k * c0) / _e_exact(a1, k) for k in range(1, k_max + 1))
    psd_ub = min(max(Fraction(1), k * c1) / _e_exact(a0, k) for k in range(1, k_max + 1))
    return 1 - psd_ub / sd_lb


def certify_tuned(alpha_range: tuple[float, float], c_range: tuple[float, float], k_max: int = 10,
                  threshold: float = 0.37, max_depth: int = 14, initial: int = 8) -> dict:
    """Certify ``R >= threshold`` on a box by adaptive bisection with :func:`tuned_cell_lower_bound`.

    Returns ``{"certified": bool, "cells": n, "worst_bound": min over leaf cells, "failed": [cells]}``;
    a failing cell at full depth whose centre itself is below the threshold is a counterexample.
    """
    thr = Fraction(threshold).limit_denominator(10**6)
    a_lo, a_hi = (Fraction(x).limit_denominator(10**6) for x in alpha_range)
    c_lo, c_hi = (Fraction(x).limit_denominator(10**6) for x in c_range)
    stack = []
    for i in range(initial):
        for j in range(initial):
            stack.append((a_lo + (a_hi - a_lo) * i / initial, a_lo + (a_hi - a_lo) * (i + 1) / initial,
                          c_lo + (c_hi - c_lo) * j / initial, c_lo + (c_hi - c_lo) * (j + 1) / initial, 0))
    cells, worst, failed = 0, None, []
    while stack:
        a0, a1, c0, c1, depth = stack.pop()
        lb = tuned_cell_lower_bound(a0, a1, c0, c1, k_max)
        if lb >= thr:
            cells += 1
            worst = lb if worst is None else min(worst, lb)
            continue
        if depth >= max_depth:
            centre = tuned_reduction(float((a0 + a1) / 2), float((c0 + c1) / 2), k_max)[0]
            failed.append({"alpha": (float(a0), float(a1)), "c": (float(c0), float(c1)), "bound": float(lb),
                           "centre": centre})
            continue
        am, cm = (a0 + a1) / 2, (c0 + c1) / 2
        # split the longer side (relative to the box)
        if (a1 - a0) / (a_hi - a_lo) >= (c1 - c0) / (c_hi - c_lo):
            stack += [(a0, am, c0, c1, depth + 1), (am, a1, c0, c1, depth + 1)]
        else:
            stack += [(a0, a1, c0, cm, depth + 1), (a0, a1, cm, c1, depth + 1)]
    return {"certified": not failed, "cells": cells, "worst_bound": float(worst) if worst is not None else None,
            "failed": failed[:10], "num_failed": len(failed), "alpha_range": alpha_range, "c_range": c_range,
            "k_max": k_max, "threshold": threshold}


# ------------------------------------------------------------------------------------------- the map
def reduction_grid(rhos: np.ndarray, alphas: np.ndarray, k: int, reading: str, k_max: int = 10) -> np.ndarray:
    """R over (alpha rows) x (rho columns) at draft length ``k`` (``rho = k T_d / T_v``), o = tau = 0.

    ``reading``: ``"same_k"`` (A: both at k), ``"psd_tuned"`` (SD at k, PSD at its best k' <= k_max
    for the same per-forward cost ``c = rho / k``) or ``"both_tuned"`` (B: both at their best k' <= k_max).
    """
    from minedraft.acceptance import AcceptanceCurve

    if reading not in ("same_k", "psd_tuned", "both_tuned"):
        raise ValueError(f"unknown reading {reading!r}")
    rhos = np.asarray(rhos, dtype=float)
    c = rhos / k
    q = np.arange(1, k_max + 1)[:, None]
    out = np.empty((len(alphas), len(rhos)))
    for i, a in enumerate(alphas):
        if reading == "same_k":
            out[i] = published_reduction(rhos)
            continue
        curve = AcceptanceCurve.geometric(float(a), max(k_max, k))
        e = np.array([curve.expected_tokens(int(x)) for x in q[:, 0]])[:, None]
        psd = (np.maximum(1.0, q * c[None, :]) / e).min(axis=0)
        sd = (1 + q * c[None, :]) / e
        sd = sd.min(axis=0) if reading == "both_tuned" else (1 + k * c) / curve.expected_tokens(k)
        out[i] = 1 - psd / sd
    return out


__all__ = [
    "THRESHOLD",
    "E",
    "M",
    "certify_tuned",
    "prove_published",
    "prove_same_concurrency",
    "published_reduction",
    "published_reduction_expr",
    "published_reduction_rho",
    "reduction_grid",
    "same_gpus_max",
    "same_gpus_window",
    "tuned_cell_lower_bound",
    "tuned_reduction",
]

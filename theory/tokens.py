"""Tokens per verification step, E[1 + A]: exact symbolic forms and a brute-force check.

The number used everywhere is :meth:`minedraft.acceptance.AcceptanceCurve.expected_tokens`
(``1 + sum_{i < k} r[i]``, ``r`` the unconditional per-position rates). This module derives it, it does
not replace it:

- ``E[1 + A] = sum_{j >= 0} P(1 + A > j) = 1 + sum_{j=1..k} P(A >= j) = 1 + sum_{i<k} r[i]``
  (the tail-sum formula; :func:`curve_form`);
- i.i.d. acceptance ``r[i] = alpha^(i+1)``: a geometric sum, ``(1 - alpha^(k+1)) / (1 - alpha)``
  (:func:`iid_form`, proven for symbolic ``k`` by :func:`prove_iid_form`);
- per-request ``alpha ~ Beta(a, b)``: ``r[i] = E[alpha^(i+1)] = prod_{m<=i} (a + m) / (a + b + m)``
  (:func:`beta_moment_form`, the moments :meth:`AcceptanceCurve.beta_mixture` uses).

:func:`brute_force_expected_tokens` enumerates all ``2^k`` accept/reject patterns of the draft (the
target accepts the longest all-accepted prefix), so tests can check the closed forms against the
definition rather than against each other.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import sympy as sp

alpha, k, i, j = sp.symbols("alpha k i j", nonnegative=True)
a_beta, b_beta = sp.symbols("a b", positive=True)


def iid_form() -> sp.Expr:
    """``E[1 + A]`` for i.i.d. acceptance probability ``alpha`` and ``k`` drafts, in closed form."""
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def iid_sum() -> sp.Expr:
    """The same quantity as the tail sum ``sum_{j=0..k} alpha^j`` (unevaluated)."""
    return sp.Sum(alpha**j, (j, 0, k))


@lru_cache(maxsize=1)
def prove_iid_form() -> bool:
    """sympy proof, for symbolic ``k``, that the tail sum equals :func:`iid_form` (``alpha != 1``)."""
    kk = sp.Symbol("k", integer=True, nonnegative=True)
    aa = sp.Symbol("alpha", positive=True)
    closed = (1 - aa ** (kk + 1)) / (1 - aa)
    total = sp.Sum(aa**j, (j, 0, kk)).doit()
    # doit() answers with a Piecewise: k + 1 at alpha == 1, the geometric form otherwise.
    branches = total.args if isinstance(total, sp.Piecewise) else ((total, True),)
    generic = next(e for e, c in branches if c is sp.true)
    at_one = next((e for e, c in branches if c == sp.Eq(aa, 1)), kk + 1)
    if sp.simplify(at_one - (kk + 1)) != 0:
        return False
    return sp.simplify(generic - closed) == 0 and sp.limit(closed, aa, 1) == kk + 1


def pmf_form(kk: int) -> list[sp.Expr]:
    """``P(A = a)``, ``a = 0..kk``, for i.i.d. acceptance: ``alpha^a (1 - alpha)``, and ``alpha^kk`` at ``a = kk``."""
    return [alpha**a * (1 - alpha) for a in range(kk)] + [alpha**kk]


def pmf_mean_form(kk: int) -> sp.Expr:
    """``sum_a (1 + a) P(A = a)`` for a concrete ``kk``, simplified (equals :func:`iid_form` at ``k = kk``)."""
    return sp.simplify(sum((1 + a) * p for a, p in enumerate(pmf_form(kk))))


def curve_form(kk: int) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """``E[1 + A]`` for any curve with ``kk`` rates ``r0..r{kk-1}``, derived from the pmf, and the rate symbols."""
    r = sp.symbols(f"r0:{kk}", nonnegative=True) if kk else ()
    tail = (1, *r)
    pmf = [tail[a] - tail[a + 1] for a in range(kk)] + [tail[kk]]
    return sp.expand(sum((1 + a) * p for a, p in enumerate(pmf))), tuple(r)


def beta_moment_form(power: int) -> sp.Expr:
    """``E[alpha^power]`` for ``alpha ~ Beta(a, b)``: the rising-factorial ratio ``(a)_p / (a + b)_p``."""
    return sp.rf(a_beta, power) / sp.rf(a_beta + b_beta, power)


def beta_moment_integral(power: int) -> sp.Expr:
    """The same moment by integrating against the Beta density (for tests; slow for large ``power``)."""
    x = sp.Symbol("x", positive=True)
    dens = x ** (a_beta - 1) * (1 - x) ** (b_beta - 1) / sp.beta(a_beta, b_beta)
    return sp.simplify(sp.gammasimp(sp.integrate(x**power * dens, (x, 0, 1), conds="none")))


def brute_force_expected_tokens(conditional: list[float] | tuple[float, ...], kk: int) -> float:
    """``E[1 + A]`` by enumerating every accept/reject pattern of ``kk`` drafts.

    ``conditional[p]`` is the probability that draft ``p`` would be accepted given that all before it
    were (a draft after a rejection is never checked, but enumerating it costs nothing: its
    probability mass sums out). Positions are independent given the conditional rates.
    """
    total = 0.0
    for pattern in itertools.product((True, False), repeat=kk):
        prob = 1.0
        for p, ok in enumerate(pattern):
            prob *= conditional[p] if ok else 1.0 - conditional[p]
        accepted = next((p for p, ok in enumerate(pattern) if not ok), kk)
        total += prob * (1 + accepted)
    return total

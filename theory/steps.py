"""How many steps a request needs: exact expectations for a finite output length.

A request that must still produce ``n`` tokens gains ``1 + A`` tokens per verification (capped at what
it still needs), ``A`` drawn from the acceptance curve with ``k`` drafts. The expected number of steps
solves the renewal recursion ``m(n) = 1 + sum_a P(A = a) m(n - 1 - a)``, ``m(n <= 0) = 0``, exactly — not
only its asymptote ``n / E[1 + A]``.
"""

from __future__ import annotations

import numpy as np

from minedraft.acceptance import AcceptanceCurve


def accepted_pmf(curve: AcceptanceCurve, k: int) -> np.ndarray:
    """``P(A = a)`` for ``a = 0..k``: ``r[a-1] - r[a]`` (``r[-1] = 1``), and ``P(A = k) = r[k-1]``."""
    curve.check_k(k)
    r = np.asarray((1.0, *curve.rates[:k]))
    pmf = np.empty(k + 1)
    pmf[:k] = r[:k] - r[1 : k + 1]
    pmf[k] = r[k]
    return pmf


def expected_steps(curve: AcceptanceCurve, k: int, tokens: int) -> float:
    """Expected verifications for a request to gain ``tokens`` tokens with ``k`` drafts per step."""
    pmf = accepted_pmf(curve, k)
    m = np.zeros(tokens + 1)
    for j in range(1, tokens + 1):
        idx = np.maximum(j - 1 - np.arange(k + 1), 0)
        m[j] = 1.0 + pmf @ m[idx]
    return float(m[tokens])


def pearl_expected_steps(curve: AcceptanceCurve, k: int, tokens: int) -> float:
    """Expected PEARL steps for ``tokens`` tokens, starting with no valid drafts (just prefilled).

    Two states per request: ``V`` (valid drafts: gains ``1 + A``, stays valid iff ``A = k``) and ``I``
    (a probe: gains 1, becomes valid with probability ``r[0]``). See ``minedraft/policies/pearl.py``.
    """
    pmf = accepted_pmf(curve, k)
    p = curve.rates[0]
    mi, mv = np.zeros(tokens + 1), np.zeros(tokens + 1)
    for j in range(1, tokens + 1):
        mi[j] = 1.0 + p * mv[j - 1] + (1 - p) * mi[j - 1]
        idx = np.maximum(j - 1 - np.arange(k + 1), 0)
        mv[j] = 1.0 + pmf[:k] @ mi[idx[:k]] + pmf[k] * mv[idx[k]]
    return float(mi[tokens])


def pearl_tokens_per_step(curve: AcceptanceCurve, k: int) -> float:
    """Steady-state PEARL tokens per request per step: ``pi_V E[1 + A] + (1 - pi_V)``.

    ``pi_V = p / (p + 1 - q)`` with ``p = r[0]`` (a probe succeeds) and ``q = r[k-1]`` (all k accepted).
    """
    p, q = curve.rates[0], curve.rates[k - 1]
    pi_v = p / (p + 1 - q) if p + 1 - q > 0 else 1.0
    return pi_v * curve.expected_tokens(k) + (1 - pi_v)

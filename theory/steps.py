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
    return float(steps_table(curve, k, tokens)[tokens])


def steps_table(curve: AcceptanceCurve, k: int, tokens: int) -> np.ndarray:
    """``m(0..tokens)``: the renewal recursion's whole table (one pass serves every length)."""
    pmf = accepted_pmf(curve, k)
    m = np.zeros(tokens + 1)
    for j in range(1, tokens + 1):
        idx = np.maximum(j - 1 - np.arange(k + 1), 0)
        m[j] = 1.0 + pmf @ m[idx]
    return m


def pearl_expected_steps(curve: AcceptanceCurve, k: int, tokens: int) -> float:
    """Expected PEARL steps for ``tokens`` tokens, starting with no valid drafts (just prefilled).

    Two states per request: ``V`` (valid drafts: gains ``1 + A``; stays valid iff all ``k`` are accepted
    and the drafter's guess of the bonus token is right, probability ``r[k]`` in all) and ``I`` (a probe:
    gains 1, becomes valid iff the guess of the new token is right, probability ``r[0]``). See
    ``minedraft/policies/pearl.py``. The curve needs ``k + 1`` positions.
    """
    return float(pearl_steps_table(curve, k, tokens)[tokens])


def pearl_steps_table(curve: AcceptanceCurve, k: int, tokens: int) -> np.ndarray:
    """PEARL's ``m_I(0..tokens)`` (a request starts without valid drafts)."""
    curve.check_k(k + 1, "k + 1 (PEARL's guess)")
    pmf = accepted_pmf(curve, k)
    p, stay = curve.rates[0], curve.rates[k]
    mi, mv = np.zeros(tokens + 1), np.zeros(tokens + 1)
    for j in range(1, tokens + 1):
        mi[j] = 1.0 + p * mv[j - 1] + (1 - p) * mi[j - 1]
        idx = np.maximum(j - 1 - np.arange(k + 1), 0)
        mv[j] = 1.0 + pmf[:k] @ mi[idx[:k]] + (pmf[k] - stay) * mi[idx[k]] + stay * mv[idx[k]]
    return mi


def pearl_valid_share(curve: AcceptanceCurve, k: int) -> float:
    """Stationary share of PEARL requests with valid drafts: ``p / (p + 1 - q)``, ``p = r[0]`` (a probe's
    guess is right), ``q = r[k]`` (all k accepted and the guess of the bonus token right)."""
    curve.check_k(k + 1, "k + 1 (PEARL's guess)")
    p, q = curve.rates[0], curve.rates[k]
    return p / (p + 1 - q) if p + 1 - q > 0 else 1.0


def pearl_tokens_per_step(curve: AcceptanceCurve, k: int) -> float:
    """Steady-state PEARL tokens per request per step: ``pi_V E[1 + A] + (1 - pi_V)``."""
    pi_v = pearl_valid_share(curve, k)
    return pi_v * curve.expected_tokens(k) + (1 - pi_v)


def steps_second_moment(curve: AcceptanceCurve, k: int, tokens: int) -> float:
    """``E[N^2]`` for the number of verifications ``N`` to gain ``tokens`` tokens."""
    return float(second_moment_table(curve, k, tokens)[tokens])


def second_moment_table(curve: AcceptanceCurve, k: int, tokens: int) -> np.ndarray:
    """``E[N(0..tokens)^2]``: ``N(n) = 1 + N(n - 1 - A)``, so ``E[N(n)^2] = 1 + 2 E[N(n-1-A)] + E[N(n-1-A)^2]``."""
    pmf = accepted_pmf(curve, k)
    m, s = np.zeros(tokens + 1), np.zeros(tokens + 1)
    for j in range(1, tokens + 1):
        idx = np.maximum(j - 1 - np.arange(k + 1), 0)
        m[j] = 1.0 + pmf @ m[idx]
        s[j] = 1.0 + 2.0 * (pmf @ m[idx]) + pmf @ s[idx]
    return s


def wald_bounds(curve: AcceptanceCurve, k: int, tokens: int) -> tuple[float, float]:
    """Bounds on :func:`expected_steps` from Wald's identity: ``n / E <= m(n) <= (n + k) / E``.

    The tokens gained when a request finishes, ``S_N``, satisfy ``n <= S_N <= n + k`` and
    ``E[S_N] = E[1 + A] m(n)``, with ``E = AcceptanceCurve.expected_tokens(k)``.
    """
    e = curve.expected_tokens(k)
    return tokens / e, (tokens + k) / e


# ------------------------------------------------------------------ per-request heterogeneity
QUADRATURE_NODES = 24


def beta_nodes(curve: AcceptanceCurve, nodes: int = QUADRATURE_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Jacobi nodes and weights for the curve's per-request ``alpha ~ Beta(a, b)`` on [0, 1]."""
    from scipy.special import roots_jacobi

    c, mean = curve.concentration, curve.beta_mean
    a, b = mean * c, (1 - mean) * c
    x, w = roots_jacobi(nodes, b - 1.0, a - 1.0)  # weight (1 - x)^(b-1) (1 + x)^(a-1) on [-1, 1]
    return (x + 1.0) / 2.0, w / w.sum()


def _per_request(curve: AcceptanceCurve, fn) -> float:
    """``fn(curve)`` for a homogeneous curve; its average over the per-request alphas otherwise."""
    if not curve.heterogeneous:
        return fn(curve)
    p, w = beta_nodes(curve)
    return float(sum(wi * fn(AcceptanceCurve.geometric(float(pi), curve.positions)) for pi, wi in zip(p, w)))


def mean_steps(policy: str, curve: AcceptanceCurve | None, k: int, tokens: int | np.ndarray) -> float:
    """Expected steps per request, averaged over requests: over their token counts ``tokens`` (one
    count or an array of them) and, with heterogeneity, over their acceptance."""
    t = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
    if policy == "ar":
        return float(t.mean())
    top = int(t.max())
    table = pearl_steps_table if policy == "pearl" else steps_table
    return _per_request(curve, lambda c: float(table(c, k, top)[t].mean()))


def steps_cv2(policy: str, curve: AcceptanceCurve | None, k: int, tokens: int | np.ndarray) -> float:
    """Squared coefficient of variation of a request's step count, over requests with ``tokens`` tokens
    (one count or an array) and their acceptance. AR: from the lengths only; PEARL: SD's, an estimate."""
    t = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
    if policy == "ar":
        mean, second = float(t.mean()), float((t.astype(float) ** 2).mean())
    else:
        top = int(t.max())
        mean = _per_request(curve, lambda c: float(steps_table(c, k, top)[t].mean()))
        second = _per_request(curve, lambda c: float(second_moment_table(c, k, top)[t].mean()))
    return max(0.0, second / mean**2 - 1.0) if mean > 0 else 0.0


def tokens_per_step(policy: str, curve: AcceptanceCurve | None, k: int) -> float:
    """Long-run tokens a request gains per step of its own (per verification).

    AR: 1. SD/PSD: ``AcceptanceCurve.expected_tokens(k)``; PEARL: :func:`pearl_tokens_per_step`. With
    per-request heterogeneity a slot's long-run rate is the harmonic mean over requests (hard requests
    hold their slot for more steps), the figure vLLM's mean acceptance length reports.
    """
    if policy == "ar":
        return 1.0
    fn = (lambda c: pearl_tokens_per_step(c, k)) if policy == "pearl" else (lambda c: c.expected_tokens(k))
    if not curve.heterogeneous:
        return fn(curve)
    return 1.0 / _per_request(curve, lambda c: 1.0 / fn(c))

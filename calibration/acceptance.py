"""Acceptance curves with confidence intervals, from what real runs leave behind.

Every source is turned into :class:`Observations`, then one estimator makes a :class:`CurveEstimate`
(an :class:`~minedraft.acceptance.AcceptanceCurve` plus per-position confidence bounds, the counts or fit
behind it, warnings and provenance). Its JSON file loads anywhere a curve is taken
(``--accept-curve curve.json``), since :meth:`AcceptanceCurve.from_json` reads only ``rates``.

Sources
- **vLLM metrics**: Prometheus text scraped from a server's ``/metrics`` or a JSON dump of
  ``llm.get_metrics()`` (:func:`metrics_to_json`). ``vllm:spec_decode_num_drafts`` and
  ``vllm:spec_decode_num_accepted_tokens_per_pos`` (label ``position``) give exact per-position counts;
  engines of one model are summed.
- **our traces** (:mod:`minedraft.trace`): verify ops with per-request ``accepted`` give exact counts;
  traces written without request details give per-step totals only.
- **published MineDraft traces**: per-step totals only (``accepted_num`` over ``match_count`` drafted
  requests with ``verify_len`` draft tokens in all); a curve needs a model (below).
- **a draft/target model pair** run on prompts: :mod:`minedraft.calibration.speculative`.

Estimators
- ``empirical`` — ``rates[i] = accepted[i] / reached[i]`` (``reached[i]``: checks that drafted at least
  ``i + 1`` tokens), with a binomial interval per position (Wilson or Clopper-Pearson). Steps of one
  request are treated as independent checks; vLLM's counters carry no request identity, so nothing else
  is possible there (clustering by request would widen the intervals).
- ``geometric`` — one i.i.d. acceptance probability ``alpha`` by maximum likelihood. From exact counts
  each drafted position is one Bernoulli(alpha) trial until the first rejection, so ``alpha`` =
  accepted / (accepted + rejections) with the binomial interval. From per-step totals the likelihood of
  each step's total is the ``n``-fold convolution of the truncated geometric, maximised numerically, with a
  likelihood-ratio interval.
- ``mean-length`` — vLLM's minimum-variance schedule (:meth:`AcceptanceCurve.from_mean_length`) for
  the observed mean acceptance length, with a normal interval on that mean.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minedraft.acceptance import MAX_POSITIONS, AcceptanceCurve
from minedraft.errors import InputError, read_json, read_text, require

KIND = "minedraft.acceptance_estimate"
CI_METHODS = ("wilson", "clopper-pearson")
FITS = ("auto", "empirical", "geometric", "mean-length")
NUM_DRAFTS = "vllm:spec_decode_num_drafts"
NUM_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
NUM_ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"


# =============================================================================== observations
@dataclass(frozen=True, slots=True)
class PositionCounts:
    """Exact per-position counts: ``reached[i]`` checks drafted at least ``i + 1`` tokens, and in
    ``accepted[i]`` of them the first ``i + 1`` drafts were all accepted (vLLM's per-position counter)."""

    reached: tuple[int, ...]
    accepted: tuple[int, ...]

    def __post_init__(self) -> None:
        r, a = self.reached, self.accepted
        require(1 <= len(r) <= MAX_POSITIONS and len(a) == len(r), "counts",
                f"need 1..{MAX_POSITIONS} positions, as many accepted as reached counts", (len(r), len(a)))
        require(all(isinstance(x, int) and x >= 0 for x in r + a), "counts", "counts must be integers >= 0",
                (r, a))
        require(r[0] > 0, "counts", "no drafts were checked (0 drafts at position 0)", r[0])
        require(all(x <= y for x, y in zip(a, r)), "counts", "accepted must not exceed drafts at any position",
                f"accepted {list(a)}, drafts {list(r)}")
        require(all(a[i] <= a[i - 1] for i in range(1, len(a))), "counts",
                "per-position accepted counts must be non-increasing (position i+1 is accepted only after i)",
                list(a))
        require(all(r[i] <= r[i - 1] for i in range(1, len(r))), "counts",
                "drafts per position must be non-increasing", list(r))

    @classmethod
    def uniform(cls, num_drafts: int, accepted_per_pos: Iterable[int]) -> PositionCounts:
        """Every check drafted ``len(accepted_per_pos)`` tokens (vLLM's counters)."""
        a = tuple(int(x) for x in accepted_per_pos)
        return cls(tuple([int(num_drafts)] * len(a)), a)

    @classmethod
    def from_rows(cls, accepted: np.ndarray, drafted: np.ndarray) -> PositionCounts:
        """From per-check accepted counts, each out of ``drafted`` tokens (``0 <= accepted <= drafted``)."""
        a = np.asarray(accepted, dtype=np.int64).ravel()
        d = np.broadcast_to(np.asarray(drafted, dtype=np.int64), a.shape)
        m = int(d.max())
        reached = np.bincount(d, minlength=m + 1)[::-1].cumsum()[::-1][1:m + 1]
        acc = np.bincount(a, minlength=m + 1)[::-1].cumsum()[::-1][1:m + 1]
        return cls(tuple(int(x) for x in reached), tuple(int(x) for x in acc))

    @property
    def positions(self) -> int:
        return len(self.reached)

    @property
    def num_drafts(self) -> int:
        return self.reached[0]

    @property
    def is_uniform(self) -> bool:
        return len(set(self.reached)) == 1

    def to_json(self) -> dict:
        return {"drafts_per_pos": list(self.reached), "accepted_per_pos": list(self.accepted)}


@dataclass(frozen=True, slots=True)
class StepTotals:
    """Per-step totals only: ``rows[j]`` requests each drafted ``k[j]`` tokens, ``accepted[j]`` accepted in all."""

    rows: np.ndarray
    k: np.ndarray
    accepted: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.rows)
        require(n > 0, "steps", "need at least one speculative step")
        require(len(self.k) == n and len(self.accepted) == n, "steps", "rows, k and accepted must align")
        require(bool(np.all(self.rows >= 1) and np.all(self.k >= 1) and np.all(self.k <= MAX_POSITIONS)),
                "steps", f"each step needs >= 1 drafted request and 1..{MAX_POSITIONS} draft tokens")
        bad = np.flatnonzero((self.accepted < 0) | (self.accepted > self.rows * self.k))
        require(len(bad) == 0, "steps", "accepted must be in [0, rows x k] in every step",
                f"step {int(bad[0])}: accepted {int(self.accepted[bad[0]])} of {int(self.rows[bad[0]])} x "
                f"{int(self.k[bad[0]])}" if len(bad) else None)


@dataclass
class Observations:
    """What one source yields. ``counts`` (exact) and/or ``geometric`` (accepted tokens, rejections:
    the geometric MLE's sufficient statistics) or, when only totals are known, ``steps``."""

    source: str
    counts: PositionCounts | None = None
    geometric: tuple[int, int] | None = None
    steps: StepTotals | None = None
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_rows(cls, source: str, accepted: np.ndarray, drafted: np.ndarray, **info: object) -> Observations:
        a = np.asarray(accepted, dtype=np.int64).ravel()
        d = np.broadcast_to(np.asarray(drafted, dtype=np.int64), a.shape)
        require(a.size > 0, "observations", "no drafted checks found", source)
        require(bool(np.all((d >= 1) & (d <= MAX_POSITIONS) & (a >= 0) & (a <= d))), "observations",
                f"each check needs 1..{MAX_POSITIONS} drafts and 0 <= accepted <= drafted", source)
        counts = PositionCounts.from_rows(a, d)
        return cls(source, counts=counts, geometric=(int(a.sum()), int(np.sum(a < d))), info=dict(info))

    @property
    def single_k(self) -> int | None:
        if self.counts is not None:
            return self.counts.positions if self.counts.is_uniform else None
        ks = set(self.steps.k.tolist()) if self.steps is not None else set()
        return ks.pop() if len(ks) == 1 else None


# =============================================================================== intervals
def binomial_interval(successes: np.ndarray, trials: np.ndarray, level: float = 0.95,
                      method: str = "wilson") -> tuple[np.ndarray, np.ndarray]:
    """Two-sided interval for a binomial proportion, elementwise. ``trials`` must be > 0."""
    from scipy import stats

    require(method in CI_METHODS, "ci", f"must be one of {', '.join(CI_METHODS)}", method)
    require(0 < level < 1, "confidence", "must be in (0, 1)", level)
    x = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if method == "wilson":
        z = stats.norm.ppf(0.5 + level / 2)
        p = x / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = centre - half, centre + half
    else:  # exact (Clopper-Pearson)
        tail = (1 - level) / 2
        with np.errstate(invalid="ignore"):
            lo = np.where(x > 0, stats.beta.ppf(tail, x, n - x + 1), 0.0)
            hi = np.where(x < n, stats.beta.ppf(1 - tail, x + 1, n - x), 1.0)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


# =============================================================================== estimates
@dataclass
class CurveEstimate:
    """A measured curve: point rates, per-position bounds at ``level``, and how they were obtained."""

    curve: AcceptanceCurve
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    method: str
    ci_method: str
    level: float
    counts: PositionCounts | None = None
    fit: dict | None = None
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.curve.positions
        require(len(self.lower) == n and len(self.upper) == n, "ci", "needs one lower and upper bound per position",
                (len(self.lower), len(self.upper), n))
        ok = all(-1e-9 <= lo <= r + 1e-9 and r - 1e-9 <= hi <= 1 + 1e-9
                 for lo, r, hi in zip(self.lower, self.curve.rates, self.upper))
        require(ok, "ci", "bounds must satisfy 0 <= lower <= rate <= upper <= 1 at every position",
                list(zip(self.lower, self.curve.rates, self.upper))[:4])

    @property
    def rates(self) -> tuple[float, ...]:
        return self.curve.rates

    def mean_length(self, k: int | None = None) -> float:
        """Mean acceptance length at ``k`` (default: all positions), bonus token included."""
        return self.curve.expected_tokens(self.curve.positions if k is None else k)

    def to_json(self) -> dict:
        out = self.curve.to_json() | {
            "kind": KIND,
            "positions": self.curve.positions,
            "method": self.method,
            "ci": {"method": self.ci_method, "level": self.level, "lower": list(self.lower),
                   "upper": list(self.upper)},
            "mean_acceptance_length": self.mean_length(),
        }
        if self.counts is not None:
            out["counts"] = self.counts.to_json()
        if self.fit is not None:
            out["fit"] = self.fit
        if self.warnings:
            out["warnings"] = list(self.warnings)
        out |= self.extra
        if self.provenance:
            out["provenance"] = self.provenance
        return out

    @classmethod
    def from_json(cls, data: object, field_name: str = "estimate") -> CurveEstimate:
        curve = AcceptanceCurve.from_json(data, field=field_name)
        assert isinstance(data, dict)
        ci = data.get("ci")
        require(isinstance(ci, dict) and isinstance(ci.get("lower"), list) and isinstance(ci.get("upper"), list),
                f"{field_name}: ci", "must be an object with 'lower' and 'upper' lists", ci)
        counts = None
        if isinstance(data.get("counts"), dict):
            c = data["counts"]
            try:
                counts = PositionCounts(tuple(c["drafts_per_pos"]), tuple(c["accepted_per_pos"]))
            except (KeyError, TypeError) as exc:
                raise InputError(f"{field_name}: counts", "needs drafts_per_pos and accepted_per_pos lists",
                                 exc.__class__.__name__) from None
        known = {"kind", "rates", "source", "beta", "positions", "method", "ci", "mean_acceptance_length", "counts",
                 "fit", "warnings", "provenance"}
        try:
            return cls(curve, tuple(float(x) for x in ci["lower"]), tuple(float(x) for x in ci["upper"]),
                       method=str(data.get("method", "")), ci_method=str(ci.get("method", "")),
                       level=float(ci.get("level", math.nan)), counts=counts, fit=data.get("fit"),
                       warnings=list(data.get("warnings", [])), provenance=data.get("provenance", {}),
                       extra={k: v for k, v in data.items() if k not in known})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{field_name}: ci", "bounds must be numbers", exc.__class__.__name__) from None

    def dumps(self) -> str:
        return dumps(self.to_json())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CurveEstimate:
        return cls.from_json(read_json(path, str(path)), field_name=str(path))


def dumps(obj: object) -> str:
    """Indented JSON with each list of numbers on one line (curve files stay readable)."""
    flat: dict[str, str] = {}

    def walk(x: object) -> object:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            if x and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
                key = f"\0{len(flat)}\0"
                flat[key] = json.dumps(list(x))
                return key
            return [walk(v) for v in x]
        return x

    text = json.dumps(walk(obj), indent=1)
    for key, val in flat.items():
        text = text.replace(json.dumps(key), val, 1)
    return text


def estimate(obs: Observations, fit: str = "auto", ci: str = "wilson", level: float = 0.95,
             positions: int | None = None) -> CurveEstimate:
    """One curve from one source's observations (see the module docstring for the estimators)."""
    require(fit in FITS, "fit", f"must be one of {', '.join(FITS)}", fit)
    require(ci in CI_METHODS, "ci", f"must be one of {', '.join(CI_METHODS)}", ci)
    require(0 < level < 1, "confidence", "must be in (0, 1)", level)
    if fit == "auto":
        fit = "empirical" if obs.counts is not None else "geometric"
    if fit == "empirical":
        require(obs.counts is not None, "fit",
                "empirical rates need per-position counts; this source has per-step totals only "
                "(use geometric or mean-length)", obs.source)
        est = _empirical(obs.counts, ci, level, positions)
    elif fit == "geometric":
        est = _geometric(obs, ci, level, positions)
    else:
        est = _mean_length(obs, level, positions)
    est.warnings = list(obs.warnings) + est.warnings
    return est


def _empirical(c: PositionCounts, ci: str, level: float, positions: int | None) -> CurveEstimate:
    require(positions is None or positions <= c.positions, "positions",
            f"measured positions cannot be extrapolated beyond the {c.positions} observed (fit geometric to "
            "extend a curve)", positions)
    n = positions or c.positions
    reached = np.asarray(c.reached[:n], dtype=float)
    acc = np.asarray(c.accepted[:n], dtype=float)
    rates = acc / reached
    lo, hi = binomial_interval(acc, reached, level, ci)
    # Positions with fewer drafts are separate subsets: impose the curve's monotonicity (running minimum).
    rates, lo, hi = (np.minimum.accumulate(x) for x in (rates, lo, hi))
    curve = AcceptanceCurve(tuple(rates.tolist()), source="measured per-position counts")
    warnings = [] if c.is_uniform else [("drafts per position differ (variable draft lengths): rates come from "
                                         "different subsets of checks and were made non-increasing")]
    return CurveEstimate(curve, tuple(lo.tolist()), tuple(hi.tolist()), "empirical", ci, level, counts=c,
                         warnings=warnings)


def _geometric(obs: Observations, ci: str, level: float, positions: int | None) -> CurveEstimate:
    if obs.geometric is not None:
        s, f = obs.geometric
        require(s + f > 0, "observations", "no drafted tokens to fit", obs.source)
        alpha = s / (s + f)
        lo_a, hi_a = binomial_interval(np.array([s]), np.array([s + f]), level, ci)
        lo, hi = float(lo_a[0]), float(hi_a[0])
        fit = {"model": "geometric", "alpha": alpha, "alpha_ci": [lo, hi],
               "estimator": "maximum likelihood on exact counts (accepted / (accepted + rejections)); "
                            f"{ci} interval", "accepted_tokens": s, "rejections": f}
        kmax = obs.counts.positions if obs.counts is not None else 1
        ci_name = ci
    else:
        require(obs.steps is not None, "observations", "nothing to fit", obs.source)
        alpha, lo, hi, ll = fit_geometric_totals(obs.steps, level)
        st = obs.steps
        fit = {"model": "geometric", "alpha": alpha, "alpha_ci": [lo, hi],
               "estimator": "maximum likelihood on per-step totals (sum of n truncated geometrics); "
                            "likelihood-ratio interval",
               "steps": len(st.rows), "drafted_requests": int(st.rows.sum()), "accepted_tokens": int(st.accepted.sum()),
               "log_likelihood": ll}
        kmax = int(st.k.max())
        ci_name = "likelihood-ratio"
    n = positions or kmax
    require(1 <= n <= MAX_POSITIONS, "positions", f"must be in [1, {MAX_POSITIONS}]", n)
    j = np.arange(1, n + 1)
    curve = AcceptanceCurve(tuple((alpha ** j).tolist()), source=f"geometric fit (alpha={alpha:.4f})")
    return CurveEstimate(curve, tuple((lo ** j).tolist()), tuple((hi ** j).tolist()), "geometric", ci_name, level,
                         counts=obs.counts, fit=fit)


def _mean_length(obs: Observations, level: float, positions: int | None) -> CurveEstimate:
    from scipy import stats

    k = obs.single_k
    require(k is not None, "fit", "mean-length needs one draft length k for every check", obs.source)
    z = stats.norm.ppf(0.5 + level / 2)
    if obs.counts is not None:
        c = obs.counts
        r = np.asarray(c.accepted, float) / c.num_drafts
        mean_a = float(r.sum())  # E[A] = sum_j P(A >= j)
        var_a = float(np.sum((2 * np.arange(1, k + 1) - 1) * r)) - mean_a ** 2  # E[A^2] = sum (2j-1) P(A >= j)
        se = math.sqrt(max(var_a, 0.0) / c.num_drafts)
        basis = {"checks": c.num_drafts}
    else:
        st = obs.steps
        ratio = float(st.accepted.sum() / st.rows.sum())
        mean_a = ratio
        m = len(st.rows)
        resid = (st.accepted - ratio * st.rows) / st.rows.mean()
        se = math.sqrt(float(np.sum(resid ** 2)) / (m * max(m - 1, 1)))  # ratio estimator, steps as clusters
        basis = {"steps": m, "drafted_requests": int(st.rows.sum())}
    length = 1 + mean_a
    lo_l, hi_l = max(1.0, length - z * se), min(k + 1.0, length + z * se)
    n = positions or k
    require(n <= k, "positions", f"the mean-length schedule has k={k} positions", positions)

    def sched(x: float) -> np.ndarray:
        return np.asarray(AcceptanceCurve.from_mean_length(x, k).rates[:n])

    curve = AcceptanceCurve(tuple(sched(length).tolist()), source=f"mean-length schedule ({length:.4f})")
    fit = {"model": "mean-length", "mean_acceptance_length": length, "mean_length_ci": [lo_l, hi_l],
           "estimator": "observed mean acceptance length, normal interval; vLLM's minimum-variance schedule"} | basis
    return CurveEstimate(curve, tuple(sched(lo_l).tolist()), tuple(sched(hi_l).tolist()), "mean-length", "normal",
                         level, counts=obs.counts, fit=fit)


def _sum_pmfs(alpha: float, k: int, n_max: int) -> list[np.ndarray]:
    """pmf of the sum of n i.i.d. truncated geometrics (cap k), for n = 1..n_max."""
    base = np.empty(k + 1)
    base[:k] = alpha ** np.arange(k) * (1 - alpha)
    base[k] = alpha ** k
    out = [base]
    for _ in range(n_max - 1):
        out.append(np.convolve(out[-1], base))
    return out


def geometric_totals_loglik(alpha: float, steps: StepTotals) -> float:
    """Log-likelihood of per-step totals under i.i.d. acceptance ``alpha``."""
    ll = 0.0
    for k in np.unique(steps.k):
        sel = steps.k == k
        rows, acc = steps.rows[sel], steps.accepted[sel]
        pmfs = _sum_pmfs(alpha, int(k), int(rows.max()))
        p = np.array([pmfs[n - 1][s] for n, s in zip(rows.tolist(), acc.tolist())])
        ll += float(np.sum(np.log(np.maximum(p, 1e-300))))
    return ll


def fit_geometric_totals(steps: StepTotals, level: float = 0.95) -> tuple[float, float, float, float]:
    """Maximum-likelihood alpha from per-step totals, with a likelihood-ratio interval."""
    from scipy import optimize, stats

    eps = 1e-9
    total, cap = int(steps.accepted.sum()), int(np.sum(steps.rows * steps.k))

    def nll(a: float) -> float:
        return -geometric_totals_loglik(a, steps)

    if total == 0:
        best = 0.0
    elif total == cap:
        best = 1.0
    else:
        res = optimize.minimize_scalar(nll, bounds=(eps, 1 - eps), method="bounded", options={"xatol": 1e-10})
        best = float(res.x)
    at = min(max(best, eps), 1 - eps)
    ll_best = -nll(at)
    drop = stats.chi2.ppf(level, 1) / 2

    def gap(a: float) -> float:
        return (ll_best + nll(a)) - drop  # > 0 outside the interval

    lo = 0.0 if gap(eps) <= 0 or at <= eps else float(optimize.brentq(gap, eps, at, xtol=1e-10))
    hi = 1.0 if gap(1 - eps) <= 0 or at >= 1 - eps else float(optimize.brentq(gap, at, 1 - eps, xtol=1e-10))
    return best, min(lo, best), max(hi, best), ll_best


# =============================================================================== vLLM metrics
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prometheus(text: str, field_name: str = "vllm-metrics") -> list[tuple[str, dict[str, str], float]]:
    """Samples ``(name, labels, value)`` of Prometheus text exposition format (comments skipped)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        require(m is not None, field_name, f"line {n} is not a Prometheus sample", line)
        name, _, body, value, _ = m.groups()
        labels: dict[str, str] = {}
        if body:
            pos = 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                require(lm is not None, field_name, f"line {n} has malformed labels", line)
                labels[lm.group(1)] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                                             lm.group(2))
                pos = lm.end()
        try:
            v = float(value)
        except ValueError:
            raise InputError(field_name, f"line {n} has a non-numeric value", line) from None
        out.append((name, labels, v))
    return out


@dataclass
class VllmCounters:
    """vLLM's spec-decode counters for one model (engines summed)."""

    num_drafts: int
    accepted_per_pos: list[int]
    num_draft_tokens: int | None = None
    num_accepted_tokens: int | None = None
    model_name: str | None = None
    engines: list[str] = field(default_factory=list)

    def observations(self, source: str) -> Observations:
        field_name = "vllm-metrics"
        k = len(self.accepted_per_pos)
        require(self.num_drafts > 0, field_name,
                "no speculative drafts recorded yet (num_drafts = 0): run some requests first", self.num_drafts)
        a = self.accepted_per_pos
        require(all(x >= 0 for x in a), field_name, "per-position accepted counts must be >= 0", a)
        require(a[0] <= self.num_drafts, field_name,
                f"accepted at position 0 exceeds the number of drafts ({self.num_drafts})", a[0])
        require(all(a[i] <= a[i - 1] for i in range(1, k)), field_name,
                "per-position accepted counts must be non-increasing", a)
        if self.num_accepted_tokens is not None:
            require(self.num_accepted_tokens == sum(a), field_name,
                    f"num_accepted_tokens must equal the sum of the per-position counts ({sum(a)})",
                    self.num_accepted_tokens)
        warnings = []
        if self.num_draft_tokens is not None:
            require(self.num_draft_tokens <= self.num_drafts * k, field_name,
                    f"num_draft_tokens must be at most num_drafts x k = {self.num_drafts * k}", self.num_draft_tokens)
            require(self.num_draft_tokens >= sum(a), field_name,
                    f"num_draft_tokens must be at least the accepted tokens ({sum(a)})", self.num_draft_tokens)
            if self.num_draft_tokens < self.num_drafts * k:
                short = self.num_drafts * k - self.num_draft_tokens
                warnings.append(f"{short} of {self.num_drafts * k} draft slots were not drafted (drafts shorter than "
                                f"k={k}, e.g. near max_model_len): later positions are biased low")
        counts = PositionCounts.uniform(self.num_drafts, a)
        geo = (sum(a), self.num_drafts - a[-1])
        info = {"model_name": self.model_name, "engines": self.engines, "num_drafts": self.num_drafts,
                "num_draft_tokens": self.num_draft_tokens, "num_accepted_tokens": self.num_accepted_tokens}
        return Observations(source, counts=counts, geometric=geo, info=info, warnings=warnings)


def _strip_total(name: str) -> str | None:
    """Counter family name of a sample name (``_total`` optional); ``None`` for ``_created`` samples."""
    if name.endswith("_created"):
        return None
    return name.removesuffix("_total")


def counters_from_samples(samples: Iterable[tuple[str, dict[str, str], float | list[float]]],
                          model_name: str | None = None, field_name: str = "vllm-metrics") -> VllmCounters:
    """Collect the spec-decode counters of one model from samples ``(name, labels, value or values)``."""
    scalars: dict[str, dict[tuple, float]] = {NUM_DRAFTS: {}, NUM_DRAFT_TOKENS: {}, NUM_ACCEPTED: {}}
    per_pos: dict[tuple, dict[int, float]] = {}
    models: set[str] = set()
    for name, labels, value in samples:
        fam = _strip_total(name)
        if fam not in scalars and fam != PER_POS:
            continue
        if "model_name" in labels:
            models.add(labels["model_name"])
        if model_name is not None and labels.get("model_name", model_name) != model_name:
            continue
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "position"))
        if fam == PER_POS:
            slot = per_pos.setdefault(key, {})
            if isinstance(value, list):  # get_metrics() Vector
                for i, v in enumerate(value):
                    slot[i] = slot.get(i, 0.0) + _count(v, name, field_name)
            else:
                require("position" in labels, field_name, f"{name} needs a 'position' label", labels)
                try:
                    pos = int(labels["position"])
                except ValueError:
                    raise InputError(field_name, f"{name}: position must be an integer", labels["position"]) from None
                require(0 <= pos < MAX_POSITIONS, field_name, f"{name}: position must be in [0, {MAX_POSITIONS})", pos)
                slot[pos] = slot.get(pos, 0.0) + _count(value, name, field_name)
        else:
            scalars[fam][key] = scalars[fam].get(key, 0.0) + _count(value, name, field_name)
    if model_name is None:
        require(len(models) <= 1, field_name,
                "metrics hold several models; choose one with --model-name", ", ".join(sorted(models)))
    else:
        require(model_name in models or not models, field_name,
                f"holds no spec-decode metrics for model_name {model_name!r}", "models " + ", ".join(sorted(models)))
        models = {model_name} if models else models
    require(bool(scalars[NUM_DRAFTS]), field_name,
            f"missing metric {NUM_DRAFTS} (was speculative decoding on, and is this vLLM's /metrics?)")
    require(bool(per_pos), field_name, f"missing metric {PER_POS} (per-position accepted counts)")
    require(set(per_pos) <= set(scalars[NUM_DRAFTS]), field_name,
            f"{PER_POS} has label sets without a matching {NUM_DRAFTS}", sorted(set(per_pos) - set(scalars[NUM_DRAFTS])))
    k = max(max(slot) for slot in per_pos.values()) + 1
    for key, slot in per_pos.items():
        missing = [i for i in range(k) if i not in slot]
        require(not missing, field_name, f"{PER_POS} lacks positions {missing} for labels {dict(key)}", sorted(slot))
    acc = [int(sum(slot[i] for slot in per_pos.values())) for i in range(k)]
    engines = sorted({dict(key).get("engine", "") for key in scalars[NUM_DRAFTS]} - {""})

    def total(fam: str) -> int | None:
        return int(sum(scalars[fam].values())) if scalars[fam] else None

    return VllmCounters(num_drafts=int(sum(scalars[NUM_DRAFTS].values())), accepted_per_pos=acc,
                        num_draft_tokens=total(NUM_DRAFT_TOKENS), num_accepted_tokens=total(NUM_ACCEPTED),
                        model_name=next(iter(models)) if len(models) == 1 else model_name, engines=engines)


def _count(v: object, name: str, field_name: str) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 and v == int(v)
    require(ok, field_name, f"{name}: counts must be finite integers >= 0", v)
    return float(v)


def metrics_to_json(metrics: Iterable[object]) -> list[dict]:
    """A JSON-ready dump of ``llm.get_metrics()`` (vLLM's Counter/Vector/Gauge/Histogram dataclasses)."""
    from dataclasses import asdict, is_dataclass

    out = []
    for m in metrics:
        d = asdict(m) if is_dataclass(m) else dict(m)  # type: ignore[call-overload]
        d["type"] = type(m).__name__.lower() if is_dataclass(m) else d.get("type", "")
        out.append(d)
    return out


def samples_from_get_metrics(data: object, field_name: str = "vllm-metrics") -> list[tuple[str, dict, object]]:
    """Samples of a ``get_metrics()`` JSON dump: a list (or ``{"metrics": [...]}``) of metric objects."""
    if isinstance(data, dict) and "metrics" in data:
        data = data["metrics"]
    require(isinstance(data, list), field_name, "a get_metrics() dump must be a JSON list of metric objects",
            type(data).__name__)
    out = []
    for i, m in enumerate(data):
        require(isinstance(m, dict) and isinstance(m.get("name"), str), field_name,
                f"entry {i} must be an object with a 'name'", m)
        labels = m.get("labels") or {}
        require(isinstance(labels, dict), field_name, f"entry {i}: labels must be an object", labels)
        labels = {str(k): str(v) for k, v in labels.items()}
        if "values" in m:
            require(isinstance(m["values"], list), field_name, f"entry {i}: values must be a list", m["values"])
            out.append((m["name"], labels, m["values"]))
        elif "value" in m:
            out.append((m["name"], labels, m["value"]))
    return out


def observations_from_vllm_metrics(where: str, model_name: str | None = None,
                                   field_name: str = "vllm-metrics") -> Observations:
    """From a Prometheus text file, a server's ``/metrics`` URL, or a ``get_metrics()`` JSON dump."""
    if re.match(r"^https?://", where):
        text = _fetch(where, field_name)
        kind = "prometheus text (scraped)"
    else:
        text = read_text(where, field_name)
        kind = "prometheus text"
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(field_name, f"looks like JSON but is not valid ({exc.msg} at line {exc.lineno})",
                             where) from None
        samples = samples_from_get_metrics(data, field_name)
        kind = "llm.get_metrics() dump"
    else:
        samples = parse_prometheus(text, field_name)
    counters = counters_from_samples(samples, model_name, field_name)
    obs = counters.observations(f"vllm metrics ({kind}): {where}")
    obs.info["format"] = kind
    return obs


def _fetch(url: str, field_name: str) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            raw = resp.read(64 * 1024 * 1024)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(field_name, "could not scrape the metrics URL", f"{url} ({exc})") from None
    text = raw.decode("utf-8", errors="replace")
    require(text.strip() != "", field_name, "the metrics endpoint returned nothing", url)
    return text


# =============================================================================== traces
def observations_from_trace(path: str, policy: str | None = None, field_name: str = "trace") -> Observations:
    """Verify ops of one of our traces, or of a published MineDraft trace (converted on reading)."""
    from minedraft.trace import read_records

    ops_by_policy: dict[str, list[dict]] = {}
    published = False
    for rec in read_records(path, field_name):
        if rec.get("type") == "header" and rec.get("schema") == "minedraft-published":
            published = True
        if rec.get("type") == "op" and rec.get("op") == "verify":
            ops_by_policy.setdefault(str(rec.get("policy", "")), []).append(rec)
    require(bool(ops_by_policy), field_name, "holds no verify ops (no speculative decoding steps)", path)
    if policy is None:
        require(len(ops_by_policy) == 1, field_name, "holds several policies; choose one with --policy",
                ", ".join(sorted(ops_by_policy)))
        policy = next(iter(ops_by_policy))
    require(policy in ops_by_policy, "--policy", "names no policy with verify ops in the trace",
            f"{policy} (found {', '.join(sorted(ops_by_policy))})")
    ops = ops_by_policy[policy]
    rows_acc: list[np.ndarray] = []
    rows_len: list[np.ndarray] = []
    steps: list[tuple[int, int, int]] = []
    nonuniform = 0
    for i, o in enumerate(ops):
        where = f"verify op {i} of policy {policy!r}"
        k = _int(o.get("k"), field_name, f"{where}: k")
        require(0 <= k <= MAX_POSITIONS, field_name, f"{where}: k must be in [0, {MAX_POSITIONS}]", k)
        acc = o.get("accepted")
        if isinstance(acc, list):
            ids = o.get("request_ids") or []
            a = _int_array(acc, field_name, f"{where}: accepted")
            require(len(ids) in (0, len(a)), field_name, f"{where}: one accepted count per request id",
                    (len(ids), len(a)))
            lens = o.get("verify_lengths")
            ln = _int_array(lens, field_name, f"{where}: verify_lengths") if lens is not None else np.full(len(a), k)
            require(len(ln) == len(a), field_name, f"{where}: one verify length per request", (len(ln), len(a)))
            probe = np.asarray(o.get("probe") or [False] * len(a), dtype=bool)
            require(len(probe) == len(a), field_name, f"{where}: one probe flag per request", (len(probe), len(a)))
            checked = (ln > 0) & ~probe
            require(bool(np.all((ln >= 0) & (ln <= MAX_POSITIONS))), field_name,
                    f"{where}: verify lengths must be in [0, {MAX_POSITIONS}]", ln.tolist())
            bad = checked & ((a < 0) | (a > ln))
            require(not bad.any(), field_name, f"{where}: accepted must be in [0, drafted] per request",
                    f"accepted {a.tolist()}, drafted {ln.tolist()}")
            rows_acc.append(a[checked])
            rows_len.append(ln[checked])
        elif "accepted_total" in o:
            total = _int(o.get("accepted_total"), field_name, f"{where}: accepted_total")
            rows = _int(o.get("drafted_rows", o.get("size", 0)), field_name, f"{where}: drafted rows")
            if k == 0 or rows == 0:
                require(total == 0, field_name, f"{where}: accepted tokens without drafted requests", total)
                continue
            require(total >= 0, field_name, f"{where}: accepted count must be >= 0", total)
            drafted = o.get("verify_len")
            drafted = rows * k if drafted is None else _int(drafted, field_name, f"{where}: verify_len")
            require(0 <= total <= drafted, field_name, f"{where}: accepted exceeds the drafted tokens",
                    f"accepted {total}, drafted {drafted}")
            if drafted != rows * k:
                nonuniform += 1  # TETRIS-style variable lengths: the split over requests is unknown
                continue
            steps.append((rows, k, total))
    label = "published MineDraft trace" if published else "trace"
    source = f"{label}: {path} (policy {policy})"
    if rows_acc:
        a, d = np.concatenate(rows_acc), np.concatenate(rows_len)
        require(len(a) > 0, field_name, "its verify ops checked no drafts", path)
        obs = Observations.from_rows(source, a, d, policy=policy, verify_ops=len(ops), checks=len(a))
        if steps:
            obs.warnings.append(f"{len(steps)} verify ops without per-request counts were ignored")
        return obs
    require(bool(steps), field_name,
            "no usable verify steps (every step drafted variable lengths per request, or none drafted)", path)
    arr = np.asarray(steps, dtype=np.int64)
    obs = Observations(source, steps=StepTotals(arr[:, 0], arr[:, 1], arr[:, 2]),
                       info={"policy": policy, "verify_ops": len(ops), "steps_used": len(steps),
                             "steps_skipped_variable_length": nonuniform})
    obs.warnings.append("per-step totals only (no per-request counts): the curve is a model fit")
    if nonuniform:
        obs.warnings.append(f"{nonuniform} steps with variable per-request draft lengths (TETRIS) were left out")
    return obs


def _int(v: object, field_name: str, what: str) -> int:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v)
    require(ok, field_name, f"{what} must be an integer", v)
    return int(v)


def _int_array(v: object, field_name: str, what: str) -> np.ndarray:
    require(isinstance(v, list), field_name, f"{what} must be a list of integers", v)
    return np.asarray([_int(x, field_name, what) for x in v], dtype=np.int64)  # type: ignore[union-attr]


# =============================================================================== provenance
def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(argv: list[str] | None, inputs: dict | None = None, **more: object) -> dict:
    """Command, date, versions and inputs of a calibration run."""
    import platform

    from minedraft import __version__

    args = sys.argv[1:] if argv is None else argv
    return {"command": "minedraft-calibrate " + shlex.join(args),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "minedraft": __version__, "python": platform.python_version()} | (
        {"inputs": inputs} if inputs else {}) | more


__all__ = ["CI_METHODS", "FITS", "CurveEstimate", "Observations", "PositionCounts", "StepTotals", "VllmCounters",
           "binomial_interval", "counters_from_samples", "estimate", "fit_geometric_totals",
           "geometric_totals_loglik", "metrics_to_json", "observations_from_trace", "observations_from_vllm_metrics",
           "parse_prometheus", "provenance", "samples_from_get_metrics"]

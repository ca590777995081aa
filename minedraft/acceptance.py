"""Acceptance curves: how many draft tokens the target accepts.

Convention (vLLM's ``synthetic_acceptance_rates``): ``rates[i]`` is the *unconditional* probability that
the first ``i + 1`` draft tokens are all accepted, so the curve is non-increasing in [0, 1]. The
conditional rate of position ``i`` is ``rates[i] / rates[i - 1]`` (vLLM's
``unconditional_to_conditional_rates``), and the number ``A`` of accepted draft tokens out of ``k``
satisfies ``P(A >= j) = rates[j - 1]``.

A curve may carry per-request heterogeneity: each request draws its own geometric acceptance
probability from ``Beta(mean * c, (1 - mean) * c)`` (``c`` the concentration). The population curve is
then the Beta moments ``rates[i] = E[alpha ** (i + 1)]``: averaged over requests, acceptance follows
``rates``. Averaged over verification steps (vLLM's mean acceptance length) it is lower, because hard
requests need more steps; TETRIS can exploit the spread.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minedraft.errors import InputError, read_json, require

#: Longest curve we accept (no speculative method drafts more tokens than this).
MAX_POSITIONS = 64
_RATE_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class AcceptanceCurve:
    """Per-position unconditional acceptance rates, optionally with per-request Beta heterogeneity."""

    rates: tuple[float, ...]
    #: Beta concentration ``a + b`` of per-request geometric alphas; ``None`` = every request alike.
    concentration: float | None = None
    #: Mean of the per-request Beta (the population's per-token acceptance probability).
    beta_mean: float | None = None
    #: Where the curve came from (for reports and provenance).
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        rates = tuple(float(r) for r in self.rates)
        object.__setattr__(self, "rates", rates)
        require(1 <= len(rates) <= MAX_POSITIONS, "rates", f"need 1..{MAX_POSITIONS} positions", len(rates))
        ok = all(math.isfinite(r) and -_RATE_TOL <= r <= 1 + _RATE_TOL for r in rates) and all(
            rates[i] <= rates[i - 1] + _RATE_TOL for i in range(1, len(rates))
        )
        require(ok, "rates", "must be non-increasing in [0, 1]", ",".join(f"{r:g}" for r in rates))
        object.__setattr__(self, "rates", tuple(min(1.0, max(0.0, r)) for r in rates))
        if self.concentration is not None:
            c, m = self.concentration, self.beta_mean
            require(math.isfinite(c) and c > 0, "concentration", "must be a finite number > 0", c)
            require(m is not None and 0 < m < 1, "beta_mean", "must be in (0, 1) with a concentration", m)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def geometric(cls, alpha: float, positions: int = 10) -> AcceptanceCurve:
        """I.i.d. acceptance with probability ``alpha`` per token: ``rates[i] = alpha ** (i + 1)``."""
        require(math.isfinite(alpha) and 0 <= alpha <= 1, "alpha", "must be in [0, 1]", alpha)
        return cls(tuple(alpha ** (i + 1) for i in range(positions)), source=f"geometric({alpha:g})")

    @classmethod
    def from_conditional(cls, conditional: list[float] | tuple[float, ...]) -> AcceptanceCurve:
        """From conditional per-position rates ``c[i] = P(i accepted | all before accepted)``."""
        c = [float(x) for x in conditional]
        require(
            len(c) > 0 and all(math.isfinite(x) and 0 <= x <= 1 for x in c),
            "conditional",
            "conditional rates must be in [0, 1]",
            c,
        )
        return cls(tuple(np.cumprod(c).tolist()), source="conditional")

    @classmethod
    def from_mean_length(cls, length: float, positions: int) -> AcceptanceCurve:
        """vLLM's minimum-variance schedule for a mean acceptance length (bonus token included)."""
        require(positions >= 1, "positions", "must be >= 1", positions)
        require(
            math.isfinite(length) and 1 <= length <= positions + 1,
            "mean_length",
            f"must be in [1, {positions + 1}]",
            length,
        )
        drafts = length - 1
        full = int(drafts)
        rates = ([1.0] * full + [drafts - full] + [0.0] * positions)[:positions]
        return cls(tuple(rates), source=f"mean_length({length:g})")

    @classmethod
    def from_counts(cls, num_drafts: int, accepted_per_pos: list[int] | tuple[int, ...]) -> AcceptanceCurve:
        """From vLLM's spec-decode counters: ``accepted_per_pos[i]`` drafts had position ``i`` accepted."""
        require(num_drafts > 0, "num_drafts", "must be > 0", num_drafts)
        counts = [int(x) for x in accepted_per_pos]
        require(
            all(0 <= x <= num_drafts for x in counts),
            "accepted_per_pos",
            f"counts must be in [0, num_drafts={num_drafts}]",
            counts,
        )
        return cls(tuple(x / num_drafts for x in counts), source="counts")

    @classmethod
    def from_accepted(cls, accepted: np.ndarray, drafted: np.ndarray | int) -> AcceptanceCurve:
        """From observed accepted counts per (request, step), each out of ``drafted`` draft tokens.

        ``rates[i]`` is estimated among the observations that drafted at least ``i + 1`` tokens.
        """
        a = np.asarray(accepted, dtype=np.int64)
        d = np.broadcast_to(np.asarray(drafted, dtype=np.int64), a.shape)
        require(a.size > 0, "accepted", "need at least one observation", a.size)
        require(bool(np.all((a >= 0) & (a <= d))), "accepted", "each count must be in [0, drafted]")
        rates = []
        for i in range(int(d.max())):
            seen = d >= i + 1
            rates.append(float(np.mean(a[seen] >= i + 1)))
        # Estimates per position come from different subsets; enforce monotonicity (running minimum).
        return cls(tuple(np.minimum.accumulate(rates).tolist()), source="observed")

    @classmethod
    def beta_mixture(cls, mean: float, concentration: float, positions: int = 10) -> AcceptanceCurve:
        """Per-request alpha ~ Beta(mean, concentration); the curve holds the population moments."""
        require(math.isfinite(mean) and 0 < mean < 1, "alpha", "must be in (0, 1) for a Beta spread", mean)
        require(
            math.isfinite(concentration) and concentration > 0, "concentration", "must be > 0", concentration
        )
        a, b = mean * concentration, (1 - mean) * concentration
        m = np.arange(positions)
        rates = np.cumprod((a + m) / (a + b + m))  # E[alpha^(i+1)] = prod_{m<=i} (a+m)/(a+b+m)
        return cls(
            tuple(rates.tolist()),
            concentration=concentration,
            beta_mean=mean,
            source=f"beta(mean={mean:g}, c={concentration:g})",
        )

    # ---------------------------------------------------------------- properties
    @property
    def positions(self) -> int:
        return len(self.rates)

    @property
    def conditional(self) -> tuple[float, ...]:
        """Per-position conditional rates, as vLLM's synthetic sampler uses them."""
        prev = (1.0, *self.rates[:-1])
        return tuple(r / q if q > 0 else 0.0 for r, q in zip(self.rates, prev))

    @property
    def heterogeneous(self) -> bool:
        return self.concentration is not None

    def expected_tokens(self, k: int) -> float:
        """E[1 + A]: tokens a request gains per verification of ``k`` drafts (bonus included).

        This is *the* formula for the mean acceptance length; theory and tests import it.
        For a geometric curve it equals ``(1 - alpha ** (k + 1)) / (1 - alpha)``.
        """
        self.check_k(k)
        return 1.0 + float(sum(self.rates[:k]))

    def check_k(self, k: int, field: str = "k") -> None:
        require(
            0 <= k <= self.positions,
            field,
            f"the acceptance curve has {self.positions} positions, so k must be in [0, {self.positions}]",
            k,
        )

    def vllm_rates(self, k: int) -> list[float]:
        """The ``synthetic_acceptance_rates`` list vLLM takes for ``num_speculative_tokens = k``."""
        self.check_k(k)
        return list(self.rates[:k])

    # -------------------------------------------------------------------- sampling
    def request_alphas(self, rng: np.random.Generator, n: int) -> np.ndarray | None:
        """Per-request geometric alphas drawn from the Beta, or ``None`` for a homogeneous curve."""
        if not self.heterogeneous:
            return None
        c, m = self.concentration, self.beta_mean
        return rng.beta(m * c, (1 - m) * c, size=n)

    def sample(self, rng: np.random.Generator, k: np.ndarray | int, alphas: np.ndarray | None = None,
               size: int | None = None) -> np.ndarray:
        """Accepted draft tokens per request, each out of ``k`` (scalar or per-request array).

        With ``alphas`` (per-request geometric probabilities from :meth:`request_alphas`) acceptance is
        geometric per request; otherwise it follows the population ``rates``.
        """
        n = size if size is not None else (len(alphas) if alphas is not None else np.size(k))
        u = rng.random(n)
        kk = np.broadcast_to(np.asarray(k, dtype=np.int64), (n,))
        if alphas is not None:
            with np.errstate(divide="ignore"):
                run = np.floor(np.log(u) / np.log(np.clip(alphas, 1e-300, 1.0 - 1e-16)))
            return np.minimum(run, kk).astype(np.int64)
        kmax = int(kk.max()) if n else 0
        r = np.asarray(self.rates[:kmax])
        accepted = (u[:, None] < r[None, :]).sum(axis=1)
        return np.minimum(accepted, kk)

    def confidence(self, positions: int, alphas: np.ndarray | None, n: int) -> np.ndarray:
        """An idealised drafter's cumulative log-probability per request and draft position.

        TETRIS ranks draft prefixes by this. With per-request alphas it is ``(j + 1) * log(alpha_i)``;
        without, every request has the population ``log(rates[j])`` and TETRIS cannot tell them apart.
        """
        j = np.arange(1, positions + 1)
        with np.errstate(divide="ignore"):
            if alphas is not None:
                return np.log(np.clip(alphas, 1e-300, 1.0))[:, None] * j[None, :]
            row = np.log(np.maximum(np.asarray(self.rates[:positions]), 1e-300))
            return np.broadcast_to(row, (n, positions))

    # ------------------------------------------------------------------ I/O
    def to_json(self) -> dict:
        out: dict = {"kind": "minedraft.acceptance_curve", "rates": list(self.rates)}
        if self.heterogeneous:
            out["beta"] = {"mean": self.beta_mean, "concentration": self.concentration}
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_json(cls, data: object, field: str = "curve") -> AcceptanceCurve:
        require(isinstance(data, dict), field, "must hold a JSON object with a 'rates' list", type(data).__name__)
        assert isinstance(data, dict)
        if "beta" in data:
            beta = data["beta"]
            require(isinstance(beta, dict) and {"mean", "concentration"} <= set(beta), f"{field}: beta",
                    "must be an object with 'mean' and 'concentration'", beta)
            positions = data.get("positions", len(data.get("rates", [])) or 10)
            require(isinstance(positions, int) and 1 <= positions <= MAX_POSITIONS, f"{field}: positions",
                    f"must be an integer in [1, {MAX_POSITIONS}]", positions)
            mean, conc = beta["mean"], beta["concentration"]
            require(_is_number(mean) and _is_number(conc), f"{field}: beta", "mean and concentration must be numbers",
                    beta)
            try:
                return cls.beta_mixture(float(mean), float(conc), positions)
            except InputError as exc:
                raise exc.relabel(field) from None
        rates = data.get("rates")
        require(isinstance(rates, list) and all(_is_number(r) for r in rates), f"{field}: rates",
                "must be a list of numbers", rates)
        try:
            return cls(tuple(float(r) for r in rates), source=str(data.get("source", "")))
        except InputError as exc:
            raise exc.relabel(field) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, field: str = "curve") -> AcceptanceCurve:
        return cls.from_json(read_json(path, field), field=str(path))

    @classmethod
    def parse(cls, text: str, positions: int = 10) -> AcceptanceCurve:
        """The CLI forms: ``0.8`` (geometric), ``0.9,0.76,0.62`` (rates), or a path to a JSON file."""
        t = text.strip()
        require(t != "", "accept-curve", "give a number, a comma list of rates or a JSON file", text)
        if "," in t:
            parts = [p.strip() for p in t.split(",")]
            try:
                rates = [float(p) for p in parts]
            except ValueError:
                raise InputError("accept-curve", "rates must be numbers in [0, 1]", text) from None
            require(all(math.isfinite(r) and 0 <= r <= 1 for r in rates)
                    and all(rates[i] <= rates[i - 1] for i in range(1, len(rates))),
                    "accept-curve", "rates must be non-increasing in [0, 1]", text)
            require(len(rates) <= MAX_POSITIONS, "accept-curve", f"at most {MAX_POSITIONS} rates", len(rates))
            return cls(tuple(rates), source=f"rates({t})")
        try:
            alpha = float(t)
        except ValueError:
            alpha = None
        if alpha is not None:
            require(math.isfinite(alpha) and 0 <= alpha <= 1, "accept-curve",
                    "a single number is a geometric acceptance probability in [0, 1]", text)
            return cls.geometric(alpha, positions)
        return cls.load(t, field="accept-curve")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

"""Per-request end-to-end latency under Poisson arrivals: a state-dependent queue approximation.

Requests arrive at rate ``lambda``; at most ``C`` run (the policy's capacity), the rest wait FIFO. With
``n`` running, a request takes one step of its own every ``cycle(min(n, C))`` seconds
(:func:`minedraft.theory.serving.cycle_time`, any step-time model) and needs ``m`` steps
(``theory.steps``). The number in the system is approximated by a birth-death chain with departure rate
``mu(n) = min(n, C) / (m cycle(min(n, C)))`` (exact for exponential service; processor-sharing-like
insensitivity makes it good for the time in service), with two corrections:

- waiting in the queue scales by ``(1 + c_s^2) / 2`` (Allen-Cunneen), ``c_s^2`` the squared coefficient
  of variation of a request's step count (service is far from exponential: nearly deterministic);
- prefill steps stall every running request: arrivals during one engine step share one prefill step
  (target, then drafter) of ``b`` prompts, so decoding keeps only ``1 - lambda cost(b) / b`` of the time;
  an arrival also waits for its own prefill ``p`` and, on average, half a step of the running batch.

Mean E2E = ``(E[N_service] / lambda) + W_q + p + cycle / 2``. Validated against the simulator in
``tests/test_theory_sim.py`` (constant step times, several loads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from minedraft.theory.serving import Setup, cycle_time
from minedraft.theory.steps import mean_steps, steps_cv2
from scipy.optimize import brentq

from minedraft.errors import require
from minedraft.ops import DRAFT_PREFILL, PREFILL


@dataclass(frozen=True, slots=True)
class LoadPoint:
    policy: str
    k: int
    rate: float
    capacity: int
    #: Requests per second the policy can sustain at most (the chain is unstable beyond).
    max_rate: float
    e2e_s: float
    queue_wait_s: float
    #: Mean requests running (not waiting).
    mean_running: float
    #: Probability that more than ``threshold`` requests are in the system (see :func:`e2e_under_load`).
    p_above: float

    @property
    def stable(self) -> bool:
        return math.isfinite(self.e2e_s)


def _prefill_cost(policy: str, setup: Setup, prompt_len: float, batch: float) -> float:
    """One prefill step of ``batch`` prompts: target prefill, then the drafter's (step overhead incl.)."""
    c = setup.costs
    p = c.op_time(PREFILL, batch, prompt_len=prompt_len)
    if policy != "ar":
        p += c.op_time(DRAFT_PREFILL, batch, prompt_len=prompt_len)
    return p + (c.step_overhead_s if p > 0 else 0.0)


def _decode_share(policy: str, setup: Setup, prompt_len: float, rate: float, step_s: float) -> tuple[float, float]:
    """Share of time left for decoding, and an arrival's own prefill step.

    Arrivals during one engine step (``step_s``) are prefilled together: ``b = x / (1 - e^-x)`` prompts
    per prefill step, ``x = rate * step_s`` (Poisson), so prefill steps take ``rate / b * cost(b)`` of the time.
    """
    x = rate * step_s
    b = x / -math.expm1(-x) if x > 1e-12 else 1.0
    cost = _prefill_cost(policy, setup, prompt_len, b)
    return 1.0 - rate / b * cost, cost


def e2e_under_load(policy: str, setup: Setup, k: int, rate: float, output_len: int | Sequence[int],
                   prompt_len: float = 0.0, threshold: int | None = None) -> LoadPoint:
    """Mean E2E latency at Poisson ``rate`` (requests/s). ``threshold`` (default max_num_seqs): report
    ``P(N > threshold)``, e.g. how often PSD's doubled capacity is in use."""
    require(rate > 0 and math.isfinite(rate), "rate", "must be a finite rate > 0", rate)
    lens = np.atleast_1d(np.asarray(output_len, dtype=np.int64))
    cap = setup.capacity(policy)
    m, cs2 = _service(policy, setup.curve, k, tuple(lens.tolist()))
    cycles_steps = [cycle_time(policy, setup, k, n) for n in range(1, cap + 1)]
    cycles = np.array([c for c, _ in cycles_steps])
    steps_per_cycle = np.array([s for _, s in cycles_steps])
    base = np.arange(1, cap + 1) / (m * cycles)  # departure rate with n = 1..cap running, no prefill
    thr = setup.max_num_seqs if threshold is None else threshold
    half_step = cycles[0] / 2 if lens.max() > 1 else 0.0
    # Prefill stalls: evaluate the engine step at the running count the chain without them predicts.
    n_bar = _chain(rate, base, cap, thr)[1] if rate < base[-1] else cap
    i = min(cap, max(1, round(n_bar))) - 1
    slow, p = _decode_share(policy, setup, prompt_len, rate, cycles[i] / steps_per_cycle[i])
    mu = base * max(slow, 0.0)
    max_rate = float(mu[-1])
    if slow <= 0 or rate >= mu[-1]:
        return LoadPoint(policy, k, rate, cap, max_rate, math.inf, math.inf, float(cap), 1.0)
    queued, running, above = _chain(rate, mu, cap, thr)
    wq = queued / rate * (1 + cs2) / 2
    service = running / rate
    return LoadPoint(policy, k, rate, cap, max_rate, service + wq + p + half_step, wq, running, float(above))


@lru_cache(maxsize=256)
def _service(policy: str, curve, k: int, lens: tuple[int, ...]) -> tuple[float, float]:
    """Mean steps per request and their squared coefficient of variation (cached: sweeps call it often)."""
    arr = np.asarray(lens, dtype=np.int64)
    m = max(mean_steps(policy, curve, k, arr - 1), 1e-12)
    cs2 = steps_cv2(policy, curve, k, arr - 1)
    return m, cs2


def _chain(rate: float, mu: np.ndarray, cap: int, thr: int) -> tuple[float, float, float]:
    """Birth-death chain: mean queued, mean running, P(N > thr)."""
    # pi(n) proportional to prod_{j<=n} rate / mu(j); beyond cap a geometric tail with ratio r = rate / mu(cap).
    logw = np.concatenate([[0.0], np.cumsum(np.log(rate / mu))])  # n = 0..cap
    w = np.exp(logw - logw.max())
    r = rate / mu[-1]
    tail = w[-1] * r / (1 - r)  # sum_{n > cap} w(n)
    z = w.sum() + tail
    n_idx = np.arange(cap + 1)
    running = (w @ n_idx + cap * tail) / z
    queued = w[-1] * r / (1 - r) ** 2 / z  # sum_{j >= 1} j w(cap) r^j
    above = (w[n_idx > thr].sum() + tail) / z if thr < cap else (w[-1] * r ** (thr - cap + 1) / (1 - r)) / z
    return float(queued), float(running), float(above)


def max_rate(policy: str, setup: Setup, k: int, output_len: int | Sequence[int], prompt_len: float = 0.0) -> float:
    """Highest sustainable Poisson rate (requests/s) under the approximation."""
    lens = np.atleast_1d(np.asarray(output_len, dtype=np.int64))
    cap = setup.capacity(policy)
    m = _service(policy, setup.curve, k, tuple(lens.tolist()))[0]
    cycle, steps = cycle_time(policy, setup, k, cap)
    mu_cap = cap / (m * cycle)

    def short(rate: float) -> float:  # rate that the decode capacity left over can serve, minus rate
        return mu_cap * max(_decode_share(policy, setup, prompt_len, rate, cycle / steps)[0], 0.0) - rate

    if short(mu_cap * (1 - 1e-9)) >= 0:
        return mu_cap
    return float(brentq(short, 0.0, mu_cap * (1 - 1e-9), xtol=1e-9 * mu_cap))


def crossover_rate(a: str, b: str, setup_a: Setup, setup_b: Setup, k_a: int, k_b: int,
                   output_len: int | Sequence[int], prompt_len: float = 0.0) -> dict:
    """Where ``b``'s mean E2E latency crosses ``a``'s as the Poisson rate grows.

    Returns ``{"rate": r or None, "b_better_below": bool, "max_rate_a", "max_rate_b"}``; ``rate`` is None when
    one policy is better at every load both sustain (the field says which).
    """
    ra = max_rate(a, setup_a, k_a, output_len, prompt_len)
    rb = max_rate(b, setup_b, k_b, output_len, prompt_len)
    hi = min(ra, rb) * (1 - 1e-6)

    def gap(x: float) -> float:
        ea = e2e_under_load(a, setup_a, k_a, x, output_len, prompt_len).e2e_s
        eb = e2e_under_load(b, setup_b, k_b, x, output_len, prompt_len).e2e_s
        return eb - ea

    lo = hi * 1e-4
    grid = np.geomspace(lo, hi, 60)
    vals = np.array([gap(x) for x in grid])
    out = {"rate": None, "b_better_below": bool(vals[0] < 0), "max_rate_a": ra, "max_rate_b": rb}
    sign = np.sign(vals)
    flips = np.nonzero(sign[:-1] * sign[1:] < 0)[0]
    if len(flips):
        i = int(flips[0])
        out["rate"] = float(brentq(gap, grid[i], grid[i + 1], xtol=1e-9 * hi))
    return out

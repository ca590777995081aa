"""Throughput, per-token latency and offline makespan of AR, SD, PSD and PEARL under any step-time model.

A step's duration comes from :meth:`minedraft.costs.StepCosts.op_time` only, so the same formulas hold
for constant step times, the affine model ``T(b, n) = a + beta b n`` (:class:`minedraft.latency.Affine`)
and the roofline or measured models; only the evaluation of ``V(b) = op_time(verify, b, k)`` and
``D(b) = op_time(draft, b, k)`` changes. ``o`` is the per-step overhead, ``n`` the requests in flight.

- AR:    one step ``o + T_t(n, 1)`` advances every request by 1 token;
- SD:    one step ``o + D(n) + V(n)`` advances every request by ``E = E[1 + A]`` tokens on average
         (drafter on its own GPU: both ops carry a transfer);
- PSD:   halves ``h1 = ceil(n/2)``, ``h2 = n - h1``; one step verifies one half while drafting the other,
         ``o + max(V(h_i), D(h_j))``, so a request steps once per *cycle* of two steps
         ``2o + max(V(h1), D(h2)) + max(V(h2), D(h1))``; with one half empty (or ``split=False``: the auto
         schedule's one batch, :mod:`minedraft.theory.split`) it is sequential SD with PSD's drafter;
- PEARL: one step ``o + max(V(n, pi_V k), D(n))`` advances every request by ``pi_V E + (1 - pi_V)``,
         ``pi_V`` the stationary share of requests with valid drafts (see ``theory.steps``); the verify
         pass checks ``pi_V k`` drafts per request on average (the simulator charges the mean length).

Steady state: throughput ``n * tokens_per_step / cycle``; per-token latency (TPOT) ``cycle /
tokens_per_step``. Offline (``N`` requests at once, output ``L``): every slot runs ``N / n`` requests one
after another, each for ``m(L - 1)`` of its steps (``theory.steps``, exact in ``L``), so the decode part of
the makespan is ``N / n * m(L - 1) * cycle``; the drain at the end is ignored (relative error of order
``n / N``). Prefill steps (no overlap in any policy; each pays the step overhead even when the prefill
itself is free) add an approximate ``N / b_p`` prefill steps of ``b_p`` prompts, ``b_p`` the mean
number of slots freed per step when any is (a Poisson estimate); AR's waves are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from minedraft.theory.steps import mean_steps, pearl_valid_share, tokens_per_step

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.errors import require
from minedraft.ops import DECODE, DRAFT, DRAFT_PREFILL, PREFILL, VERIFY

POLICIES = ("ar", "sd", "psd", "pearl")


@dataclass(frozen=True, slots=True)
class Setup:
    """What a policy runs on: acceptance, step costs, capacity knobs, GPUs, mean context."""

    curve: AcceptanceCurve | None
    costs: StepCosts
    max_num_seqs: int
    psd_capacity: str = "double"
    sd_drafter: str = "shared"
    target_gpus: int = 1
    #: Mean cached tokens per running request (prompt + half the output): roofline models use it.
    context_len: float = 0.0
    #: PSD/PEARL drafter: own GPU (published) or shared with the target (overlapping ops: StepCosts.shared_pair).
    psd_drafter: str = "own"

    def __post_init__(self) -> None:
        require(self.psd_capacity in ("double", "split"), "psd_capacity", "must be double or split",
                self.psd_capacity)
        require(self.sd_drafter in ("shared", "own"), "sd_drafter", "must be shared or own", self.sd_drafter)
        require(self.psd_drafter in ("own", "shared"), "psd_drafter", "must be own or shared", self.psd_drafter)
        require(self.max_num_seqs >= 1, "max_num_seqs", "must be >= 1", self.max_num_seqs)

    def capacity(self, policy: str) -> int:
        """Requests in flight at most (PSD double: each half holds max_num_seqs)."""
        if policy == "psd" and self.psd_capacity == "double":
            return 2 * self.max_num_seqs
        return self.max_num_seqs

    def gpus(self, policy: str) -> int:
        own = (policy in ("psd", "pearl") and self.psd_drafter == "own") or (policy == "sd" and self.sd_drafter == "own")
        return self.target_gpus + (1 if own else 0)

    def drafter_process(self, policy: str) -> bool:
        """Whether the drafter runs in a process of its own (the plugin's costs per drafter op apply)."""
        return policy in ("psd", "pearl") or (policy == "sd" and self.sd_drafter == "own")

    def overlapped(self, policy: str, verify_s: float, draft_s: float, draft_batch: float, draft_k: float) -> float:
        """How long a verify and a draft op that run together take (the longer of the two): on one shared GPU
        they slow each other (:meth:`StepCosts.shared_pair`)."""
        if policy in ("psd", "pearl") and self.psd_drafter == "shared":
            verify_s, draft_s = self.costs.shared_pair(verify_s, draft_s, draft_batch, draft_k, self.context_len)
        return max(verify_s, draft_s)

    def cross(self, policy: str) -> bool:
        """Whether drafts and verification results cross GPUs (transfers apply)."""
        return self.gpus(policy) > self.target_gpus

    def with_(self, **changes) -> Setup:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Steady:
    """One policy with a full running set of ``in_flight`` requests, in steady state."""

    policy: str
    k: int
    in_flight: int
    gpus: int
    #: Seconds between two steps of one request (PSD: two engine steps).
    cycle_s: float
    #: Tokens a request gains per step of its own.
    tokens_per_step: float
    #: Engine steps per cycle (2 for PSD with both halves non-empty, else 1).
    steps_per_cycle: int = 1

    @property
    def throughput(self) -> float:
        """Output tokens per second."""
        return self.in_flight * self.tokens_per_step / self.cycle_s

    @property
    def throughput_per_gpu(self) -> float:
        return self.throughput / self.gpus

    @property
    def tpot_s(self) -> float:
        """Seconds per output token of one request (its per-token latency)."""
        return self.cycle_s / self.tokens_per_step


def _t(costs: StepCosts, kind: str, batch: float, k: float, ctx: float, cross: bool, own: bool = False,
       swap: bool = False) -> float:
    return costs.op_time(kind, batch, k=k, context_len=ctx, cross_device=cross, own_process=own, swap=swap)


def psd_ops(setup: Setup, k: float) -> tuple[Callable[..., float], Callable[..., float]]:
    """PSD's op times as functions of the rows ``b``: ``draft(b)`` (the drafter in its own process, a transfer
    when it has its own GPU) and ``verify(b, swap=False)`` (``swap``: the batch alternates with the other half's)."""
    c, cross = setup.costs, setup.cross("psd")
    return (partial(c.op_time, DRAFT, k=k, context_len=setup.context_len, cross_device=cross,
                    own_process=setup.drafter_process("psd")),
            partial(c.op_time, VERIFY, k=k, context_len=setup.context_len, cross_device=cross))


def cycle_time(policy: str, setup: Setup, k: int, in_flight: int, split: bool = True) -> tuple[float, int]:
    """Seconds between two steps of one request with ``in_flight`` requests running, and engine steps per cycle.

    ``split`` (PSD only): False runs all ``in_flight`` rows as one batch, SD with PSD's drafter (the auto
    schedule's other mode, :mod:`minedraft.theory.split`); True splits them into two halves.
    """
    c, ctx, n = setup.costs, setup.context_len, in_flight
    o = c.step_overhead_s
    cross, own, both = setup.cross(policy), setup.drafter_process(policy), setup.overlapped
    if policy == "ar":
        return o + c.op_time(DECODE, n, context_len=ctx), 1
    if policy == "sd":
        return o + _t(c, DRAFT, n, k, ctx, cross, own) + _t(c, VERIFY, n, k, ctx, cross), 1
    if policy == "psd":
        draft, verify = psd_ops(setup, k)
        h1, h2 = (math.ceil(n / 2), n // 2) if split else (n, 0)
        if h2 == 0:  # one batch (one half empty, or not split): sequential SD with PSD's drafter
            return o + draft(h1) + verify(h1), 1
        # the halves alternate: every verify swaps the target's batch
        v1, v2, d1, d2 = verify(h1, swap=True), verify(h2, swap=True), draft(h1), draft(h2)
        return 2 * o + both(policy, v1, d2, h2, k) + both(policy, v2, d1, h1, k), 2
    if policy == "pearl":  # the drafter runs k + 1 forwards: a guess of the target's next token, then k drafts
        mean_len = pearl_valid_share(setup.curve, k) * k
        return o + both(policy, _t(c, VERIFY, n, mean_len, ctx, cross), _t(c, DRAFT, n, k + 1, ctx, cross, own),
                        n, k + 1), 1
    raise ValueError(f"unknown policy {policy!r}")


def steady(policy: str, setup: Setup, k: int, in_flight: int | None = None) -> Steady:
    """Steady state of ``policy`` with ``in_flight`` requests (default: its capacity under ``setup``)."""
    n = setup.capacity(policy) if in_flight is None else int(in_flight)
    require(n >= 1, "in_flight", "must be >= 1", n)
    if policy != "ar":
        setup.curve.check_k(k)
    cycle, steps = cycle_time(policy, setup, k, n)
    return Steady(policy, k if policy != "ar" else 0, n, setup.gpus(policy), cycle,
                  tokens_per_step(policy, setup.curve, k), steps)


@dataclass(frozen=True, slots=True)
class Offline:
    """Offline makespan of ``num_requests`` requests submitted at once."""

    steady: Steady
    num_requests: int
    output_len: float
    #: Expected steps of its own per request (AR: L - 1).
    steps_per_request: float
    decode_s: float
    prefill_s: float

    @property
    def makespan_s(self) -> float:
        return self.decode_s + self.prefill_s

    @property
    def latency_per_request_s(self) -> float:
        """The published "latency": makespan / requests (inverse request throughput)."""
        return self.makespan_s / self.num_requests

    @property
    def throughput(self) -> float:
        return self.num_requests * self.output_len / self.makespan_s


def _prefill_total(policy: str, setup: Setup, st: Steady, num_requests: int, steps: float,
                   prompt_len: float) -> float:
    """Approximate prefill time: ``N / b_p`` prefill steps (target then drafter) of ``b_p`` prompts."""
    c = setup.costs
    if policy == "ar":  # AR admits a whole wave of in_flight prompts at once
        waves = math.ceil(num_requests / st.in_flight)
        return waves * (c.step_overhead_s + c.op_time(PREFILL, st.in_flight, prompt_len=prompt_len))
    advanced = st.in_flight / st.steps_per_cycle  # requests that take a step per engine step
    f = advanced / max(steps, 1.0)  # slots freed per engine step, on average
    b = min(float(st.in_flight), max(1.0, f / -math.expm1(-f))) if f > 0 else 1.0
    per_op = (c.step_overhead_s + c.op_time(PREFILL, b, prompt_len=prompt_len)
              + c.op_time(DRAFT_PREFILL, b, prompt_len=prompt_len))
    return num_requests / b * per_op if per_op > 0 else 0.0


def offline(policy: str, setup: Setup, k: int, num_requests: int, output_len: int | Sequence[int],
            prompt_len: float = 0.0, in_flight: int | None = None) -> Offline:
    """Expected offline makespan (drain ignored; prefill approximated, exact for AR).

    ``output_len``: one length for every request, or the requests' lengths (steps are averaged over them).
    """
    lens = np.atleast_1d(np.asarray(output_len, dtype=np.int64))
    require(num_requests >= 1, "num_requests", "must be >= 1", num_requests)
    require(lens.size >= 1 and bool(np.all(lens >= 1)), "output_len", "must be >= 1", output_len)
    cap = setup.capacity(policy) if in_flight is None else in_flight
    st = steady(policy, setup, k, min(cap, num_requests))
    steps = mean_steps(policy, setup.curve, k, lens - 1)  # the first token comes from the prefill
    if policy == "ar" and lens.size == 1:  # all alike: exact waves
        decode = math.ceil(num_requests / st.in_flight) * steps * st.cycle_s
    else:
        decode = num_requests / st.in_flight * steps * st.cycle_s
    prefill = _prefill_total(policy, setup, st, num_requests, steps, prompt_len)
    return Offline(st, num_requests, float(lens.mean()), steps, decode, prefill)

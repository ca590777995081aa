"""The SimPy driver: runs a policy's ops against latency models and acceptance draws.

One SimPy timeout per op, never one event per token or per request: each op's work (acceptance
draws, token accounting, metrics counters) is vectorised over its batch with numpy. Arrivals are fed to
the policy as simulated time passes. Acceptance is drawn per request per verification from the
:class:`~minedraft.acceptance.AcceptanceCurve`, from a generator seeded by ``seed`` (same seed, same run).
Ties at equal times follow SimPy's order (scheduling order), which a test pins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.ops import DRAFT, DRAFT_PREFILL, PREFILL, RESOURCES, TARGET, VERIFY, Op, OpResult
from minedraft.policies import POLICIES, PolicyConfig
from minedraft.trace import Trace, TraceRecorder
from minedraft.workload import Requests


class SimulationStuck(RuntimeError):
    """The policy has work but issues no op and nothing is in flight (a policy bug or impossible config)."""


@dataclass
class _Running:
    op: Op
    t_start: float
    t_end: float


def simulate(policy_name: str, requests: Requests, cfg: PolicyConfig, costs: StepCosts,
             curve: AcceptanceCurve | None = None, seed: int = 0, target_gpus: int = 1, details: bool = False,
             progress: Callable[[int], None] | None = None, config: dict | None = None) -> Trace:
    """Simulate one policy over ``requests``; returns its :class:`Trace`.

    ``target_gpus`` is the target's GPU count (its tensor-parallel size); policies that put the drafter on
    a GPU of its own add one. ``progress(n)`` is called with the number of requests newly finished.
    """
    policy = POLICIES[policy_name](cfg, requests.prompt_len, requests.output_len)
    if policy.speculative and curve is None:
        raise ValueError(f"policy {policy_name} speculates, so it needs an acceptance curve")
    n = len(requests)
    rng = np.random.default_rng([seed, 7])
    alphas = curve.request_alphas(np.random.default_rng([seed, 11]), n) if curve is not None else None
    cross = policy.uses_own_drafter_gpu()
    own_process = cross or policy_name in ("psd", "pearl")  # a drafter process of its own (drafter_op_s)
    # PSD/PEARL with the drafter on the target's GPU: ops started together time-share it
    shared = policy.speculative and not cross and policy_name in ("psd", "pearl") and (
        costs.shared_gpu_slowdown > 0 or costs.shared_verify_stretch > 0)
    last_verify = {"batch": None}
    rec = TraceRecorder(n, details=details)
    arrival = requests.arrival
    prompt_len = requests.prompt_len
    env = simpy.Environment()
    free = set(RESOURCES)
    state = {"wake": env.event(), "arrival_pending": False}
    ended: list[_Running] = []

    def finished_op(ev: simpy.Event) -> None:
        ended.append(ev.value)
        if not state["wake"].triggered:
            state["wake"].succeed()

    def arrived(_: simpy.Event) -> None:
        state["arrival_pending"] = False
        if not state["wake"].triggered:
            state["wake"].succeed()

    def k_ctx(op: Op) -> tuple[float, float]:
        """Tokens per row the op's forwards take (a verify's checks, a draft op's forwards) and its mean context."""
        reqs = op.reqs
        ctx = float(prompt_len[reqs].mean() + policy.generated[reqs].mean()) if len(reqs) else 0.0
        k = float(op.lengths.mean()) if (op.kind == VERIFY and op.lengths is not None) else op.k + op.extra_forwards
        return k, ctx

    def shared_times(ops: list[Op], times: list[float]) -> list[float]:
        """Durations of the target's op and the drafter's op started together on the one shared GPU."""
        (t_op, t), (d_op, d) = sorted(zip(ops, times), key=lambda x: x[0].resource != TARGET)
        k, ctx = k_ctx(d_op) if d_op.kind == DRAFT else (0.0, 0.0)
        t, d = costs.shared_pair(t, d, len(d_op.reqs) if d_op.kind == DRAFT else 0, k, ctx)
        return [t if op is t_op else d for op in ops]

    def duration(op: Op) -> float:
        reqs = op.reqs
        b = len(reqs)
        if op.kind in (PREFILL, DRAFT_PREFILL):
            prompt = op.chunk_tokens / b if op.chunk_tokens else float(prompt_len[reqs].mean())
            return costs.op_time(op.kind, b, prompt_len=prompt)
        k, ctx = k_ctx(op)
        swap = False
        if op.kind == VERIFY and policy_name == "psd":
            swap = last_verify["batch"] is not None and last_verify["batch"] != op.batch_id
            last_verify["batch"] = op.batch_id
        return costs.op_time(op.kind, b, k=k, context_len=ctx, cross_device=cross and op.kind in (DRAFT, VERIFY),
                             chunk_tokens=op.chunk_tokens, own_process=own_process, swap=swap)

    def start(op: Op, seconds: float) -> None:
        if op.resource not in free:
            raise AssertionError(f"{policy_name} started {op.kind} on busy resource {op.resource}")
        free.discard(op.resource)
        overhead = costs.step_overhead_s if op.new_step else 0.0
        t0 = env.now + overhead
        t1 = t0 + seconds
        ev = env.timeout(t1 - env.now, value=_Running(op, t0, t1))
        ev.callbacks.append(finished_op)

    def result_of(op: Op) -> OpResult:
        if op.kind == VERIFY:
            k = op.checks if op.checks is not None else op.verify_lengths
            a = alphas[op.reqs] if alphas is not None else None
            return OpResult(accepted=curve.sample(rng, k, a, size=len(op.reqs)))
        if op.kind == DRAFT and cfg.tetris_extra:
            a = alphas[op.reqs] if alphas is not None else None
            return OpResult(confidence=curve.confidence(op.k, a, len(op.reqs)))
        return OpResult()

    def run():
        i = 0  # next arrival
        in_flight = 0
        while True:
            j = int(np.searchsorted(arrival, env.now, side="right"))
            if j > i:
                policy.arrive(range(i, j))
                i = j
            ops = policy.next_ops(frozenset(free))
            times = [duration(op) for op in ops]
            if shared and {op.resource for op in ops} == set(RESOURCES):
                times = shared_times(ops, times)
            for op, seconds in zip(ops, times):
                start(op, seconds)
            in_flight += len(ops)
            if in_flight == 0 and i >= n:
                if not policy.idle:
                    raise SimulationStuck(f"{policy_name}: {policy.num_running} running, {len(policy.waiting)} "
                                          "waiting, but no op issued")
                return
            if i < n and not state["arrival_pending"] and (free or in_flight == 0):
                state["arrival_pending"] = True
                env.timeout(max(0.0, arrival[i] - env.now)).callbacks.append(arrived)
            yield state["wake"]
            state["wake"] = env.event()
            done = 0
            for r in ended:
                op = r.op
                res = result_of(op)
                before = policy.generated[op.reqs].copy() if details and op.kind != DRAFT else None
                fin = policy.on_done(op, res)
                gained = policy.generated[op.reqs] - before if before is not None and op.kind != PREFILL else None
                acc = res.accepted
                if acc is not None and op.checks is not None:  # PEARL's guess is not an accepted draft
                    acc = np.minimum(acc, op.verify_lengths)
                rec.op(op, r.t_start, r.t_end, acc, fin, gained, first=policy.take_first_tokens())
                free.add(op.resource)
                in_flight -= 1
                done += len(fin)
            ended.clear()
            if progress and done:
                progress(done)

    env.process(run())
    env.run()
    return rec.build(policy_name, target_gpus + (1 if cross else 0), arrival, prompt_len, requests.output_len,
                     config)


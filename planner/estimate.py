"""The theory's part of a plan: estimates for every candidate, and the rules that prune before simulating.

Per candidate, from :mod:`minedraft.theory` on the very step models and acceptance curve the simulator
will use (built from the point's ``minedraft-sim`` flags):

- ``max_rate``: the highest Poisson rate one replica sustains (:func:`minedraft.theory.load.max_rate`);
- ``light``: mean TTFT, TPOT and E2E at (almost) no load (:func:`~minedraft.theory.load.e2e_under_load`
  at 0.1% of ``max_rate``; TPOT from :func:`~minedraft.theory.serving.steady` at the mean running count);
- ``slo_rate``: the highest rate at which those *means* meet the SLO's targets (bisection).

PSD's ``auto`` schedule is not in these closed forms: every PSD candidate, ``auto`` or ``always``, is estimated
as two halves (``theory.serving``); the simulator runs its schedule (minedraft-sim's ``--psd-split``), and each
schedule keeps its own survivors (:func:`survivor_group`).

Pruning: a candidate whose no-load means already miss a p99 target cannot meet it (a p99 is not below
the mean of these right-skewed latencies), so it is dropped; k is searched per family at the batch
sizes the family runs (its best k at 1, 1/4, 1/2 and all of its capacity), and the rest are ranked by
``slo_rate``. The means are optimistic for a p99 target, so the ranking only picks which candidates the
simulator measures; it decides nothing on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from minedraft.planner.space import MAX_RATE_SHARE, Candidate, PlanInputs, Pruned, round_rate, sim_argv
from minedraft.planner.sweep import sim_inputs
from minedraft.theory.load import e2e_under_load, max_rate
from minedraft.theory.serving import Setup, steady

BISECT_STEPS = 14
LIGHT_SHARE = 1e-3


@dataclass(slots=True)
class Estimate:
    candidate: Candidate
    max_rate: float
    slo_rate: float
    light: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"max_rate_req_s": self.max_rate, "slo_rate_req_s": self.slo_rate,
                "no_load_mean_ms": {k: v for k, v in self.light.items()}}


class Context:
    """The plan's shared inputs, built once: the workload's lengths, step models and curves per candidate."""

    def __init__(self, inp: PlanInputs) -> None:
        self.inp = inp
        probe = Candidate("ar", inp.gpu_keys[0], inp.targets[0], None, 1, 0, 1)
        _, _, _, wl, _, _, _ = sim_inputs(sim_argv(probe, 1.0, inp))
        req = wl.generate()
        self.workload = wl
        self.output_lens = np.asarray(req.output_len)
        self.prompt_mean = float(np.mean(req.prompt_len))
        self.output_mean = float(np.mean(req.output_len))
        self._costs: dict = {}

    @property
    def tokens_per_request(self) -> float:
        return self.prompt_mean + self.output_mean

    def _models(self, c: Candidate) -> tuple:
        """(StepCosts, curve, timing info) that ``minedraft-sim`` builds for ``c`` (cached per model set)."""
        # PEARL's curve has one position more (minedraft-sim's acceptance_curve(extra=1)); PSD's schedule and
        # threshold change neither the step models nor the curve
        key = (c.policy == "ar", c.policy == "pearl", c.gpu, c.target, c.draft, c.tp, c.accept)
        if key not in self._costs:
            probe = replace(c, k=max(self.inp.ks) if c.policy != "ar" else 0, k_schedule=None)
            _, _, curve, _, costs, _, info = sim_inputs(sim_argv(probe, 1.0, self.inp))
            self._costs[key] = (costs, curve, info)
        return self._costs[key]

    def setup(self, c: Candidate) -> Setup:
        """The theory's Setup for ``c``: the step models and curve ``minedraft-sim`` builds for it."""
        costs, curve, _ = self._models(c)
        return Setup(curve, costs, c.max_num_seqs, c.psd_capacity, c.sd_drafter, c.tp,
                     context_len=self.prompt_mean + self.output_mean / 2)

    def latency_source(self, c: Candidate) -> str:
        return self._models(c)[2].get("latency_sources", "")


def theory_means(c: Candidate, setup: Setup, rate: float, ctx: Context) -> dict | None:
    """Mean TTFT, TPOT and E2E (ms) of ``c`` at Poisson ``rate`` per replica, or None when unstable."""
    lp = e2e_under_load(c.policy, setup, c.k, rate, ctx.output_lens, ctx.prompt_mean)
    if not lp.stable:
        return None
    n_min = 2 if c.policy == "psd" else 1
    n = min(setup.capacity(c.policy), max(n_min, round(lp.mean_running)))
    tpot = steady(c.policy, setup, c.k, n).tpot_s
    return {"ttft_ms": (lp.e2e_s - lp.mean_running / rate) * 1e3, "tpot_ms": tpot * 1e3, "e2e_ms": lp.e2e_s * 1e3}


def estimate(c: Candidate, ctx: Context) -> Estimate:
    """The theory's max rate, no-load means and SLO rate for one candidate."""
    setup = ctx.setup(c)
    slo = ctx.inp.slo
    mr = max_rate(c.policy, setup, c.k, ctx.output_lens, ctx.prompt_mean)
    light = theory_means(c, setup, mr * LIGHT_SHARE, ctx) or {}
    if not light or slo.ratio(light) > 1:
        return Estimate(c, mr, 0.0, light)
    hi = mr * (1 - 1e-6)
    top = theory_means(c, setup, hi, ctx)
    if top is not None and slo.ratio(top) <= 1:
        return Estimate(c, mr, hi, light)
    lo = mr * LIGHT_SHARE
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        m = theory_means(c, setup, mid, ctx)
        if m is not None and slo.ratio(m) <= 1:
            lo = mid
        else:
            hi = mid
    return Estimate(c, mr, lo, light)


def k_candidates(family: list[Candidate], ctx: Context) -> list[Candidate]:
    """A family's k values worth estimating: its best k by steady throughput at 1, 1/4, 1/2 and all of
    its capacity (the k that is best at a fixed running count is best for throughput and TPOT alike)."""
    c0 = family[0]
    if c0.policy == "ar" or len(family) == 1:
        return family
    setup = ctx.setup(c0)
    cap = setup.capacity(c0.policy)
    n_min = 2 if c0.policy == "psd" else 1
    keep = set()
    for n in sorted({max(n_min, cap // 4), max(n_min, cap // 2), cap, n_min}):
        best = max(family, key=lambda c: (steady(c.policy, setup, c.k, n).throughput, -c.k))
        keep.add(best.k)
    return [c for c in family if c.k in keep]


def rank_key(inp: PlanInputs, c: Candidate, rate_per_replica: float) -> tuple:
    """Sort key (smaller is better) of a candidate that sustains ``rate_per_replica`` within the SLO.

    With a target rate: feasible first (enough replicas fit the budget), then the cheapest deployment
    (GPUs x $/GPU-hour; GPUs when no prices), then the most headroom per GPU. Without: the most SLO
    goodput the budget carries, then the cheapest per request.
    """
    reps_max = inp.budget // c.gpus
    price = inp.price(c.gpu) or 1.0
    if rate_per_replica <= 0 or reps_max == 0:
        return (2, 0.0, 0.0)
    if inp.request_rate is not None:
        reps = math.ceil(inp.request_rate / rate_per_replica - 1e-9)
        if reps > reps_max:
            return (1, -reps_max * rate_per_replica, 0.0)
        return (0, reps * c.gpus * price, -rate_per_replica / c.gpus)
    return (0, -reps_max * rate_per_replica, c.gpus * price / rate_per_replica)


def survivor_group(c: Candidate) -> tuple:
    """Candidates that compete for the ``survivors`` places: one (policy, GPU type, target), and for PSD one
    schedule (the theory estimates ``auto`` and ``always`` alike, so each is simulated in its own right)."""
    return (c.policy, c.gpu, c.target) + ((c.psd_split,) if c.policy == "psd" else ())


def select(cands: list[Candidate], ctx: Context, pruned: Pruned) -> tuple[list[Estimate], dict[str, Estimate]]:
    """Estimate, prune and rank; returns the survivors (best first per group) and every estimate by id."""
    inp = ctx.inp
    families: dict[tuple, list[Candidate]] = {}
    for c in cands:
        families.setdefault(c.family, []).append(c)
    estimates: dict[str, Estimate] = {}
    groups: dict[tuple, list[Estimate]] = {}
    for fam in families.values():
        ks = k_candidates(fam, ctx)
        for c in fam:
            if c not in ks:
                pruned.add("k not best at any batch size the family runs (theory)", c.id)
        for c in ks:
            e = estimate(c, ctx)
            estimates[c.id] = e
            if e.slo_rate <= 0:
                pruned.add("misses the SLO even at no load (theory means)", f"{c.id}: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in e.light.items()))
                continue
            groups.setdefault(survivor_group(c), []).append(e)
    survivors: list[Estimate] = []
    for group in groups.values():
        group.sort(key=lambda e: (rank_key(inp, e.candidate, e.slo_rate), e.candidate.id))
        per_family: dict[tuple, int] = {}
        taken = 0
        for e in group:
            f = e.candidate.family
            if taken < inp.survivors and per_family.get(f, 0) < 2:
                per_family[f] = per_family.get(f, 0) + 1
                survivors.append(e)
                taken += 1
            else:
                pruned.add("ranked below the survivors by the theory", e.candidate.id)
    return survivors, estimates


def schedule_candidate(e: Estimate, ctx: Context) -> Candidate | None:
    """The theory's per-batch-size k schedule for ``e``'s family (None when flat or not speculative)."""
    from minedraft.theory.optimal_k import k_schedule

    c = e.candidate
    if c.policy == "ar" or not ctx.inp.k_schedule or len(ctx.inp.ks) < 2:
        return None
    sched = k_schedule(c.policy, ctx.setup(c), max(ctx.inp.ks), max_batch=c.max_num_seqs)
    if len(sched) < 2:
        return None
    return replace(c, k=max(x for *_, x in sched), k_schedule=sched)


def rate_grid(e: Estimate, fractions: tuple[float, ...]) -> list[float]:
    """Per-replica rates to simulate: multiples of the SLO-rate estimate, capped below the maximum rate."""
    base = e.slo_rate if e.slo_rate > 0 else e.max_rate * 0.5
    cap = e.max_rate * MAX_RATE_SHARE
    rates = sorted({round_rate(min(base * f, cap)) for f in fractions})
    return [r for r in rates if r > 0]

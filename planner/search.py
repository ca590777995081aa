"""The stages of a plan, and its JSON-ready result.

1. **Enumerate** every configuration in the space (:func:`~minedraft.planner.space.enumerate_candidates`);
   drop those over the GPU budget or the GPU memory.
2. **Theory** (:mod:`~minedraft.planner.estimate`): prune k per family, drop candidates whose no-load
   means miss the SLO, rank the rest by the SLO rate the closed forms estimate; keep ``survivors`` per
   (policy, GPU type, target; PSD: and schedule, ``psd_split``), plus the theory's per-batch-size k schedule
   for the best family of each.
3. **Sweep** (simulator): every survivor at a grid of per-replica Poisson rates around its estimate; its
   *SLO capacity* is the highest rate whose p99 latencies meet the SLO (interpolated between the last
   point that meets it and the first that does not) while the replica keeps up with the traffic.
4. **Confirm**: each policy's best candidate is simulated at its operating point (the traffic split over
   the fewest replicas that carry it, or its capacity when no rate is given); one that misses takes one
   more replica, or gives way to the next candidate. The table of best configurations quotes these runs.
5. **What-ifs**: how the choice changes with load (from the swept capacities, no new runs) and with
   acceptance (each policy's best family re-tuned and re-swept at each alpha of ``accept_sweep``).
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field, replace

from minedraft.planner.estimate import Context, Estimate, estimate, k_candidates, rank_key, rate_grid, \
    schedule_candidate, select, survivor_group
from minedraft.planner.space import SLO, Candidate, PlanInputs, enumerate_candidates, round_rate, sim_argv
from minedraft.planner.sweep import Checkpoint, InlinePool, Progress, point_key, run_points

#: A guard against gross overload (rates are already capped below the theory's maximum, MAX_RATE_SHARE): a
#: point must finish requests at least this fast relative to its rate. A finite run's drain alone costs up to
#: ~20% at 100 requests, so the guard is loose; a TTFT or E2E target is what catches queueing.
KEEP_UP = 0.5
MAX_CONFIRM_ROUNDS = 12
LOAD_MULTIPLES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass(slots=True)
class Evaluated:
    """A simulated candidate: its points (per-replica rate -> metrics) and the SLO capacity they give."""

    candidate: Candidate
    estimate: Estimate
    points: list[tuple[float, dict, list[str]]] = field(default_factory=list)
    capacity: float = 0.0
    capacity_note: str = ""
    best_ok: tuple[float, dict, list[str]] | None = None
    #: PSD auto: minedraft-sim's line on when it splits and why (the same at every rate; None otherwise)
    split_line: str | None = None

    def to_json(self, slo: SLO) -> dict:
        return {**self.candidate.to_json(), "theory": self.estimate.to_json(),
                "slo_capacity_req_s": self.capacity, "capacity_note": self.capacity_note,
                "psd_split_line": self.split_line,
                "points": [{"rate_req_s": r, "meets_slo": ok_point(slo, r, m), "slo_ratio": slo.ratio(SLO.p99(m)),
                            **m, "command": command(argv)} for r, m, argv in self.points]}


def command(argv: list[str]) -> str:
    return "minedraft-sim " + shlex.join(argv)


def psd_split(c: Candidate, line: str | None, metrics: dict) -> dict | None:
    """PSD's schedule in a result: the mode, minedraft-sim's line on when and why it splits (auto), and the share of
    the run's decode steps run as two halves. None for other policies."""
    if c.policy != "psd":
        return None
    return {"mode": c.psd_split, "line": line, "split_fraction": metrics.get("split_fraction")}


def keeps_up(rate: float, m: dict) -> bool:
    return (m.get("request_throughput") or 0.0) >= KEEP_UP * rate


def ok_point(slo: SLO, rate: float, m: dict) -> bool:
    return slo.met(m) and keeps_up(rate, m)


def slo_capacity(ev: Evaluated, slo: SLO) -> None:
    """The highest per-replica rate meeting the SLO, from the swept points (see the module docstring)."""
    pts = sorted(ev.points, key=lambda p: p[0])
    last_ok = first_bad = None
    for i, (r, m, _) in enumerate(pts):
        if ok_point(slo, r, m):
            last_ok = i
        else:
            first_bad = i
            break
    if last_ok is None:
        ev.capacity, ev.best_ok = 0.0, None
        ev.capacity_note = f"misses the SLO at every simulated rate (lowest {pts[0][0]:g} req/s)" if pts else ""
        return
    ev.best_ok = pts[last_ok]
    r0, m0, _ = pts[last_ok]
    if first_bad is None:
        ev.capacity = r0
        ev.capacity_note = "meets the SLO at every simulated rate: at least this"
        return
    r1, m1, _ = pts[first_bad]
    q0, q1 = slo.ratio(SLO.p99(m0)), slo.ratio(SLO.p99(m1))
    if keeps_up(r1, m1) and math.isfinite(q1) and q1 > q0:
        ev.capacity = r0 + (1.0 - q0) / (q1 - q0) * (r1 - r0)
        ev.capacity_note = f"interpolated between {r0:g} and {r1:g} req/s"
    else:
        ev.capacity = r0
        ev.capacity_note = f"last rate meeting the SLO ({r1:g} req/s does not)"


@dataclass(slots=True)
class Operating:
    """A deployment: a candidate, how many replicas, and the confirming run at its per-replica rate."""

    ev: Evaluated
    replicas: int
    rate: float  # per replica
    metrics: dict
    argv: list[str]

    def to_json(self, inp: PlanInputs, ctx: Context) -> dict:
        c = self.ev.candidate
        gpus = self.replicas * c.gpus
        total_rate = self.rate * self.replicas
        tok_s = total_rate * ctx.output_mean
        price = inp.price(c.gpu)
        per_mtok_h = 1e6 / (tok_s * 3600) if tok_s > 0 else math.inf
        return {"config": c.id, "candidate": c.to_json(), "replicas": self.replicas, "gpus": gpus,
                "gpus_per_replica": c.gpus, "rate_per_replica_req_s": self.rate, "total_rate_req_s": total_rate,
                "slo_capacity_per_replica_req_s": self.ev.capacity,
                "slo_goodput_in_budget_tok_s": (inp.budget // c.gpus) * self.ev.capacity * ctx.output_mean,
                "served_output_tok_s": tok_s, "metrics": self.metrics, "meets_slo": ok_point(inp.slo, self.rate,
                                                                                            self.metrics),
                "gpu_hours_per_million_tokens": gpus * per_mtok_h,
                "usd_per_hour": gpus * price if price is not None else None,
                "usd_per_million_tokens": gpus * price * per_mtok_h if price is not None else None,
                "latency_source": ctx.latency_source(c), "command": command(self.argv),
                "psd_split": psd_split(c, self.ev.split_line, self.metrics)}


def _operating_start(inp: PlanInputs, ev: Evaluated) -> tuple[int, float] | None:
    reps_max = inp.budget // ev.candidate.gpus
    if ev.capacity <= 0 or reps_max == 0:
        return None
    if inp.request_rate is None:
        return reps_max, round_rate(ev.capacity)
    reps = math.ceil(inp.request_rate / ev.capacity - 1e-9)
    if reps > reps_max:
        return None
    return reps, round_rate(inp.request_rate / reps)


def confirm(inp: PlanInputs, ranked: dict[str, list[Evaluated]], pool, ckpt: Checkpoint, progress: Progress,
            counts: dict) -> dict[str, Operating | None]:
    """Each policy's best deployment, confirmed by a run at its operating point (see the module docstring)."""
    queue = {p: list(evs) for p, evs in ranked.items()}
    state: dict[str, tuple[Evaluated, int, float] | None] = {}

    def advance(p: str) -> None:
        while queue[p]:
            ev = queue[p].pop(0)
            start = _operating_start(inp, ev)
            if start is not None:
                state[p] = (ev, *start)
                return
        state[p] = None

    for p in queue:
        advance(p)
    best: dict[str, Operating | None] = {}
    for _ in range(MAX_CONFIRM_ROUNDS):
        live = {p: s for p, s in state.items() if s is not None and p not in best}
        if not live:
            break
        argvs = {p: sim_argv(ev.candidate, rate, inp) for p, (ev, _, rate) in live.items()}
        res, n = run_points(argvs.values(), pool, ckpt, progress, "confirm")
        _add(counts, n)
        for p, (ev, reps, rate) in live.items():
            m = res[point_key(argvs[p])]["metrics"]
            ev.split_line = res[point_key(argvs[p])].get("psd_split", ev.split_line)
            if ok_point(inp.slo, rate, m):
                best[p] = Operating(ev, reps, rate, m, argvs[p])
            elif inp.request_rate is None and ev.best_ok is not None:  # fall back to the best swept point
                r, bm, argv = ev.best_ok
                best[p] = Operating(ev, inp.budget // ev.candidate.gpus, r, bm, argv)
            elif inp.request_rate is not None and reps + 1 <= inp.budget // ev.candidate.gpus:
                state[p] = (ev, reps + 1, round_rate(inp.request_rate / (reps + 1)))
            else:
                advance(p)
    for p in ranked:
        best.setdefault(p, None)
    return best


def _add(counts: dict, n: dict) -> None:
    for k, v in n.items():
        counts[k] = counts.get(k, 0) + v


def sweep(inp: PlanInputs, configs: list[tuple[Candidate, Estimate]], pool, ckpt: Checkpoint, progress: Progress,
          counts: dict, stage: str) -> list[Evaluated]:
    """Simulate each candidate on its rate grid; returns them with their SLO capacities."""
    grids = {c.id: [(r, sim_argv(c, r, inp)) for r in rate_grid(e, inp.rate_fractions)] for c, e in configs}
    res, n = run_points([a for g in grids.values() for _, a in g], pool, ckpt, progress, stage)
    _add(counts, n)
    out = []
    for c, e in configs:
        ev = Evaluated(c, e, [(r, res[point_key(a)]["metrics"], a) for r, a in grids[c.id]],
                       split_line=next((res[point_key(a)].get("psd_split") for _, a in grids[c.id]), None))
        slo_capacity(ev, inp.slo)
        out.append(ev)
    return out


def plan(inp: PlanInputs, pool=None, checkpoint: Checkpoint | None = None, progress: Progress | None = None) -> dict:
    """Run a plan (module docstring); returns everything the report shows, as a JSON-ready dict."""
    t0 = time.perf_counter()
    pool = pool or InlinePool()
    ckpt = checkpoint or Checkpoint(None)
    progress = progress or Progress(enabled=False)
    ctx = Context(inp)
    cands, pruned = enumerate_candidates(inp, ctx.tokens_per_request)
    survivors, estimates = select(cands, ctx, pruned)
    configs: list[tuple[Candidate, Estimate]] = []
    groups_seen: set = set()
    for e in survivors:
        configs.append((e.candidate, e))
        g = survivor_group(e.candidate)
        if g not in groups_seen:
            groups_seen.add(g)
            sc = schedule_candidate(e, ctx)
            if sc is not None:
                configs.append((sc, e))
    t_theory = time.perf_counter() - t0
    counts: dict = {}
    evaluated = sweep(inp, configs, pool, ckpt, progress, counts, "sweep")
    ranked = _rank(inp, evaluated)
    best = confirm(inp, ranked, pool, ckpt, progress, counts)
    leaders = {p: (op.ev if op is not None else next((ev for ev in ranked[p] if ev.capacity > 0), None))
               for p, op in best.items()}
    accept = acceptance_whatif(inp, ctx, leaders, best, pool, ckpt, progress, counts)
    best_json = {p: (best[p].to_json(inp, ctx) if best.get(p) else None) for p in inp.policies}
    rec = _recommend(inp, best)
    return finite({
        "schema": "minedraft.plan/1",
        "inputs": inputs_json(inp, ctx),
        "latency_sources": _sources(ctx, [c for c, _ in configs]),
        "counts": {"candidates": pruned.enumerated,
                   "theory_estimates": len(estimates), "simulated_configs": len(configs),
                   "pruned": pruned.counts, "pruned_examples": pruned.examples, **counts,
                   "theory_s": t_theory, "total_s": time.perf_counter() - t0},
        "best": best_json,
        "shortfall": {p: _shortfall(inp, ctx, leaders.get(p)) for p in inp.policies if best.get(p) is None},
        "best_by_gpu": _best_by(inp, ctx, evaluated, lambda c: (c.gpu, c.target)),
        "recommendation": rec,
        "configs": [ev.to_json(inp.slo) for ev in evaluated],
        "pareto": pareto(inp, evaluated, best),
        "load": load_whatif(inp, ctx, evaluated, best),
        "acceptance": accept,
    })


def finite(obj):
    """The same structure with every non-finite float replaced by None (the JSON is strict)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _rank(inp: PlanInputs, evaluated: list[Evaluated]) -> dict[str, list[Evaluated]]:
    ranked: dict[str, list[Evaluated]] = {p: [] for p in inp.policies}
    for ev in evaluated:
        ranked[ev.candidate.policy].append(ev)
    for evs in ranked.values():
        evs.sort(key=lambda ev: (rank_key(inp, ev.candidate, ev.capacity), ev.candidate.id))
    return ranked


def _recommend(inp: PlanInputs, best: dict[str, Operating | None]) -> str | None:
    """The policy whose confirmed deployment ranks first (same key as the search, on the confirmed rate)."""
    live = [(p, op) for p, op in best.items() if op is not None]
    if not live:
        return None
    if inp.request_rate is not None:
        def key(item):
            p, op = item
            c = op.ev.candidate
            return (op.replicas * c.gpus * (inp.price(c.gpu) or 1.0), -op.ev.capacity / c.gpus, p)
    else:
        def key(item):
            p, op = item
            return (-op.replicas * op.rate, p)
    return min(live, key=key)[0]


def _best_by(inp: PlanInputs, ctx: Context, evaluated: list[Evaluated], group) -> list[dict]:
    """The best swept candidate of each policy per (GPU type, target), by SLO capacity (not confirmed)."""
    out = []
    keys = sorted({group(ev.candidate) for ev in evaluated})
    for g in keys:
        for p in inp.policies:
            evs = [ev for ev in evaluated if group(ev.candidate) == g and ev.candidate.policy == p]
            if not evs:
                continue
            ev = min(evs, key=lambda ev: (rank_key(inp, ev.candidate, ev.capacity), ev.candidate.id))
            c = ev.candidate
            start = _operating_start(inp, ev)
            out.append({"gpu": c.gpu, "target": c.target, "policy": p, "config": c.id,
                        "slo_capacity_per_replica_req_s": ev.capacity, "gpus_per_replica": c.gpus,
                        "replicas_needed": start[0] if start and inp.request_rate is not None else None,
                        "gpus_needed": start[0] * c.gpus if start and inp.request_rate is not None else None,
                        "slo_goodput_in_budget_tok_s": (inp.budget // c.gpus) * ev.capacity * ctx.output_mean,
                        "latency_source": ctx.latency_source(c)})
    return out


def _sources(ctx: Context, cands: list[Candidate]) -> dict[str, str]:
    out = {}
    for c in cands:
        key = f"{c.gpu} {c.target}" + (f" + {c.draft}" if c.policy != "ar" else "") + f" TP{c.tp}"
        out.setdefault(key, ctx.latency_source(c))
    return dict(sorted(out.items()))


def inputs_json(inp: PlanInputs, ctx: Context) -> dict:
    return {"targets": list(inp.targets), "drafts": list(inp.drafts), "gpus": list(inp.gpu_keys),
            "budget_gpus": inp.budget, "slo": inp.slo.to_json(), "slo_text": inp.slo.describe(),
            "request_rate": inp.request_rate, "policies": list(inp.policies), "tensor_parallel_sizes": list(inp.tp_options()),
            "ks": list(inp.ks), "k_schedule": inp.k_schedule, "max_num_seqs": list(inp.max_num_seqs),
            "psd_capacity": list(inp.psd_capacity), "psd_split": list(inp.psd_split),
            "sd_drafter": list(inp.sd_drafter),
            "accept_curve": inp.accept_curve, "accept_concentration": inp.accept_concentration,
            "accept_sweep": list(inp.accept_sweep), "workload_flags": [list(x) for x in inp.workload],
            "workload": ctx.workload.describe(), "mean_prompt_tokens": ctx.prompt_mean,
            "mean_output_tokens": ctx.output_mean, "step_overhead_ms": inp.step_overhead_ms,
            "transfer_ms": inp.transfer_ms, "usd_per_gpu_hour": dict(inp.prices) or None,
            "survivors": inp.survivors, "rate_fractions": list(inp.rate_fractions)}


# ------------------------------------------------------------------------------------- derived views
def pareto(inp: PlanInputs, evaluated: list[Evaluated], best: dict[str, Operating | None]) -> dict:
    """Throughput per GPU against the SLO's p99 latency over every simulated point at the plan's acceptance:
    the non-dominated points overall and per policy (lower latency, higher throughput)."""
    metric = inp.slo.primary
    pts = []
    for ev in evaluated:
        for r, m, argv in ev.points:
            pts.append({"config": ev.candidate.id, "policy": ev.candidate.policy, "rate_per_replica_req_s": r,
                        "p99_ms": m.get(metric), "output_tok_s_per_gpu": (m.get("output_throughput") or 0.0)
                        / ev.candidate.gpus, "meets_slo": ok_point(inp.slo, r, m), "command": command(argv)})
    for op in best.values():
        if op is not None and not any(p["command"] == command(op.argv) for p in pts):
            c = op.ev.candidate
            pts.append({"config": c.id, "policy": c.policy, "rate_per_replica_req_s": op.rate,
                        "p99_ms": op.metrics.get(metric),
                        "output_tok_s_per_gpu": (op.metrics.get("output_throughput") or 0.0) / c.gpus,
                        "meets_slo": ok_point(inp.slo, op.rate, op.metrics), "command": command(op.argv)})
    pts = [p for p in pts if p["p99_ms"] is not None]

    def front(items: list[dict]) -> list[dict]:
        items = sorted(items, key=lambda p: (p["p99_ms"], -p["output_tok_s_per_gpu"]))
        out, top = [], -math.inf
        for p in items:
            if p["output_tok_s_per_gpu"] > top:
                out.append(p)
                top = p["output_tok_s_per_gpu"]
        return out

    return {"metric": metric, "points": pts, "front": front(pts),
            "front_by_policy": {p: front([x for x in pts if x["policy"] == p]) for p in inp.policies}}


def load_whatif(inp: PlanInputs, ctx: Context, evaluated: list[Evaluated], best: dict[str, Operating | None]) -> dict:
    """The cheapest swept candidate of each policy as the offered load changes (swept capacities; no new runs)."""
    if inp.request_rate is not None:
        base = inp.request_rate
    else:
        caps = [op.replicas * op.rate for op in best.values() if op is not None]
        base = max(caps) if caps else 0.0
    if base <= 0:
        return {"base_rate_req_s": base, "rows": [], "curve": []}

    def cheapest(policy: str, rate: float) -> dict | None:
        out = None
        for ev in evaluated:
            c = ev.candidate
            if c.policy != policy or ev.capacity <= 0:
                continue
            reps = math.ceil(rate / ev.capacity - 1e-9)
            if reps > inp.budget // c.gpus:
                continue
            price = inp.price(c.gpu)
            key = (reps * c.gpus * (price or 1.0), -ev.capacity / c.gpus, c.id)
            if out is None or key < out["_key"]:
                out = {"_key": key, "config": c.id, "replicas": reps, "gpus": reps * c.gpus,
                       "usd_per_hour": reps * c.gpus * price if price is not None else None,
                       "headroom": reps * ev.capacity / rate}
        if out is not None:
            out.pop("_key")
        return out

    def row(rate: float) -> dict:
        per = {p: cheapest(p, rate) for p in inp.policies}
        live = [(p, v) for p, v in per.items() if v is not None]
        win = min(live, key=lambda x: ((x[1]["usd_per_hour"] if inp.priced else x[1]["gpus"]), -x[1]["headroom"],
                                       x[0]))[0] if live else None
        return {"rate_req_s": rate, "by_policy": per, "winner": win}

    mults = LOAD_MULTIPLES if inp.request_rate is not None else (0.1, 0.25, 0.5, 0.75, 1.0)
    rows = [row(round_rate(base * m)) for m in mults]
    n = 48
    curve = [row(round_rate(base * 0.05 * (60.0 ** (i / (n - 1))))) for i in range(n)]
    return {"base_rate_req_s": base, "rows": rows, "curve": curve}


def _shortfall(inp: PlanInputs, ctx: Context, ev: Evaluated | None) -> dict | None:
    """Why a policy has no deployment: the most its best swept configuration carries within the budget."""
    if ev is None:
        return None
    c = ev.candidate
    reps = inp.budget // c.gpus
    return {"config": c.id, "gpus_per_replica": c.gpus, "max_replicas": reps,
            "slo_capacity_per_replica_req_s": ev.capacity, "in_budget_req_s": reps * ev.capacity,
            "latency_source": ctx.latency_source(c)}


def acceptance_whatif(inp: PlanInputs, ctx: Context, leaders: dict[str, Evaluated | None],
                      best: dict[str, Operating | None], pool, ckpt: Checkpoint, progress: Progress,
                      counts: dict) -> dict:
    """Each policy's best family at each alpha of ``accept_sweep``: k re-chosen by the theory, rates re-swept."""
    if not inp.accept_sweep:
        return {"alphas": [], "rows": []}
    jobs: list[tuple[float, str, Candidate, Estimate]] = []
    for alpha in inp.accept_sweep:
        for p, lead in leaders.items():
            if lead is None or p == "ar":
                continue
            base = lead.candidate
            fam = [replace(base, k=k, k_schedule=None, accept=f"{alpha:g}") for k in inp.ks]
            ests = [estimate(c, ctx) for c in k_candidates(fam, ctx)]
            ests = [e for e in ests if e.slo_rate > 0]
            if not ests:
                jobs.append((alpha, p, fam[0], None))
                continue
            e = min(ests, key=lambda e: (rank_key(inp, e.candidate, e.slo_rate), e.candidate.k))
            jobs.append((alpha, p, e.candidate, e))
    evs = sweep(inp, [(c, e) for _, _, c, e in jobs if e is not None], pool, ckpt, progress, counts, "acceptance")
    by_id = {ev.candidate.id: ev for ev in evs}
    rows = []
    for alpha in inp.accept_sweep:
        per: dict[str, dict | None] = {}
        for a, p, c, e in jobs:
            if a != alpha:
                continue
            ev = by_id.get(c.id) if e is not None else None
            per[p] = _whatif_entry(inp, ctx, ev) if ev is not None else None
        if leaders.get("ar") is not None:
            per["ar"] = _whatif_entry(inp, ctx, leaders["ar"])
        live = [(p, v) for p, v in per.items() if v is not None and v["feasible"]]
        if inp.request_rate is not None:
            win = min(live, key=lambda x: (x[1]["cost"], -x[1]["slo_capacity_per_replica_req_s"] / x[1]["gpus_per_replica"],
                                           x[0]))[0] if live else None
        else:
            win = max(live, key=lambda x: (x[1]["goodput_tok_s"], x[0]))[0] if live else None
        rows.append({"alpha": alpha, "by_policy": per, "winner": win})
    return {"alphas": list(inp.accept_sweep), "rows": rows,
            "note": "geometric acceptance at each alpha; each policy keeps its best family (GPU, TP, batch, drafter) "
                    "and re-tunes k by the theory; capacities from the swept points (not confirmed)"}


def _whatif_entry(inp: PlanInputs, ctx: Context, ev: Evaluated) -> dict:
    c = ev.candidate
    reps_max = inp.budget // c.gpus
    start = _operating_start(inp, ev)
    price = inp.price(c.gpu) or 1.0
    return {"config": c.id, "k": c.k if c.policy != "ar" else None, "slo_capacity_per_replica_req_s": ev.capacity,
            "goodput_tok_s": reps_max * ev.capacity * ctx.output_mean, "gpus_per_replica": c.gpus,
            "feasible": start is not None, "gpus": start[0] * c.gpus if start else None,
            "cost": start[0] * c.gpus * price if start else None}

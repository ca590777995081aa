"""The ``vllm.general_plugins`` entry point (``pyproject.toml``: ``minedraft_psd``).

vLLM calls :func:`register` once in every process it starts (API server, engine core, workers) before it
builds anything, with no access to the engine's config. Everything PSD needs is named in the config
(``scheduler_cls``, ``speculative_config``, ``worker_cls``, ``additional_config["minedraft"]``; see
:func:`minedraft.executor.psd.vllm_kwargs`), so registering changes nothing global: it checks once per
process that this vLLM is a build the plugin was written against and says so in the log. Filter it out
with ``VLLM_PLUGINS`` like any other plugin.
"""

from __future__ import annotations

import logging

from minedraft.executor.compat import KNOWN_VERSIONS

logger = logging.getLogger("minedraft.psd")


def register() -> None:
    try:
        import vllm

        version = str(getattr(vllm, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - vLLM loads us, so it is there
        return
    if version.split("+")[0] not in KNOWN_VERSIONS:
        logger.warning("minedraft PSD/PEARL plugin: written against vLLM %s; this is %s",
                       " and ".join(KNOWN_VERSIONS), version)
    else:
        logger.debug("minedraft PSD/PEARL plugin available (vLLM %s)", version)

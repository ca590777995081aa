"""minedraft.executor: real runs on vLLM (vLLM's AR and SD; PSD and PEARL through the plugin in ``psd/``).

Importing this package does not import vLLM: the engine-facing modules (:mod:`.hooks`, :mod:`.engine`)
import it when an engine is built, so flag validation and the pure helpers work without the extra.
See docs/executor.md.
"""

from minedraft.executor.models import ResolvedModel, resolve_model, tiny_qwen3_config
from minedraft.executor.run import EXEC_POLICIES, ExecOptions, PolicyRun, execute

__all__ = ["EXEC_POLICIES", "ExecOptions", "PolicyRun", "ResolvedModel", "execute", "resolve_model",
           "tiny_qwen3_config"]

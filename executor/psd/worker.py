"""The target's worker class (``worker_cls``): vLLM's own, plus resident halves and synthetic acceptance.

``PSDWorker`` is the platform's worker (``CPUWorker`` on the CPU build, ``gpu_worker.Worker`` on GPUs)
with three additions:

- its model runner keeps each PSD half resident in a persistent batch of its own
  (:mod:`minedraft.executor.psd.runner`), when ``additional_config`` holds the plugin's options (the target)
  or ``minedraft_drafter`` (the drafter's engine), unless ``resident_batches`` is off;
- ``minedraft_steps``: host times of each step's ``execute_model`` call and ``sample_tokens`` return (what the
  benchmarks measure the engine's serial time between two target steps with; two clock reads a step);
- when ``additional_config["minedraft"]["accept_curve"]`` is set, ``load_model`` wraps
the runner's rejection sampler so that each verified row accepts a number of drafts drawn from that
:class:`~minedraft.acceptance.AcceptanceCurve` (:meth:`AcceptanceCurve.sample`, per-request Beta
heterogeneity included). vLLM's own synthetic mode lives inside its rejection kernels, which the CPU
build's fallbacks refuse; this one runs after vLLM's sampler, on any device, at a cost of one argmax
over the chosen rows. Timing only: accepted tokens are the drafts, the next token is the target's
argmax at that position (outputs are not the model's).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch
from vllm.platforms import current_platform

from minedraft.acceptance import AcceptanceCurve
from minedraft.executor import compat
from minedraft.executor.psd.config import CONFIG_KEY, DRAFTER_KEY, PluginConfig
from minedraft.executor.psd.runner import make_resident

if current_platform.is_cpu():
    from vllm.v1.worker.cpu_worker import CPUWorker as _PlatformWorker
else:
    from vllm.v1.worker.gpu_worker import Worker as _PlatformWorker


class SyntheticAcceptance:
    """Wraps vLLM's ``RejectionSampler``: same call, rows rewritten to ``drafts[:a] + [argmax at a]``."""

    def __init__(self, inner, runner, curve: AcceptanceCurve, seed: int) -> None:
        self.inner, self.runner, self.curve = inner, runner, curve
        self.rng = np.random.default_rng([seed, 0x5359])
        self.alphas: dict[str, float] = {}
        self.checked = False  # the logits layout was compared with vLLM's indices

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _alphas(self, n: int) -> np.ndarray | None:
        if not self.curve.heterogeneous:
            return None
        ids = list(self.runner.input_batch.req_ids[:n])
        new = [r for r in ids if r not in self.alphas]
        if new:
            for r, a in zip(new, self.curve.request_alphas(self.rng, len(new))):
                self.alphas[r] = float(a)
        if len(self.alphas) > 8 * max(n, 64):  # forget requests no longer in the batch
            keep = set(self.runner.requests)  # every live request, the other half's too
            self.alphas = {r: a for r, a in self.alphas.items() if r in keep}
        return np.asarray([self.alphas[r] for r in ids])

    def __call__(self, metadata, draft_probs, logits, sampling_metadata, *args, **kwargs):
        out = self.inner(metadata, draft_probs, logits, sampling_metadata, *args, **kwargs)
        n = np.asarray(metadata.num_draft_tokens, dtype=np.int64)  # drafts per row
        b, kmax = len(n), int(n.max()) if len(n) else 0
        if b == 0 or kmax == 0 or self.runner.input_batch.num_reqs != b:
            return out  # nothing drafted, or vLLM's warm-up/profiling pass (dummy rows, no requests)
        acc = self.curve.sample(self.rng, n, self._alphas(b), size=b)  # accepted drafts per row
        starts = np.concatenate([[0], np.cumsum(n)[:-1]])
        # vLLM lays each row's logits out as its n target positions, then its bonus position: the logits row of
        # position acc (a draft's target logits, or the bonus row) is starts + row + acc (checked once below)
        rows = starts + np.arange(b) + acc
        j = np.arange(kmax)
        total = int(n.sum())  # drafts kept: row i's first acc[i]; the rest read the -1 appended at index total
        gather = np.where(j[None, :] < acc[:, None], starts[:, None] + j[None, :], total)
        dev = logits.device
        host = torch.from_numpy(np.concatenate([rows, acc, gather.reshape(-1)]))
        if dev.type == "cuda":  # pinned: the copy queues behind the forward and the host goes on launching
            host = host.pin_memory()
        self._host = host  # alive until the copy has run (the step's own sync comes before the next call)
        idx = host.to(dev, non_blocking=True)
        rows_t, acc_t, gather_t = idx[:b], idx[b:2 * b], idx[2 * b:]
        if not self.checked:
            self._check_layout(metadata, n, starts, rows_t, acc)
        dtype = out.sampled_token_ids.dtype
        nxt = logits[rows_t].argmax(dim=-1).to(dtype)
        padded = torch.cat([metadata.draft_token_ids.to(dtype), torch.full((1,), -1, dtype=dtype, device=dev)])
        new = torch.cat([padded[gather_t].view(b, kmax), torch.full((b, 1), -1, dtype=dtype, device=dev)], dim=1)
        new.scatter_(1, acc_t.view(b, 1), nxt.view(b, 1))
        width = out.sampled_token_ids.shape[1]
        out.sampled_token_ids = new[:, :width] if width <= kmax + 1 else torch.nn.functional.pad(
            new, (0, width - kmax - 1), value=-1)
        return out

    def _check_layout(self, metadata, n: np.ndarray, starts: np.ndarray, rows_t, acc: np.ndarray) -> None:
        """Once: the logits rows computed from the layout equal vLLM's own target and bonus indices."""
        tgt = metadata.target_logits_indices.cpu().numpy()
        bonus = metadata.bonus_logits_indices.cpu().numpy()
        want = np.where(acc < n, tgt[np.minimum(starts + acc, max(len(tgt) - 1, 0))], bonus)
        if not np.array_equal(rows_t.cpu().numpy(), want):
            raise RuntimeError("minedraft synthetic acceptance: vLLM's logits layout is not the one this code assumes")
        self.checked = True


def install_synthetic_acceptance(worker) -> bool:
    """Wrap the worker's rejection sampler when the plugin's config asks for synthetic acceptance."""
    raw = (worker.vllm_config.additional_config or {}).get(CONFIG_KEY)
    if not raw:
        return False
    cfg = PluginConfig(**raw)
    curve = cfg.curve()
    runner = compat.runner_of(worker)
    rs = getattr(runner, "rejection_sampler", None)
    if curve is None or rs is None:
        return False
    if not isinstance(rs, SyntheticAcceptance):
        runner.rejection_sampler = SyntheticAcceptance(rs, runner, curve, cfg.synthetic_seed)
    return True


def wants_resident(additional_config: dict | None) -> bool | None:
    """Whether an engine's runner keeps its halves resident: the plugin's target (unless its option
    ``resident_batches`` is off) or the drafter's engine (``minedraft_drafter.resident_batches``); None: neither
    (an engine of vLLM's own, the runner untouched)."""
    extra = additional_config or {}
    if CONFIG_KEY in extra:
        return bool(extra[CONFIG_KEY].get("resident_batches", True))
    if DRAFTER_KEY in extra:
        return bool((extra.get(DRAFTER_KEY) or {}).get("resident_batches", False))
    return None


class PSDWorker(_PlatformWorker):
    """The platform's vLLM worker: resident halves, step times, synthetic acceptance (if asked)."""

    def init_device(self, *args, **kwargs):
        out = super().init_device(*args, **kwargs)
        self.minedraft_steps: deque[tuple[float, float]] = deque(maxlen=1 << 16)
        self._md_t_exec = 0.0
        resident = wants_resident(self.vllm_config.additional_config)
        if resident is not None:  # a plugin engine: the runner class always (its counters, the switch), on or off
            runner = compat.runner_of(self)
            make_resident(runner)
            # hybrid models keep row-indexed state (mamba) that these batches were not checked against
            runner.minedraft_resident = resident and not self.vllm_config.model_config.is_hybrid
        return out

    def execute_model(self, *args, **kwargs):
        self._md_t_exec = time.perf_counter()
        out = super().execute_model(*args, **kwargs)
        if out is not None:  # sampled in the same call (no speculation, or an empty step)
            self.minedraft_steps.append((self._md_t_exec, time.perf_counter()))
        return out

    def sample_tokens(self, *args, **kwargs):
        out = super().sample_tokens(*args, **kwargs)
        self.minedraft_steps.append((self._md_t_exec, time.perf_counter()))
        return out

    def load_model(self, *args, **kwargs):
        out = super().load_model(*args, **kwargs)
        compat.fix_cpu_expand_kernel()  # CPU build only: sampled verification is biased without it
        install_synthetic_acceptance(self)
        return out

"""How long each op takes: latency models plus fixed per-step costs. One place for every driver.

The simulator charges ops with :meth:`StepCosts.op_time`; the theory builds its closed forms from the
same method, so a formula for a step's duration exists once.

- ``prefill``:       ``T_t.prefill(b, prompt)``
- ``draft_prefill``: ``T_d.prefill(b, prompt)``
- ``decode``:        ``T_t(b, 1, ctx)``
- in vLLM V1's chunked mode, prompt chunks riding in a decode/verify forward (and the drafter's first
  forward) add ``T.chunk_time(tokens)``; a chunked ``prefill`` op is ``T.prefill(b, tokens / b)``
- ``draft``:         ``T_d(b, k + 1, ctx) + (k - 1) T_d(b, 1, ctx)`` (+ transfer): k drafter forwards,
                     the first over the verified positions (vLLM pads them to k + 1)
- ``verify``:        ``T_t(b, k + 1, ctx)`` (+ transfer)

plus ``step_overhead_s`` before the first op of each engine step (``Op.new_step``): scheduling, input
preparation, rejection sampling and output processing, serial with the GPU work (in PSD it sits outside
the overlap, as in the published system). ``transfer_s`` is charged once per direction when the
drafter has a GPU of its own: on a draft op (verification results reach the drafter) and on a verify op
(the drafts reach the target).

A verify and a draft op that run together on one shared GPU (PSD/PEARL, the drafter on the target's GPU):
:meth:`StepCosts.shared_pair` -- the verify gains ``shared_verify_stretch`` x the drafter's later passes
(``(k - 1) T_d(b, 1, ctx)``: the uniform one-token passes, which replay full CUDA graphs and take the GPU from
the verify; the first pass is host-bound and hides in the verify's gaps), and the draft op takes
``1 + shared_gpu_slowdown`` times as long (the verify beside it slows the drafter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minedraft.errors import require
from minedraft.latency import LatencyModel
from minedraft.ops import DECODE, DRAFT, DRAFT_PREFILL, PREFILL, VERIFY


@dataclass(frozen=True, slots=True)
class StepCosts:
    """The latency models of target and drafter and the fixed costs around their forwards."""

    target: LatencyModel
    draft: LatencyModel | None = None
    step_overhead_s: float = 0.0
    transfer_s: float = 0.0
    drafter_op_s: float = 0.0
    verify_swap_s: float = 0.0
    verify_swap_row_s: float = 0.0
    shared_gpu_slowdown: float = 0.0
    shared_verify_stretch: float = 0.0

    def __post_init__(self) -> None:
        for f in ("step_overhead_s", "transfer_s", "drafter_op_s", "verify_swap_s", "verify_swap_row_s",
                  "shared_gpu_slowdown", "shared_verify_stretch"):
            v = getattr(self, f)
            require(math.isfinite(v) and v >= 0, f, "must be a finite time >= 0", v)

    def op_time(self, kind: str, batch: int, k: float = 0, context_len: float = 0.0, prompt_len: float = 0.0,
                cross_device: bool = False, chunk_tokens: int = 0, own_process: bool = False,
                swap: bool = False) -> float:
        """Seconds of GPU work for an op of ``kind`` over ``batch`` requests (step overhead excluded).

        ``k``: draft tokens per request (mean verify length for a TETRIS verify); ``context_len``: mean
        cached tokens per request; ``prompt_len``: mean prompt length (prefills);
        ``cross_device``: the drafter runs on a GPU of its own (transfers apply); ``chunk_tokens``:
        prompt tokens riding in the same forward (vLLM V1's chunked prefill), charged at
        :meth:`LatencyModel.chunk_time` (for the drafter too: its first forward covers them);
        ``own_process``: the drafter runs in a process of its own (``drafter_op_s`` per draft op);
        ``swap``: this verify's batch is not the previous step's (``verify_swap_s`` + ``verify_swap_row_s`` x batch).
        """
        transfer = self.transfer_s if cross_device else 0.0
        if kind == VERIFY:
            extra = self.target.chunk_time(chunk_tokens) if chunk_tokens else 0.0
            extra += self.verify_swap_s + self.verify_swap_row_s * batch if swap else 0.0
            return self.target.forward_time(batch, k + 1, context_len) + extra + transfer
        if kind == DRAFT:
            d = self._drafter()
            extra = d.chunk_time(chunk_tokens) if chunk_tokens else 0.0
            extra += self.drafter_op_s if own_process else 0.0
            if batch == 0:
                return extra + transfer
            first = d.forward_time(batch, k + 1, context_len)
            rest = (k - 1) * d.forward_time(batch, 1, context_len) if k > 1 else 0.0
            return first + rest + extra + transfer
        if kind == DECODE:
            extra = self.target.chunk_time(chunk_tokens) if chunk_tokens else 0.0
            return self.target.forward_time(batch, 1, context_len) + extra
        if kind == PREFILL:
            return self.target.prefill_time(batch, prompt_len)
        if kind == DRAFT_PREFILL:
            return self._drafter().prefill_time(batch, prompt_len)
        raise ValueError(f"unknown op kind {kind!r}")

    def later_passes_s(self, batch: int, k: float, context_len: float = 0.0) -> float:
        """The drafter's passes after its first in a draft op of ``k`` forwards: ``(k - 1) T_d(b, 1, ctx)``."""
        return (k - 1) * self._drafter().forward_time(batch, 1, context_len) if k > 1 and batch else 0.0

    def shared_pair(self, verify_s: float, draft_s: float, draft_batch: int, draft_k: float,
                    context_len: float = 0.0) -> tuple[float, float]:
        """Durations of a verify and a draft op (``draft_batch`` rows, ``draft_k`` forwards) that run together on
        one shared GPU, from their durations alone (see the module doc)."""
        extra = self.shared_verify_stretch * self.later_passes_s(draft_batch, draft_k, context_len)
        return verify_s + extra, draft_s * (1.0 + self.shared_gpu_slowdown)

    def _drafter(self) -> LatencyModel:
        if self.draft is None:
            raise ValueError("this policy drafts, so StepCosts needs a draft latency model")
        return self.draft

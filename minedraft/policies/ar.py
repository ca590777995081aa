"""AR: plain autoregressive serving. One target forward per token for the whole running batch.

``prefill_mode="separate"``: newcomers get a prefill-only step first (priority), else everyone decodes.
``prefill_mode="chunked"`` (vLLM V1): every step decodes the running batch and fills the rest of the
``max_num_batched_tokens`` budget with prompt chunks (partial prompts first, then newcomers).
"""

from __future__ import annotations

import numpy as np

from minedraft.ops import DECODE, PREFILL, TARGET, Op, OpResult
from minedraft.policies.base import EMPTY, Policy


class AR(Policy):
    name = "ar"

    def __init__(self, cfg, prompt_len, output_len) -> None:
        super().__init__(cfg, prompt_len, output_len)
        self.running = EMPTY
        self.busy = False
        self._chunk = (EMPTY, EMPTY)

    @property
    def num_running(self) -> int:
        return len(self.running) + len(self.partial)

    def next_ops(self, free: frozenset[str]) -> list[Op]:
        if self.busy or TARGET not in free:
            return []
        op = self._chunked() if self.cfg.prefill_mode == "chunked" else self._separate()
        self.busy = op is not None
        return [op] if op is not None else []

    def _separate(self) -> Op | None:
        new = self.admit(self.cfg.max_num_seqs - len(self.running))
        if len(new):
            return Op(PREFILL, TARGET, new)
        return Op(DECODE, TARGET, self.running) if len(self.running) else None

    def _chunked(self) -> Op | None:
        budget = (self.cfg.max_num_batched_tokens or 1 << 40) - len(self.running)
        reqs, toks = self._chunk = self.schedule_chunks(budget, self.cfg.max_num_seqs - self.num_running)
        total = int(toks.sum())
        if len(self.running):
            return Op(DECODE, TARGET, self.running, chunk_reqs=reqs, chunk_tokens=total)
        return Op(PREFILL, TARGET, reqs, chunk_tokens=total) if len(reqs) else None

    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        self.busy = False
        if self.cfg.prefill_mode == "chunked":
            running, finished = EMPTY, EMPTY
            if op.kind == DECODE:
                alive = self.advance(op.reqs, 1)
                running, finished = op.reqs[alive], op.reqs[~alive]
            complete = self.chunks_done(*self._chunk)
            alive = self.prefilled(complete)
            self.running = np.concatenate([running, complete[alive]])
            return np.concatenate([finished, complete[~alive]])
        if op.kind == PREFILL:
            alive = self.prefilled(op.reqs)
            self.running = np.concatenate([self.running, op.reqs[alive]])
        else:
            alive = self.advance(op.reqs, 1)
            self.running = op.reqs[alive]
        return op.reqs[~alive]

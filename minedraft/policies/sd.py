"""SD: standard speculative decoding, draft then verify, one stage after the other.

Each engine step drafts k tokens for the whole running batch, then verifies them: the target idles while
the drafter works. The drafter shares the target's GPUs (``sd_drafter="shared"``, vLLM's layout and the
published baseline: drafting occupies the target) or has a GPU of its own (``"own"``: no contention, a
transfer each way, one more GPU, still no overlap). Optional TETRIS: draft k + e and, when the batch is
full, verify the best ``budget`` prefixes.

``prefill_mode="separate"`` (published, vLLM V0): prefill steps run the target's prefill, then the
drafter's; a decode step is draft, then verify. ``"chunked"`` (vLLM V1, as ``draft_model`` runs): a step
is verify (the running rows' drafts plus prompt chunks in one target forward), then the drafter over the
same rows and chunks, proposing k tokens for every row, newly completed prompts included; the step's
tokens become visible when the drafting ends.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from minedraft.ops import DRAFT, DRAFT_PREFILL, DRAFTER, PREFILL, TARGET, VERIFY, Op, OpResult
from minedraft.policies.base import EMPTY, Policy, tetris_lengths


class SD(Policy):
    name = "sd"
    speculative = True

    def __init__(self, cfg, prompt_len, output_len) -> None:
        super().__init__(cfg, prompt_len, output_len)
        self.running = EMPTY
        self.busy = False
        self.pending_prefill = EMPTY  # target-prefilled, drafter prefill still due
        self.queued: Op | None = None  # the op that completes the current step (verify, or chunked mode's draft)
        self.draft_resource = TARGET if cfg.sd_drafter == "shared" else DRAFTER
        self._chunk = (EMPTY, EMPTY)
        self._deferred = (EMPTY, EMPTY)  # chunked mode: (finished, first tokens) shown at the step's end

    @property
    def num_running(self) -> int:
        return len(self.running) + len(self.pending_prefill) + len(self.partial)

    @property
    def idle(self) -> bool:
        return super().idle and self.queued is None

    def uses_own_drafter_gpu(self) -> bool:
        return self.draft_resource == DRAFTER

    def _drop(self, ids: set[int]) -> np.ndarray:
        """Live serving (the plugin's mode sd; separate prefill): leave running, pending and a queued verify."""
        found = self._remove(ids, "running", "pending_prefill")
        q = self.queued
        if q is not None:
            keep = np.asarray([r not in ids for r in q.reqs.tolist()], dtype=bool)
            if not keep.all():
                self.queued = replace(q, reqs=q.reqs[keep], lengths=None if q.lengths is None else q.lengths[keep]) \
                    if keep.any() else None
        return found

    def next_ops(self, free: frozenset[str]) -> list[Op]:
        if self.busy:
            return []
        op = self.queued
        self.queued = None
        if op is None:
            op = self._chunked() if self.cfg.prefill_mode == "chunked" else self._separate()
        self.busy = op is not None
        return [op] if op is not None else []

    def _separate(self) -> Op | None:
        if len(self.pending_prefill):
            return Op(DRAFT_PREFILL, self.draft_resource, self.pending_prefill, new_step=False)
        new = self.admit(self.cfg.max_num_seqs - self.num_running)
        if len(new):
            return Op(PREFILL, TARGET, new)
        if len(self.running):
            k = self.k_for(len(self.running))
            return Op(DRAFT, self.draft_resource, self.running, k=k + self.cfg.tetris_extra)
        return None

    def _chunked(self) -> Op | None:
        k = self.k_for(len(self.running))
        budget = (self.cfg.max_num_batched_tokens or 1 << 40) - len(self.running) * (1 + k)
        reqs, toks = self._chunk = self.schedule_chunks(budget, self.cfg.max_num_seqs - self.num_running)
        total = int(toks.sum())
        if len(self.running):
            return Op(VERIFY, TARGET, self.running, k=k, chunk_reqs=reqs, chunk_tokens=total)
        return Op(PREFILL, TARGET, reqs, chunk_tokens=total) if len(reqs) else None

    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        self.busy = False
        if self.cfg.prefill_mode == "chunked":
            return self._done_chunked(op, result)
        if op.kind == PREFILL:
            alive = self.prefilled(op.reqs)
            self.pending_prefill = op.reqs[alive]
            return op.reqs[~alive]
        if op.kind == DRAFT_PREFILL:
            self.running = np.concatenate([self.running, op.reqs])
            self.pending_prefill = EMPTY
            return EMPTY
        if op.kind == DRAFT:
            self.queued = Op(VERIFY, TARGET, op.reqs, k=op.k, lengths=self._lengths(op, result), new_step=False)
            return EMPTY
        alive = self.advance(op.reqs, 1 + result.accepted)  # VERIFY
        self.running = op.reqs[alive]
        return op.reqs[~alive]

    def _done_chunked(self, op: Op, result: OpResult) -> np.ndarray:
        if op.kind == DRAFT:  # the step is over: its outputs become visible
            finished, first = self._deferred
            self._deferred = (EMPTY, EMPTY)
            self.emit_first(first)
            return finished
        running, finished = EMPTY, EMPTY
        if op.kind == VERIFY:
            alive = self.advance(op.reqs, 1 + result.accepted)
            running, finished = op.reqs[alive], op.reqs[~alive]
        complete = self.chunks_done(*self._chunk)
        alive = self.prefilled(complete, emit=False)
        self.running = np.concatenate([running, complete[alive]])
        self._deferred = (np.concatenate([finished, complete[~alive]]), complete)
        rows = np.concatenate([op.reqs if op.kind == VERIFY else EMPTY, complete])  # vLLM drafts every row
        self.queued = Op(DRAFT, self.draft_resource, rows, k=self.k_for(len(self.running)),
                         chunk_tokens=op.chunk_tokens, new_step=False)
        return EMPTY

    def _lengths(self, op: Op, result: OpResult) -> np.ndarray | None:
        """TETRIS verify lengths when the batch is full, else None (verify every draft)."""
        cfg = self.cfg
        if not cfg.tetris_extra or op.size < cfg.max_num_seqs or result.confidence is None:
            return None
        budget = cfg.tetris_capacity or (op.k - cfg.tetris_extra) * cfg.max_num_seqs
        return tetris_lengths(result.confidence, budget)

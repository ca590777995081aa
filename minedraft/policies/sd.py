"""SD: standard speculative decoding, draft then verify, one stage after the other.

Each engine step drafts k tokens for the whole running batch, then verifies them: the target idles while
the drafter works. The drafter shares the target's GPUs (``sd_drafter="shared"``, vLLM's layout and the
published baseline: drafting occupies the target) or has a GPU of its own (``"own"``: no contention, a
transfer each way, one more GPU, still no overlap). Prefill steps run the target's prefill, then the
drafter's. Optional TETRIS: draft k + e and, when the batch is full, verify the best ``budget`` prefixes.
"""

from __future__ import annotations

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
        self.drafted: Op | None = None  # the verify op to run next, once drafts exist
        self.draft_resource = TARGET if cfg.sd_drafter == "shared" else DRAFTER

    @property
    def num_running(self) -> int:
        return len(self.running) + len(self.pending_prefill)

    def uses_own_drafter_gpu(self) -> bool:
        return self.draft_resource == DRAFTER

    def next_ops(self, free: frozenset[str]) -> list[Op]:
        if self.busy:
            return []
        self.busy = True
        if len(self.pending_prefill):
            return [Op(DRAFT_PREFILL, self.draft_resource, self.pending_prefill, new_step=False)]
        if self.drafted is not None:
            return [self.drafted]
        new = self.admit(self.cfg.max_num_seqs - self.num_running)
        if len(new):
            return [Op(PREFILL, TARGET, new)]
        if len(self.running):
            k = self.k_for(len(self.running))
            return [Op(DRAFT, self.draft_resource, self.running, k=k + self.cfg.tetris_extra)]
        self.busy = False
        return []

    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        self.busy = False
        if op.kind == PREFILL:
            alive = self.prefilled(op.reqs)
            self.pending_prefill = op.reqs[alive]
            return op.reqs[~alive]
        if op.kind == DRAFT_PREFILL:
            self.running = np.concatenate([self.running, op.reqs])
            self.pending_prefill = EMPTY
            return EMPTY
        if op.kind == DRAFT:
            self.drafted = Op(VERIFY, TARGET, op.reqs, k=op.k, lengths=self._lengths(op, result), new_step=False)
            return EMPTY
        # VERIFY
        self.drafted = None
        alive = self.advance(op.reqs, 1 + result.accepted)
        self.running = op.reqs[alive]
        return op.reqs[~alive]

    def _lengths(self, op: Op, result: OpResult) -> np.ndarray | None:
        """TETRIS verify lengths when the batch is full, else None (verify every draft)."""
        cfg = self.cfg
        if not cfg.tetris_extra or op.size < cfg.max_num_seqs or result.confidence is None:
            return None
        budget = cfg.tetris_capacity or (op.k - cfg.tetris_extra) * cfg.max_num_seqs
        return tetris_lengths(result.confidence, budget)

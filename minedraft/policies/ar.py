"""AR: plain autoregressive serving. One target forward per token for the whole running batch."""

from __future__ import annotations

import numpy as np

from minedraft.ops import DECODE, PREFILL, TARGET, Op, OpResult
from minedraft.policies.base import EMPTY, Policy


class AR(Policy):
    """Continuous batching without speculation: prefill newcomers (priority), else decode everyone."""

    name = "ar"

    def __init__(self, cfg, prompt_len, output_len) -> None:
        super().__init__(cfg, prompt_len, output_len)
        self.running = EMPTY
        self.busy = False

    @property
    def num_running(self) -> int:
        return len(self.running)

    def next_ops(self, free: frozenset[str]) -> list[Op]:
        if self.busy or TARGET not in free:
            return []
        new = self.admit(self.cfg.max_num_seqs - len(self.running))
        if len(new):
            op = Op(PREFILL, TARGET, new)
        elif len(self.running):
            op = Op(DECODE, TARGET, self.running)
        else:
            return []
        self.busy = True
        return [op]

    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        self.busy = False
        if op.kind == PREFILL:
            alive = self.prefilled(op.reqs)
            self.running = np.concatenate([self.running, op.reqs[alive]])
        else:
            alive = self.advance(op.reqs, 1)
            self.running = op.reqs[alive]
        return op.reqs[~alive]

"""PEARL: pre-verify / post-verify speculation without a batch split (the published ``force_pearl`` mode).

Every engine step the target verifies the whole running batch with the drafts made last step while the
drafter, on a GPU of its own, runs k + 1 forwards for every request as if all its pending drafts were
accepted: a guess of the target's next token (the bonus token, or a probe row's new token), then k
drafts after it. Next step a request's drafts are valid when the guess was right:

- it checked k drafts, all k were accepted, and the guess equals the target's bonus token, or
- it had no valid drafts (it took a plain one-token decode inside the verify pass) and the guess equals
  the target's new token (a *probe*).

Otherwise its drafts are wasted and it probes again. The driver reports the guess as one more acceptance
position (``Op.checks``: k + 1 for rows with drafts, 1 for probes); a live driver that compares the
tokens reports ``OpResult.valid`` instead. This is the mode as its design intends; the
published code checks the optimistic drafts one position off (see docs/architecture.md), which we do
not reproduce. Capacity is max_num_seqs (no doubling); TETRIS is not combined with PEARL here.
"""

from __future__ import annotations

import numpy as np

from minedraft.ops import DRAFT, DRAFT_PREFILL, DRAFTER, PREFILL, TARGET, VERIFY, Op, OpResult
from minedraft.errors import require
from minedraft.policies.base import EMPTY, Lockstep


class PEARL(Lockstep):
    name = "pearl"
    speculative = True

    def __init__(self, cfg, prompt_len, output_len) -> None:
        super().__init__(cfg, prompt_len, output_len)
        require(cfg.prefill_mode == "separate", "prefill_mode",
                f"{self.name} runs prefill-only steps (the published schedule); chunked is for ar and sd", "chunked")
        self.running = EMPTY
        self.valid = np.zeros(len(self.prompt_len), dtype=bool)  # drafts ready for the next verify
        self.draft_k = np.zeros(len(self.prompt_len), dtype=np.int64)
        self.pending_prefill = EMPTY
        self._verified: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_running(self) -> int:
        return len(self.running) + len(self.pending_prefill)

    def uses_own_drafter_gpu(self) -> bool:
        return self.cfg.psd_drafter == "own"

    def _grow(self, n: int) -> None:
        self.valid = np.concatenate([self.valid, np.zeros(n, dtype=bool)])
        self.draft_k = np.concatenate([self.draft_k, np.zeros(n, dtype=np.int64)])
        super()._grow(n)

    def _drop(self, ids: set[int]) -> np.ndarray:
        return self._remove(ids, "running", "pending_prefill")

    def _plan(self) -> list[Op]:
        if len(self.pending_prefill):
            return [Op(DRAFT_PREFILL, DRAFTER, self.pending_prefill, new_step=False)]
        new = self.admit(self.cfg.max_num_seqs - self.num_running)
        if len(new):
            return [Op(PREFILL, TARGET, new)]
        r = self.running
        if not len(r):
            return []
        valid = self.valid[r]
        lengths = np.where(valid, self.draft_k[r], 0)
        k = self.k_for(len(r))
        return [Op(VERIFY, TARGET, r, k=int(lengths.max()), lengths=lengths, probe=~valid, checks=lengths + 1),
                Op(DRAFT, DRAFTER, r, k=k, extra_forwards=1)]

    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        self.outstanding -= 1
        if op.kind == PREFILL:
            alive = self.prefilled(op.reqs)
            self.pending_prefill = op.reqs[alive]
            return op.reqs[~alive]
        if op.kind == DRAFT_PREFILL:
            self.running = np.concatenate([self.running, op.reqs])
            self.valid[op.reqs] = False
            self.pending_prefill = EMPTY
            return EMPTY
        finished = EMPTY
        if op.kind == VERIFY:
            lengths, acc = op.verify_lengths, result.accepted
            gained = 1 + np.minimum(acc, lengths)  # probes: lengths 0, one token
            # The guess is the position after the drafts: right iff that position was accepted too. A live
            # driver that compared the tokens reports ``result.valid`` instead.
            ok = result.valid if result.valid is not None else acc >= lengths + 1
            alive = self.advance(op.reqs, gained)
            self._verified = (op.reqs[alive], ok[alive])
            finished = op.reqs[~alive]
            self.running = op.reqs[alive]
        else:
            self._drafted_k = op.k
        if self.outstanding == 0:
            reqs, ok = self._verified
            self.valid[reqs] = ok
            self.draft_k[reqs] = self._drafted_k
        return finished

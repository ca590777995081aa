"""PSD: batch parallel speculative decoding (MineDraft). Two halves, the drafter on a GPU of its own.

Each engine step verifies one half on the target with the drafts made for it last step while the drafter
drafts the other half; both finish before the step ends (a barrier), then the halves swap. Per request:
drafted, verified, drafted, ... The published schedule, which this follows:

- capacity: ``psd_capacity="double"`` lets 2 x max_num_seqs requests run (published); ``"split"`` keeps
  max_num_seqs in flight (equal concurrency with SD);
- admission: newcomers join the half that was just verified (it is drafted next, and its finished
  requests just left); before decoding starts, halves alternate;
- prefill steps: target prefill, then drafter prefill, no overlap; drafts already made survive them;
- no drafts yet (first decode step) or one half empty: the step degrades to sequential SD;
- TETRIS: draft k + e; a half with at least its share of max_num_seqs verifies the best ``budget``
  prefixes (selection runs on the drafter's GPU, hidden).

``psd_split="auto"`` (minedraft's adaptive schedule, beyond the published one): two halves only pay when the
drafter's op hides behind the other half's verify and halving the verify saves more than the lost overlap costs;
with few requests in flight a PSD cycle verifies each request half as often for nothing. So the policy runs
**one batch** (all requests in half 0: drafted, then verified, like SD with PSD's drafter) below
``psd_split_rows`` requests in flight (the step model's threshold, ``minedraft.theory.split_threshold``) and
two halves from it on; it merges again only at or below ``MERGE_SHARE`` of it (hysteresis). Switches happen at
step boundaries and lose nothing:

- one -> two: when the batch was just verified (no drafts in flight), its tail moves to half 1; the next step
  drafts half 0 alone, then the halves alternate (the published warm-up); newcomers that would push one batch
  past the threshold (or past one engine batch) split it at admission;
- two -> one: the half holding drafts is verified alone (its drafts are used, nothing re-drafted), then both
  halves, neither holding drafts, merge into half 0;
- in one batch, newcomers are admitted after a verify, before the batch is drafted.
"""

from __future__ import annotations

import numpy as np

from minedraft.ops import DRAFT, DRAFT_PREFILL, DRAFTER, PREFILL, TARGET, VERIFY, Op, OpResult
from minedraft.errors import require
from minedraft.policies.base import EMPTY, Lockstep, tetris_lengths

#: auto: two halves merge back into one batch at or below this share of psd_split_rows (hysteresis)
MERGE_SHARE = 0.75


def half_capacity(cfg) -> int:
    """Requests one PSD half holds at most (one vLLM batch in the plugin): max_num_seqs when the capacity is
    double, half of it when split."""
    return cfg.max_num_seqs if cfg.psd_capacity == "double" else max(1, cfg.max_num_seqs // 2)


class PSD(Lockstep):
    name = "psd"
    speculative = True

    def __init__(self, cfg, prompt_len, output_len) -> None:
        super().__init__(cfg, prompt_len, output_len)
        require(cfg.prefill_mode == "separate", "prefill_mode",
                f"{self.name} runs prefill-only steps (the published schedule); chunked is for ar and sd", "chunked")
        double = cfg.psd_capacity == "double"
        self.capacity = 2 * cfg.max_num_seqs if double else cfg.max_num_seqs
        self.half_capacity = half_capacity(cfg)
        self.halves = [EMPTY, EMPTY]
        self.ready: int | None = None  # the half whose drafts are waiting to be verified
        self.lengths: np.ndarray | None = None  # TETRIS verify lengths of the ready half
        self.ready_k = 0
        self.pending_prefill = EMPTY
        self.pending_half = EMPTY  # the half each pending request joins
        self.step_drafted: int | None = None
        self.warm = False  # decoding has started: admission follows the just-verified half
        self.auto = cfg.psd_split == "auto"
        # auto: split from split_rows requests in flight (None: only when one batch cannot hold them); merge at or
        # below merge_rows
        # one batch holds at most max_num_seqs requests (one engine batch): a threshold above that means two halves
        # only once more are in flight, if the capacity allows that many at all (else never: None)
        m = cfg.max_num_seqs
        rows = max(2, cfg.psd_split_rows if cfg.psd_split_rows is not None else m + 1)
        self.split_rows: int | None = rows if rows <= m + 1 else (m + 1 if rows <= self.capacity else None)
        self.merge_rows = int(MERGE_SHARE * self.split_rows) if self.split_rows is not None else 0
        self.split = not self.auto  # two halves now (always: from the start)
        self.merging = False  # auto: verifying the half with drafts alone, then merging
        self.steps_split = 0  # decode steps run as two halves (a verify beside a draft of the other half)
        self.steps_one = 0  # decode steps run as one batch (a draft or a verify alone)

    @property
    def num_running(self) -> int:
        return len(self.halves[0]) + len(self.halves[1]) + len(self.pending_prefill)

    def uses_own_drafter_gpu(self) -> bool:
        return self.cfg.psd_drafter == "own"

    def _drop(self, ids: set[int]) -> np.ndarray:
        found = []
        for h in (0, 1):
            keep = np.asarray([r not in ids for r in self.halves[h].tolist()], dtype=bool)
            if keep.all():
                continue
            found.append(self.halves[h][~keep])
            if h == self.ready and self.lengths is not None:
                self.lengths = self.lengths[keep]
            self.halves[h] = self.halves[h][keep]
        if len(self.pending_prefill):
            keep = np.asarray([r not in ids for r in self.pending_prefill.tolist()], dtype=bool)
            found.append(self.pending_prefill[~keep])
            self.pending_prefill, self.pending_half = self.pending_prefill[keep], self.pending_half[keep]
        return np.concatenate(found) if found else EMPTY

    # ------------------------------------------------------------------ scheduling
    def _plan(self) -> list[Op]:
        if len(self.pending_prefill):
            return [Op(DRAFT_PREFILL, DRAFTER, self.pending_prefill, new_step=False)]
        if self.auto:
            self._switch()
        # one batch: newcomers join after its verify, before it is drafted; never split: one batch at most
        if self.split:
            room = self.capacity - self.num_running
        elif self.ready is None:
            room = (self.capacity if self.split_rows is not None else self.cfg.max_num_seqs) - self.num_running
        else:
            room = 0
        new = self.admit(room)
        if len(new):
            self.pending_half = self._assign_halves(len(new))
            return [Op(PREFILL, TARGET, new)]
        ops = []
        if self.ready is not None:
            v = self.ready
            ops.append(Op(VERIFY, TARGET, self.halves[v], k=self.ready_k, batch_id=v, lengths=self.lengths))
            d = 1 - v
        else:  # nothing drafted yet: draft one half alone (sequential), the other joins next step
            d = 0 if len(self.halves[0]) else 1
        self.step_drafted = None
        if len(self.halves[d]) and not self.merging:
            k = self.k_for(len(self.halves[d])) + self.cfg.tetris_extra
            ops.append(Op(DRAFT, DRAFTER, self.halves[d], k=k, batch_id=d))
            self.step_drafted = d
        if len(ops) == 2:
            self.steps_split += 1
        elif ops:
            self.steps_one += 1
        return ops

    # ----------------------------------------------------------------- auto: one batch or two halves
    def _switch(self) -> None:
        """At a step boundary: split one batch, or start merging two halves (see the module's docstring)."""
        n = len(self.halves[0]) + len(self.halves[1])
        if self.split:
            self.merging = n <= self.merge_rows
            if self.merging and self.ready is None:  # neither half holds drafts: one batch from now on
                self.halves = [np.concatenate(self.halves), EMPTY]
                self.split = self.merging = False
        elif self.ready is None and self.split_rows is not None and n >= self.split_rows:
            self._split_batch(0)

    def _split_batch(self, incoming: int) -> None:
        """Two halves from the one batch (no drafts in flight): its tail moves to half 1, leaving room for
        ``incoming`` newcomers so that both halves end up about equal."""
        one = self.halves[0]
        keep = max(0, min(len(one), (len(one) + incoming + 1) // 2))
        self.halves = [one[:keep], np.concatenate([self.halves[1], one[keep:]])]
        self.split, self.merging = True, False

    def _assign_halves(self, n: int) -> np.ndarray:
        if not self.split:  # one batch (no drafts in flight: admission waits for its verify)
            total = len(self.halves[0]) + n
            if self.split_rows is None or total < self.split_rows:
                return np.zeros(n, dtype=np.int64)
            self._split_batch(n)  # the newcomers make two halves pay (or one batch cannot hold them)
            short = [max(0, (total + 1) // 2 - len(self.halves[0])), 0]
            short[1] = n - short[0]
            return np.repeat(np.array([0, 1], dtype=np.int64), short)
        if self.warm:  # join the half that was just verified: the one not holding drafts
            target = 1 - self.ready if self.ready is not None else self._smaller_half()
            out = np.full(n, target, dtype=np.int64)
            if self.cfg.psd_limit_halves:  # a live engine: each half is one batch of <= half_capacity rows
                room = max(0, self.half_capacity - len(self.halves[target]))
                out[room:] = 1 - target
            return out
        # warm-up: alternate, starting from the smaller half
        first = self._smaller_half()
        return (first + np.arange(n)) % 2

    def _smaller_half(self) -> int:
        return 0 if len(self.halves[0]) <= len(self.halves[1]) else 1

    # ------------------------------------------------------------------- outcomes
    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        self.outstanding -= 1
        finished = EMPTY
        if op.kind == PREFILL:
            alive = self.prefilled(op.reqs)
            self.pending_prefill, self.pending_half = op.reqs[alive], self.pending_half[alive]
            finished = op.reqs[~alive]
        elif op.kind == DRAFT_PREFILL:
            for h in (0, 1):
                self.halves[h] = np.concatenate([self.halves[h], op.reqs[self.pending_half == h]])
            self.pending_prefill, self.pending_half = EMPTY, EMPTY
        elif op.kind == DRAFT:
            self.next_lengths, self.next_k = self._tetris(op, result), op.k
        else:  # VERIFY: the ready half advances and is drafted next
            alive = self.advance(op.reqs, 1 + result.accepted)
            self.halves[op.batch_id] = op.reqs[alive]
            finished = op.reqs[~alive]
            self.warm = True
        if self.outstanding == 0 and op.kind in (DRAFT, VERIFY):
            self._end_step()
        return finished

    def _end_step(self) -> None:
        d = self.step_drafted
        self.ready = d
        if d is not None:
            self.lengths = self.next_lengths
            self.ready_k = self.next_k
        else:
            self.lengths = None

    def _tetris(self, op: Op, result: OpResult) -> np.ndarray | None:
        cfg = self.cfg
        if not cfg.tetris_extra or op.size < self.half_capacity or result.confidence is None:
            return None
        budget = cfg.tetris_capacity or (op.k - cfg.tetris_extra) * self.half_capacity
        return tetris_lengths(result.confidence, budget)

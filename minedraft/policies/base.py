"""What every policy shares: its knobs, request bookkeeping, admission and the k schedule.

A policy is a pure, deterministic state machine: no SimPy, no torch, no clocks. A driver calls
``next_ops(free)`` whenever a resource becomes free and ``on_done(op, result)`` when an op ends. The base
class here owns the accounting (who waits, who runs, tokens generated, KV-cache reservations), with
invariant checks; each policy file only decides which ops come next.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields

import numpy as np

from minedraft.errors import require
from minedraft.ops import Op, OpResult

EMPTY = np.empty(0, dtype=np.int64)


def _help(text: str, default: object) -> object:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The knobs of the serving policies (validated here, at the edge)."""

    max_num_seqs: int = _help("requests in flight (per half for PSD with psd_capacity=double)", 256)
    num_speculative_tokens: int = _help("k: draft tokens per request per step", 5)
    k_schedule: tuple[tuple[int, int, int], ...] | None = _help(
        "vLLM's num_speculative_tokens_per_batch_size: inclusive (start, end, k) batch-size ranges", None)
    psd_capacity: str = _help("double: each PSD half holds max_num_seqs (published); split: halves share it", "double")
    psd_limit_halves: bool = _help("PSD: each half is one engine batch of at most max_num_seqs rows; newcomers that "
                                   "would overflow the just-verified half join the other (a live vLLM engine: the "
                                   "plugin sets it). Off: a burst may grow one half beyond its share", False)
    psd_split: str = _help("PSD's schedule: always (two halves whenever two can be formed: the published schedule) or "
                           "auto (two halves only from psd_split_rows requests in flight; fewer run as one batch, "
                           "drafted then verified like SD, with the drafter where PSD's is; hysteretic)", "always")
    psd_split_rows: int | None = _help("auto: requests in flight from which PSD splits (minedraft.theory."
                                       "auto_split_rows); it merges again at or below 3/4 of it. One batch holds at "
                                       "most max_num_seqs: above max_num_seqs + 1 it means two halves beyond one "
                                       "batch if the capacity holds that many, else never (at most max_num_seqs in "
                                       "flight). None: max_num_seqs + 1", None)
    psd_drafter: str = _help("where PSD's and PEARL's drafter runs: own (a GPU of its own, published) or shared "
                             "(the target's GPU, time-shared: the plugin's one-GPU layout)", "own")
    sd_drafter: str = _help("where SD's drafter runs: shared (the target's GPUs, as vLLM) or own (a GPU of its own)",
                            "shared")
    tetris_extra: int = _help("TETRIS extra proposals e (0 = off): draft k+e, verify a budget of the best prefixes", 0)
    tetris_capacity: int = _help("TETRIS verification budget per full batch (0 = k x batch capacity)", 0)
    max_num_batched_tokens: int | None = _help("prompt tokens one prefill step may take (None = no limit)", None)
    kv_capacity_tokens: int | None = _help("target KV-cache size in tokens; admission waits when full (None = no limit)",
                                           None)
    prefill_mode: str = _help("separate: prefill-only steps, then the drafter's prefill (published, vLLM V0); "
                              "chunked: vLLM V1 - prompt chunks ride in decode steps within max_num_batched_tokens",
                              "separate")

    def __post_init__(self) -> None:
        _int_in(self.max_num_seqs, "max_num_seqs", 1, 1 << 20)
        _int_in(self.num_speculative_tokens, "num_speculative_tokens", 1, 64)
        require(self.psd_capacity in ("double", "split"), "psd_capacity", "must be double or split", self.psd_capacity)
        require(isinstance(self.psd_limit_halves, bool), "psd_limit_halves", "must be true or false",
                self.psd_limit_halves)
        require(self.psd_split in ("always", "auto"), "psd_split", "must be always or auto", self.psd_split)
        if self.psd_split_rows is not None:
            _int_in(self.psd_split_rows, "psd_split_rows", 2, 1 << 20)
        require(self.psd_drafter in ("own", "shared"), "psd_drafter", "must be own or shared", self.psd_drafter)
        require(self.sd_drafter in ("shared", "own"), "sd_drafter", "must be shared or own", self.sd_drafter)
        require(self.prefill_mode in ("separate", "chunked"), "prefill_mode", "must be separate or chunked",
                self.prefill_mode)
        _int_in(self.tetris_extra, "tetris_extra", 0, 16)
        _int_in(self.tetris_capacity, "tetris_capacity", 0, 1 << 30)
        if self.max_num_batched_tokens is not None:
            _int_in(self.max_num_batched_tokens, "max_num_batched_tokens", 1, 1 << 30)
        if self.kv_capacity_tokens is not None:
            _int_in(self.kv_capacity_tokens, "kv_capacity_tokens", 1, 1 << 40)
        if self.k_schedule is not None:
            object.__setattr__(self, "k_schedule", normalize_k_schedule(self.k_schedule))

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @property
    def max_draft_len(self) -> int:
        """Most draft tokens any step proposes (k, or the schedule's largest k, plus TETRIS extras)."""
        ks = [self.num_speculative_tokens] + ([k for *_, k in self.k_schedule] if self.k_schedule else [])
        return min(max(ks), self.num_speculative_tokens) + self.tetris_extra


def _int_in(v: object, name: str, lo: int, hi: int) -> None:
    require(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and lo <= v <= hi, name,
            f"must be an integer in [{lo}, {hi}]", v)


def normalize_k_schedule(entries: object) -> tuple[tuple[int, int, int], ...]:
    """Validate vLLM's ``num_speculative_tokens_per_batch_size``: sorted, non-overlapping, starting at 1."""
    name = "k_schedule"
    require(isinstance(entries, (list, tuple)) and len(entries) > 0, name,
            "must be a non-empty list of (start, end, k) batch-size ranges", entries)
    out = []
    for e in entries:  # type: ignore[union-attr]
        require(isinstance(e, (list, tuple)) and len(e) == 3 and all(isinstance(x, int) for x in e), name,
                "each entry must be three integers (start, end, k)", e)
        s, t, k = e
        require(1 <= s <= t and 1 <= k <= 64, name, "each entry needs 1 <= start <= end and 1 <= k <= 64", e)
        out.append((s, t, k))
    out.sort()
    require(out[0][0] == 1, name, "the first range must start at batch size 1", entries)
    for (_, end, _), (start, _, _) in zip(out, out[1:]):
        require(start > end, name, "ranges must not overlap", entries)
    return tuple(out)


def k_lookup(cfg: PolicyConfig, max_batch: int) -> np.ndarray:
    """Dense batch size -> k table, as vLLM expands its schedule (gaps and tail carry the last k; capped at k)."""
    table = np.full(max_batch + 1, cfg.num_speculative_tokens, dtype=np.int64)
    if cfg.k_schedule:
        last = None
        for b in range(1, max_batch + 1):
            for s, t, k in cfg.k_schedule:
                if s <= b <= t:
                    last = k
                    break
                if s > b:
                    break
            table[b] = min(cfg.num_speculative_tokens, last if last is not None else cfg.num_speculative_tokens)
    return table


class Policy:
    """Shared bookkeeping. Subclasses implement :meth:`next_ops` and :meth:`_done`."""

    name = "base"
    #: Whether this policy runs a drafter at all.
    speculative = False

    def __init__(self, cfg: PolicyConfig, prompt_len: np.ndarray, output_len: np.ndarray) -> None:
        self.cfg = cfg
        self.prompt_len = np.asarray(prompt_len, dtype=np.int64)
        self.output_len = np.asarray(output_len, dtype=np.int64)
        require(len(self.prompt_len) == len(self.output_len), "requests", "prompt and output lengths must pair up")
        require(bool(np.all(self.prompt_len >= 1)) and bool(np.all(self.output_len >= 1)), "requests",
                "every prompt and output length must be >= 1")
        self.generated = np.zeros(len(self.prompt_len), dtype=np.int64)
        self.prefill_done = np.zeros(len(self.prompt_len), dtype=np.int64)  # chunked mode: prompt tokens in KV
        self.partial: list[int] = []  # chunked mode: admitted, prompt not yet complete (FIFO)
        self._first: list[np.ndarray] = []  # requests whose first token became visible (see take_first_tokens)
        self.waiting: deque[int] = deque()
        self.num_finished = 0
        self.kv_used = 0
        self.lookahead = cfg.max_draft_len if self.speculative else 0
        self._k_table = k_lookup(cfg, max(1, 2 * cfg.max_num_seqs))
        if cfg.kv_capacity_tokens is not None and len(self.prompt_len):  # none yet: a live engine adds them
            need = int((self.prompt_len + self.output_len).max()) + self.lookahead
            require(need <= cfg.kv_capacity_tokens, "kv_capacity_tokens",
                    f"must hold the longest request ({need} tokens with lookahead)", cfg.kv_capacity_tokens)

    # ----------------------------------------------------------------- the interface
    def arrive(self, ids: np.ndarray | list[int]) -> None:
        """Requests enter the waiting queue (FIFO)."""
        self.waiting.extend(int(i) for i in ids)

    def next_ops(self, free: frozenset[str]) -> list[Op]:
        """Ops to start now, given the resources that are free. Never two ops on one resource."""
        raise NotImplementedError

    def on_done(self, op: Op, result: OpResult) -> np.ndarray:
        """Apply an op's outcome; returns the ids of requests that finished with it."""
        return self._done(op, result)

    def _done(self, op: Op, result: OpResult) -> np.ndarray:
        raise NotImplementedError

    @property
    def idle(self) -> bool:
        """True when nothing waits and nothing runs."""
        return not self.waiting and self.num_running == 0

    @property
    def num_running(self) -> int:
        raise NotImplementedError

    def uses_own_drafter_gpu(self) -> bool:
        """Whether this policy needs a GPU for the drafter beside the target's GPUs."""
        return False

    # --------------------------------------------------- live serving (the vLLM plugin's hooks)
    # A simulated run knows every request up front and ends each one at its output length. A live
    # engine learns of requests as they come and ends some early (EOS, stop strings, aborts). These two
    # hooks let a driver feed that in; a simulated run never calls them, so its behaviour is unchanged.
    def add_requests(self, prompt_len: np.ndarray | list[int], output_len: np.ndarray | list[int]) -> np.ndarray:
        """Register new requests (ids continue after the last one) and return their ids; call
        :meth:`arrive` when they arrive. ``output_len`` is the most a request may generate."""
        p = np.asarray(prompt_len, dtype=np.int64).reshape(-1)
        o = np.asarray(output_len, dtype=np.int64).reshape(-1)
        require(len(p) == len(o), "requests", "prompt and output lengths must pair up")
        require(bool(np.all(p >= 1)) and bool(np.all(o >= 1)), "requests",
                "every prompt and output length must be >= 1")
        cap = self.cfg.kv_capacity_tokens
        if cap is not None and len(p):
            need = int((p + o).max()) + self.lookahead
            require(need <= cap, "kv_capacity_tokens", f"must hold the longest request ({need} tokens with lookahead)",
                    cap)
        start = len(self.prompt_len)
        self.prompt_len = np.concatenate([self.prompt_len, p])
        self.output_len = np.concatenate([self.output_len, o])
        self._grow(len(p))
        return np.arange(start, start + len(p), dtype=np.int64)

    def _grow(self, n: int) -> None:
        """Extend the per-request arrays by ``n`` entries (subclasses extend theirs, then call this)."""
        z = np.zeros(n, dtype=np.int64)
        self.generated = np.concatenate([self.generated, z])
        self.prefill_done = np.concatenate([self.prefill_done, z])

    def drop(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Requests that ended outside the policy (EOS, a stop string, an abort) leave it now.

        Call between steps (with no op of theirs in flight). Waiting requests leave the queue; admitted
        ones release their KV reservation and count as finished with what they generated. Returns the
        ids that were still known (running or waiting).
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[(ids >= 0) & (ids < len(self.prompt_len))]
        if not len(ids):
            return ids
        gone = set(ids.tolist())
        waiting = [r for r in self.waiting if r in gone]
        if waiting:
            self.waiting = deque(r for r in self.waiting if r not in gone)
        held = self._drop(gone - set(waiting))
        if len(held):
            self._finish(held, np.ones(len(held), dtype=bool))
            self.output_len[held] = np.maximum(self.generated[held], 1)
        return np.concatenate([np.asarray(waiting, dtype=np.int64), held])

    def _drop(self, ids: set[int]) -> np.ndarray:
        """Remove ``ids`` from the policy's running structures; return those that were there."""
        raise NotImplementedError(f"policy {self.name} does not support live serving (drop)")

    def _remove(self, ids: set[int], *names: str) -> np.ndarray:
        """Remove ``ids`` from the id arrays named ``names`` (attributes); return those that were there."""
        found = []
        for name in names:
            arr = getattr(self, name)
            keep = np.asarray([r not in ids for r in arr.tolist()], dtype=bool)
            if len(arr) and not keep.all():
                found.append(arr[~keep])
                setattr(self, name, arr[keep])
        return np.concatenate(found) if found else EMPTY

    # -------------------------------------------------------------- shared helpers
    def k_for(self, batch_size: int) -> int:
        return int(self._k_table[min(batch_size, len(self._k_table) - 1)])

    def _reserve(self, rid: int) -> int:
        return int(self.prompt_len[rid] + self.output_len[rid]) + self.lookahead

    def admit(self, slots: int) -> np.ndarray:
        """Take up to ``slots`` waiting requests, FIFO, within the KV and prefill-token budgets."""
        cfg, out, tokens = self.cfg, [], 0
        while self.waiting and len(out) < slots:
            rid = self.waiting[0]
            if cfg.kv_capacity_tokens is not None and self.kv_used + self._reserve(rid) > cfg.kv_capacity_tokens:
                break
            p = int(self.prompt_len[rid])
            if cfg.max_num_batched_tokens is not None and out and tokens + p > cfg.max_num_batched_tokens:
                break
            self.waiting.popleft()
            out.append(rid)
            tokens += p
            self.kv_used += self._reserve(rid)
        return np.asarray(out, dtype=np.int64) if out else EMPTY

    def take_first_tokens(self) -> np.ndarray:
        """Requests whose first token became visible with the op just applied (the driver stamps them)."""
        out = np.concatenate(self._first) if self._first else EMPTY
        self._first.clear()
        return out

    def emit_first(self, reqs: np.ndarray) -> None:
        if len(reqs):
            self._first.append(reqs)

    def prefilled(self, reqs: np.ndarray, emit: bool = True) -> np.ndarray:
        """A prefill produced each request's first token. Returns the mask of requests still running.

        ``emit=False`` leaves the emission of those first tokens to the caller (vLLM returns a step's
        outputs only when the whole step, drafting included, is over).
        """
        self.generated[reqs] = 1
        if emit:
            self.emit_first(reqs)
        return self._finish(reqs, self.generated[reqs] >= self.output_len[reqs])

    # ------------------------------------------------------------ vLLM V1 chunked prefill
    def schedule_chunks(self, budget: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
        """vLLM V1's chunked prefill: continue partial prompts first, then admit waiting requests (FIFO)
        while ``slots``, the KV budget and the step's remaining token ``budget`` allow.

        Returns (request ids, prompt tokens each gets in this step).
        """
        reqs: list[int] = []
        toks: list[int] = []
        for r in self.partial:
            if budget <= 0:
                break
            take = min(int(self.prompt_len[r] - self.prefill_done[r]), budget)
            reqs.append(r)
            toks.append(take)
            budget -= take
        cap = self.cfg.kv_capacity_tokens
        while budget > 0 and slots > 0 and self.waiting:
            r = self.waiting[0]
            if cap is not None and self.kv_used + self._reserve(r) > cap:
                break
            self.waiting.popleft()
            self.kv_used += self._reserve(r)
            self.partial.append(r)
            slots -= 1
            take = min(int(self.prompt_len[r]), budget)
            reqs.append(r)
            toks.append(take)
            budget -= take
        return np.asarray(reqs, dtype=np.int64), np.asarray(toks, dtype=np.int64)

    def chunks_done(self, reqs: np.ndarray, toks: np.ndarray) -> np.ndarray:
        """Apply a step's prompt chunks; returns the requests whose prompt is now complete."""
        if not len(reqs):
            return EMPTY
        self.prefill_done[reqs] += toks
        complete = reqs[self.prefill_done[reqs] >= self.prompt_len[reqs]]
        if len(complete):
            done = set(complete.tolist())
            self.partial = [r for r in self.partial if r not in done]
        return complete

    def advance(self, reqs: np.ndarray, gained: np.ndarray) -> np.ndarray:
        """Add ``gained`` tokens (capped at each output length). Returns the mask still running."""
        g = np.minimum(self.generated[reqs] + gained, self.output_len[reqs])
        self.generated[reqs] = g
        return self._finish(reqs, g >= self.output_len[reqs])

    def _finish(self, reqs: np.ndarray, done: np.ndarray) -> np.ndarray:
        n = int(done.sum())
        if n:
            fin = reqs[done]
            self.kv_used -= int((self.prompt_len[fin] + self.output_len[fin]).sum()) + n * self.lookahead
            self.num_finished += n
            assert self.kv_used >= 0, "KV accounting went negative"
        return ~done


def tetris_lengths(confidence: np.ndarray, budget: int) -> np.ndarray:
    """TETRIS selection: the ``budget`` most likely draft prefixes over the batch, as per-request lengths.

    ``confidence[i, j]`` is request ``i``'s cumulative draft log-probability for a prefix of ``j + 1``
    tokens (non-increasing in ``j``), so taking the global top ``budget`` entries takes a prefix of each
    row. Ties break by position, then request order (stable).
    """
    n, m = confidence.shape
    if budget >= n * m:
        return np.full(n, m, dtype=np.int64)
    # Sort by (-confidence, position, request): stable sort over position-major flattening.
    flat = confidence.T.reshape(-1)  # position-major: all requests' position 0, then position 1, ...
    order = np.argsort(-flat, kind="stable")[:budget]
    req = order % n
    return np.bincount(req, minlength=n).astype(np.int64)


class Lockstep(Policy):
    """A policy whose engine step runs ops on both resources at once and ends when all have ended (a
    barrier, as PSD and PEARL step): subclasses plan a step in :meth:`_plan` and count ops down in
    ``_done`` (``self.outstanding -= 1``)."""

    outstanding = 0

    def next_ops(self, free: frozenset[str]) -> list[Op]:
        if self.outstanding:
            return []
        ops = self._plan()
        self.outstanding = len(ops)
        return ops

    def _plan(self) -> list[Op]:
        raise NotImplementedError

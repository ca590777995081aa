"""The drafter: its own process, its own device, its own KV cache; token ids in, token ids out.

Parent side, :class:`DrafterClient` (in the vLLM engine-core process, owned by one scheduler): starts
this module's ``main`` in a fresh Python (:func:`minedraft.executor.boot.start`) with the drafter's device in its
environment, talks to it over a private ``socketpair`` (no ports, nothing shared between engines), sends one op at
a time and collects the answer later, so the drafter works while the target verifies.

Child side, :class:`DraftRunner`: a vLLM engine core for the draft model (vLLM's own model runner, KV
cache, attention kernels and CUDA graphs) whose scheduler is unused: we build each forward's
``SchedulerOutput`` ourselves. A request's copy is re-entered at the start of each op (finished and
added again under the same id, an edge case vLLM's runner handles) with ``num_computed_tokens`` = the
tokens whose KV is still right, so a rollback after rejected drafts costs nothing but the new tokens.

Wire format (pickled tuples; numbers only after the prompt):
    ("prefill", seq, ids, tokens, free)        tokens: prompt + first output token, per request
    ("draft", seq, ids, keep, append, n, free) keep: drafter tokens still right; append: target tokens after
    ("stop",)
answers: ("ready", facts) | ("done", seq, drafts [m, n] int32 | None, t_start, t_end, stats) | ("error", seq, text)
Times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: one clock for every process of the host).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np

from minedraft.executor.boot import child_connection, start


class DrafterFailed(RuntimeError):
    """The drafter process died, hung or reported an error."""


# =============================================================================== parent side
@dataclass
class Pending:
    seq: int
    kind: str
    t_sent: float
    bytes_sent: int


class DrafterClient:
    """One drafter process, owned by one engine (scheduler). Not thread-safe; one op in flight."""

    def __init__(self, spec: dict, env: dict[str, str], start_timeout_s: float, op_timeout_s: float) -> None:
        self.op_timeout_s = float(op_timeout_s)
        self.proc, self.conn = start("minedraft.executor.psd.drafter", env)
        self.pid = self.proc.pid
        self._seq = 0
        self.pending: Pending | None = None
        self.failed: str | None = None
        self.conn.send(spec)
        msg = self._recv(start_timeout_s, "start")
        if msg[0] != "ready":
            raise DrafterFailed(f"drafter did not start: {msg[-1]}")
        self.facts: dict = msg[1]

    # ------------------------------------------------------------------------------ ops
    def send(self, kind: str, *payload) -> None:
        assert self.pending is None, "one drafter op at a time"
        self._seq += 1
        data = pickle.dumps((kind, self._seq, *payload), protocol=pickle.HIGHEST_PROTOCOL)
        t = time.perf_counter()
        try:
            self.conn.send_bytes(data)
        except OSError as exc:
            self._fail(f"send failed ({exc.__class__.__name__}: {exc})")
        self.pending = Pending(self._seq, kind, t, len(data))

    def result(self) -> tuple[np.ndarray | None, dict]:
        """Wait for the op in flight; returns (drafts, info with the drafter's times and transfer sizes)."""
        p = self.pending
        assert p is not None
        msg = self._recv(self.op_timeout_s, p.kind)
        t_recv = time.perf_counter()
        self.pending = None
        if msg[0] == "error":
            self._fail(f"drafter error: {msg[-1]}")
        _, seq, drafts, t0, t1, stats = msg
        assert seq == p.seq, (seq, p.seq)
        info = dict(stats, t_sent=p.t_sent, t_start=t0, t_end=t1, t_received=t_recv, bytes_sent=p.bytes_sent,
                    bytes_received=self._last_bytes)
        return drafts, info

    def _recv(self, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    data = self.conn.recv_bytes()
                except (EOFError, OSError) as exc:
                    self._fail(f"drafter process exited during {what} (exit code {self.proc.poll()}; "
                               f"{exc.__class__.__name__})")
                self._last_bytes = len(data)
                return pickle.loads(data)
            if self.proc.poll() is not None:
                self._fail(f"drafter process exited during {what} (exit code {self.proc.returncode})")
            if time.monotonic() >= deadline:
                self._fail(f"drafter gave no answer to {what} within {timeout:g} s")

    def _fail(self, why: str):
        self.failed = why
        self.close(kill=True)
        raise DrafterFailed(why)

    @property
    def alive(self) -> bool:
        return self.failed is None and self.proc.poll() is None

    def close(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if not kill:
                try:
                    self.conn.send_bytes(pickle.dumps(("stop",)))
                    self.proc.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
        try:
            self.conn.close()
        except OSError:
            pass


def drafter_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: its device and an in-process, V1-runner vLLM engine.

    ``device``: "cpu", "same" (the parent's first visible GPU) or "cuda:N" (the parent's N-th visible GPU).
    """
    env = dict(os.environ if base is None else base)
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    env["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if device.startswith("cuda") or device == "same":
        index = 0 if device == "same" else int(device.split(":", 1)[1])
        visible = env.get("CUDA_VISIBLE_DEVICES")
        ids = [x for x in visible.split(",") if x.strip()] if visible else None
        if ids is not None:
            if index >= len(ids):
                raise ValueError(f"drafter_device {device}: only {len(ids)} GPUs are visible ({visible})")
            env["CUDA_VISIBLE_DEVICES"] = ids[index]
        else:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
    return env


# ================================================================================ child side
@dataclass(slots=True)
class Copy:
    """One request's copy on the drafter."""

    tokens: list[int]
    kv: int = 0  # leading tokens whose KV is in the cache
    blocks: list[int] = field(default_factory=list)
    entered: int = -1  # len(tokens) when the copy last entered vLLM's runner (-1: not in it)
    sent_blocks: int = 0  # leading blocks the runner knows of


class DraftRunner:
    """A vLLM engine core for the draft model, driven forward by forward (greedy sampling)."""

    def __init__(self, spec: dict) -> None:
        from vllm import SamplingParams

        from minedraft.executor import compat

        t0 = time.perf_counter()
        self.core, cfg = compat.draft_engine_core(spec)
        self.block_size, self.num_blocks, self.num_groups = compat.engine_core_kv_layout(self.core)
        if self.num_groups != 1:
            raise RuntimeError(f"the drafter needs one KV cache group (plain attention); got {self.num_groups}")
        self.free_blocks = list(range(self.num_blocks - 1, 0, -1))  # block 0 is vLLM's null block
        self.max_tokens = int(cfg.scheduler_config.max_num_batched_tokens)
        self.max_reqs = int(cfg.scheduler_config.max_num_seqs)
        self.max_model_len = int(cfg.model_config.max_model_len)
        self.params = SamplingParams(temperature=0.0, max_tokens=1)
        #: fused drafting: the engine carries vLLM's draft_model proposer over the same model, so one runner pass
        #: yields the sampled token and ``fused`` more drafts (``spec["fused_drafts"]``; 0: one pass per token)
        self.fused = int(spec.get("fused_drafts") or 0)
        if self.fused:  # the proposer's first pass adds one slot per row to the pass's tokens (its buffers hold
            # max_num_batched_tokens: vLLM's own scheduler keeps that room free the same way)
            sched = cfg.scheduler_config.max_num_scheduled_tokens or self.max_tokens
            self.max_tokens = min(int(sched), self.max_tokens - self.max_reqs)
        #: tokens one prefill forward takes: at most the largest CUDA graph (a forward beyond it runs eager, host-bound:
        #: 19-34 ms for 256-2,048 tokens of Qwen3-0.6B on an H200, 2026-12-03 traces)
        self.prefill_tokens = min(self.max_tokens, int(spec.get("max_cudagraph_capture_size") or self.max_tokens))
        #: uniform passes: a row two tokens behind catches up in a pass of its own, so that every pass of an op is
        #: a one-token decode batch (FULL CUDA graphs) rather than one first pass of mixed lengths (PIECEWISE)
        self.uniform = bool(spec.get("uniform_passes"))
        #: resident copies: a copy stays in vLLM's runner between ops (its persistent batch of the copy's half);
        #: an op rewrites only the tokens after the drafter's last right one (``runner.minedraft_rewrite_outputs``)
        #: instead of re-entering the copy with its whole token list
        self.runner = compat.engine_core_runner(self.core) if spec.get("resident") else None
        self.catch_ups = 0  # catch-up passes since the op began
        self.copies: dict[int, Copy] = {}
        self.to_finish: set[str] = set()  # left the runner since the last forward
        self.forwards = 0
        self.entries = 0  # copies (re-)entered into vLLM's runner, with their whole token list
        self.forward_s: list[float] = []  # wall time of each runner pass since the op began (vLLM's own work)
        self.facts = {"pid": os.getpid(), "device": compat.platform_name(), "block_size": self.block_size,
                      "num_blocks": self.num_blocks, "max_num_batched_tokens": self.max_tokens,
                      "max_num_seqs": self.max_reqs, "start_s": round(time.perf_counter() - t0, 3),
                      "enforce_eager": bool(cfg.model_config.enforce_eager), "vllm_version": compat.vllm_version(),
                      "fused_drafts": self.fused, "resident": self.runner is not None, "cpus": _cpus(),
                      "torch_threads": _torch_threads(),
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}

    # ---------------------------------------------------------------------------- blocks
    def _ensure_blocks(self, c: Copy, n_positions: int) -> None:
        need = -(-n_positions // self.block_size) - len(c.blocks)
        if need > len(self.free_blocks):
            raise RuntimeError(f"drafter KV cache full: need {need} more blocks, {len(self.free_blocks)} free "
                               f"(raise drafter_kv_cache_memory_bytes)")
        for _ in range(max(0, need)):
            c.blocks.append(self.free_blocks.pop())

    def free(self, ids) -> None:
        for rid in ids:
            c = self.copies.pop(int(rid), None)
            if c is None:
                continue
            self.free_blocks.extend(reversed(c.blocks))
            if c.entered >= 0:
                self.to_finish.add(str(int(rid)))

    # --------------------------------------------------------------------------- forwards
    def _forward(self, rows: list[int], n_new: dict[int, int], enter: set[int], drafts: int = 0) -> dict[int, int]:
        """One model forward computing ``n_new[rid]`` tokens of each copy in ``rows``; the copies in ``enter``
        (re-)enter vLLM's runner with their tokens and KV length; ``drafts``: how many tokens the engine's proposer
        adds after the sampled one (fused drafting; read them with ``compat.take_drafts``). Returns the tokens
        sampled (copies whose tokens were all computed), already appended to the copies."""
        from minedraft.executor import compat

        finished, self.to_finish = self.to_finish, set()
        new_reqs, cached = [], []
        for rid in rows:
            c = self.copies[rid]
            if rid in enter:
                if c.entered >= 0:
                    finished.add(str(rid))  # finished and added again in one forward: the runner drops the old first
                c.entered = len(c.tokens)
                c.sent_blocks = len(c.blocks)
                self.entries += 1
                new_reqs.append((str(rid), list(c.tokens), c.kv, list(c.blocks)))
            else:
                cached.append((str(rid), c.kv, len(c.tokens) - c.entered, c.blocks[c.sent_blocks:]))
                c.sent_blocks = len(c.blocks)
        so = compat.drafter_scheduler_output(new_reqs, cached, {str(r): int(n_new[r]) for r in rows}, finished,
                                             self.params, self.num_groups, drafts)
        t = time.perf_counter()
        out = compat.run_forward(self.core, so)
        self.forward_s.append(time.perf_counter() - t)
        self.forwards += 1
        got: dict[int, int] = {}
        for key, toks in zip(out.req_ids, out.sampled_token_ids):
            if len(toks):
                got[int(key)] = int(toks[-1])
        for rid in rows:
            c = self.copies[rid]
            c.kv += n_new[rid]
            if rid in got:
                c.tokens.append(got[rid])
        return got

    def _batches(self, rows: list[int], need: dict[int, int]) -> list[list[int]]:
        """Split rows into forwards within the drafter's token budget and batch size."""
        out, cur, used = [], [], 0
        for r in rows:
            if cur and (used + need[r] > self.max_tokens or len(cur) >= self.max_reqs):
                out.append(cur)
                cur, used = [], 0
            cur.append(r)
            used += need[r]
        if cur:
            out.append(cur)
        return out

    def prefill(self, ids, token_lists) -> None:
        """KV for each new request's tokens but the last (its first draft op starts from that token)."""
        todo = []
        for rid, toks in zip(ids, token_lists):
            rid = int(rid)
            self.free([rid])
            c = Copy([int(t) for t in toks])
            self._ensure_blocks(c, len(c.tokens) - 1)
            self.copies[rid] = c
            if len(c.tokens) > 1:
                todo.append(rid)
        started: set[int] = set()
        while todo:
            budget, rows, n_new = self.prefill_tokens, [], {}
            for rid in todo:  # chunked prefill: as many tokens as the budget takes
                c = self.copies[rid]
                n = min(len(c.tokens) - 1 - c.kv, budget)
                if n <= 0 or len(rows) >= self.max_reqs:
                    break
                rows.append(rid)
                n_new[rid] = n
                budget -= n
            self._forward(rows, n_new, enter={r for r in rows if r not in started})
            started.update(rows)
            todo = [r for r in todo if self.copies[r].kv < len(self.copies[r].tokens) - 1]

    def _stay(self, ids: list[int], keep, append, index: dict[int, int]) -> set[int]:
        """Copies that stay resident in the runner for this op: the runner's tokens rewritten after the drafter's
        last right one (``keep``), the target's ``append`` added. A copy whose rollback reaches into what it
        entered with (PEARL's assumed drafts) enters again instead."""
        stay = set()
        requests = self.runner.requests
        for rid in ids:
            c = self.copies[rid]
            state = requests.get(str(rid)) if c.entered >= 0 else None
            kp, ap = int(keep[index[rid]]), append[index[rid]]
            if state is None or kp < c.entered or len(state.output_token_ids) < kp - c.entered:
                continue
            self.runner.minedraft_rewrite_outputs(str(rid), kp - c.entered, [int(t) for t in ap])
            stay.add(rid)
        return stay

    def draft(self, ids, keep, append, n: int) -> np.ndarray:
        """Sync each copy (``keep`` tokens, then ``append``), then ``n`` greedy tokens for every request."""
        from minedraft.executor import compat

        ids = [int(r) for r in ids]
        out = np.zeros((len(ids), n), dtype=np.int32)
        fused = 0 < n - 1 <= self.fused
        # positions past the tokens a pass needs: vLLM's runner drafts for none of a pass's rows (zeros for all)
        # when one row's length + the proposer's drafts exceeds max_model_len, so such rows leave the pass
        lead = self.fused if fused else n - 1
        full = []
        for rid, kp, ap in zip(ids, keep, append):
            c = self.copies[rid]
            if kp > len(c.tokens):
                raise RuntimeError(f"request {rid}: keep {kp} > the drafter's {len(c.tokens)} tokens")
            del c.tokens[int(kp):]
            c.tokens.extend(int(t) for t in ap)
            c.kv = min(c.kv, len(c.tokens) - 1)
            if len(c.tokens) + lead > self.max_model_len:  # at the drafter's length limit: dummy drafts
                full.append(rid)                            # (the target rejects them; lossless)
                c.tokens.extend([0] * n)
                continue
            self._ensure_blocks(c, len(c.tokens) + n - 1)
        index = {r: i for i, r in enumerate(ids)}
        ids = [r for r in ids if r not in set(full)]
        need = {r: len(self.copies[r].tokens) - self.copies[r].kv for r in ids}
        stay = self._stay(ids, keep, append, index) if self.runner is not None and not fused else set()
        for rows in self._batches(ids, need):
            if any(need[r] > self.max_tokens for r in rows):
                raise RuntimeError(f"a request needs more new tokens than the drafter's budget {self.max_tokens}")
            if fused:  # one runner pass: the sampled token, then the proposer's drafts (no KV for them yet)
                got = self._forward(rows, need, set(rows), drafts=n - 1)
                more = compat.take_drafts(self.core)
                for r in rows:
                    extra = more[str(r)][:n - 1]
                    out[index[r], 0] = got[r]
                    out[index[r], 1:] = extra
                    self.copies[r].tokens.extend(extra)
                continue
            first_need, entered = need, stay
            behind = [r for r in rows if need[r] == 2] if self.uniform and max(need[r] for r in rows) <= 2 else []
            if behind:  # KV of the token before the last: no token is sampled for these rows (not all computed)
                self._forward(behind, dict.fromkeys(behind, 1), set(behind) - stay)
                self.catch_ups += 1
                first_need, entered = dict.fromkeys(rows, 1), set(behind) | stay
            for j in range(n):
                first = j == 0
                got = self._forward(rows, first_need if first else dict.fromkeys(rows, 1),
                                    set(rows) - entered if first else set())
                for r in rows:
                    out[index[r], j] = got[r]
        return out


def _cpus() -> int | None:
    """Cores this process may run on (its affinity; the engine's own process passes its mask on)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _switches() -> int:
    """Involuntary context switches of this thread so far (Linux; 0 elsewhere)."""
    import resource

    who = getattr(resource, "RUSAGE_THREAD", None)
    return int(resource.getrusage(who).ru_nivcsw) if who is not None else 0


def _serve(conn: Connection) -> int:
    spec = conn.recv()
    try:
        runner = DraftRunner(spec)
    except Exception:  # noqa: BLE001 - reported to the parent, then exit
        conn.send_bytes(pickle.dumps(("error", 0, traceback.format_exc(limit=20))))
        return 1
    conn.send_bytes(pickle.dumps(("ready", runner.facts)))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return 0  # the engine went away
        msg = pickle.loads(data)
        kind = msg[0]
        if kind == "stop":
            return 0
        seq = msg[1]
        try:
            t0, c0, s0 = time.perf_counter(), time.thread_time(), _switches()
            f0, e0 = runner.forwards, runner.entries
            runner.forward_s.clear()
            runner.catch_ups = 0
            if kind == "prefill":
                _, _, ids, tokens, free = msg
                runner.free(free)
                runner.prefill(ids, tokens)
                drafts = None
                n_tok = int(sum(len(t) for t in tokens))
            elif kind == "draft":
                _, _, ids, keep, append, n, free = msg
                runner.free(free)
                drafts = runner.draft(ids, keep, append, int(n))
                n_tok = int(sum(len(a) for a in append))
            else:
                raise ValueError(f"unknown drafter op {kind!r}")
            t1 = time.perf_counter()
            # where the op's time went: vLLM's runner passes, this thread's CPU time (wall - CPU = waiting for the
            # GPU or for a core), and the times the kernel took the core away (another process wanted it)
            stats = {"forwards": runner.forwards - f0, "entries": runner.entries - e0, "catch_ups": runner.catch_ups,
                     "tokens_in": n_tok,
                     "free_blocks": len(runner.free_blocks),
                     "forward_ms": [round(x * 1e3, 3) for x in runner.forward_s],
                     "cpu_ms": round((time.thread_time() - c0) * 1e3, 3), "preempted": _switches() - s0}
            conn.send_bytes(pickle.dumps(("done", seq, drafts, t0, t1, stats), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - reported, then the drafter stops (the engine goes on without it)
            conn.send_bytes(pickle.dumps(("error", seq, traceback.format_exc(limit=20))))
            return 1


def main(argv: list[str] | None = None) -> int:
    conn = child_connection(sys.argv[1:] if argv is None else argv,
                            "minedraft's drafter process (started by the PSD/PEARL plugin)")
    try:
        return _serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(main())

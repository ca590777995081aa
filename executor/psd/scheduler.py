"""PSD and PEARL inside vLLM V1: a scheduler that runs our policy objects and owns a drafter process.

Mode ``sd`` runs the simulator's ``SD`` policy with ``sd_drafter="own"`` on the same machinery: the whole
batch is drafted (a step with only the drafter's op; vLLM runs an empty step), then verified, with no
overlap: SD with the drafter on a device of its own, the baseline that isolates PSD's overlap.

vLLM's sync engine step is ``schedule() -> target forward + rejection sampling -> update_from_output()``.
This subclass of vLLM's ``Scheduler`` turns it into one policy step:

- ``schedule()``: if no policy step is in flight, ask the policy (``PSD`` / ``PEARL`` from
  ``minedraft.policies``, the simulator's classes) for its next ops; send the drafter op (draft half B,
  or PEARL's whole batch) to the drafter process and return at once; then let vLLM schedule only the
  requests of the target op (``self.running`` is narrowed for the call): a prefill, or a verify whose
  rows carry the drafts the drafter made last step (``request.spec_token_ids``).
- the target verifies with vLLM's own rejection sampler while the drafter drafts, in another process;
- ``update_from_output()``: vLLM applies the target's outcome; then the barrier: wait for the drafter,
  feed both outcomes to the policy (accepted counts, PEARL's validity), drop requests vLLM ended early
  (EOS, stop strings, aborts), and run follow-ups that belong to the same step (the drafter's prefill).

Requests wait *outside* vLLM until the policy admits them (vLLM's waiting queue holds only admitted
ones), so admission, half assignment and k are the policy's. The policy reserves each request's full
KV (prompt + max_tokens + k) against vLLM's pool, so vLLM never preempts; if it does, or the drafter
fails, the engine goes on without speculation (plain vLLM decoding, at most ``max_num_seqs`` rows a
step) and every request still finishes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from vllm.v1.core.sched.scheduler import Scheduler

from minedraft.executor.psd.book import DraftBook
from minedraft.executor.psd.config import PluginConfig
from minedraft.executor.psd.drafter import DrafterClient, DrafterFailed, drafter_env
from minedraft.ops import DRAFT, DRAFT_PREFILL, DRAFTER, PREFILL, RESOURCES, TARGET, Op, OpResult
from minedraft.policies import PEARL, PSD, SD, PolicyConfig

logger = logging.getLogger("minedraft.psd")
BOTH = frozenset(RESOURCES)
#: the most tokens a drafter forward runs under a CUDA graph (vLLM's default capture cap); prefills are chunked to it
DRAFTER_MAX_GRAPH_TOKENS = 512
EMPTY = np.empty(0, dtype=np.int64)


@dataclass
class Step:
    """One policy step in flight: its target op (or None) and drafter op (or None)."""

    target: Op | None
    draft: Op | None
    # drafter op: per request, the sequence length it drafts from, and whether it assumed drafts in flight
    draft_start: dict[int, int] = field(default_factory=dict)
    assumed: dict[int, bool] = field(default_factory=dict)
    # verify op: per request, the drafts scheduled and their position
    verify_drafts: dict[int, list[int]] = field(default_factory=dict)
    verify_pos: dict[int, int] = field(default_factory=dict)
    draft_info: list[dict] = field(default_factory=list)


def shared_gpu_share(want: float) -> float:
    """The drafter's ``gpu_memory_utilization`` on the target's GPU: ``want``, or what is still free there.

    vLLM refuses to start an engine whose share of the GPU (a fraction of its total memory) is not free;
    the scheduler (and so the drafter) starts after the target's KV cache took its share.
    """
    import torch

    free, total = torch.cuda.mem_get_info()
    return max(0.01, min(want, free / total - 0.01))


class PSDScheduler(Scheduler):
    """vLLM's sync scheduler, driven by a minedraft policy (``additional_config["minedraft"]["mode"]``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        vc = self.vllm_config
        self.psd = PluginConfig.from_additional_config(vc.additional_config)
        spec = vc.speculative_config
        if spec is None or spec.method != "custom_class":
            raise ValueError("minedraft PSD/PEARL needs speculative_config={'method': 'custom_class', 'model': "
                             "'minedraft.executor.psd.proposer.NullProposer', 'num_speculative_tokens': k} "
                             "(use minedraft.executor.psd.vllm_kwargs)")
        if vc.scheduler_config.async_scheduling:
            raise ValueError("minedraft PSD/PEARL needs async_scheduling=False (one step at a time)")
        if int(getattr(vc, "max_concurrent_batches", 1)) != 1:
            raise ValueError("minedraft PSD/PEARL needs one batch in flight (no pipeline parallelism)")
        self.k = int(spec.num_speculative_tokens)
        self.pearl = self.psd.mode == "pearl"
        self.sd = self.psd.mode == "sd"
        self.engine_max_num_seqs = m = int(vc.scheduler_config.max_num_seqs)
        self.curve = self.psd.curve()
        if self.curve is not None and self.curve.positions < self.k + (1 if self.pearl else 0):
            raise ValueError(f"minedraft.accept_curve has {self.curve.positions} positions; k = {self.k} needs "
                             f"{self.k + (1 if self.pearl else 0)}")
        rows = m  # the most rows one step verifies (a PSD half, at most one vLLM batch; PEARL's whole batch)
        budget = int(self.max_num_scheduled_tokens)
        if rows * (self.k + 1) > budget:
            raise ValueError(f"max_num_batched_tokens {budget} cannot verify {rows} rows of 1 + k = {self.k + 1} "
                             f"tokens in one step; raise it to at least {rows * (self.k + 1)}")
        self.psd_split = self.psd.psd_split if self.psd.mode == "psd" else "always"
        self.psd_split_rows = self.psd.psd_split_rows
        self._new_policy(m, self.psd.psd_capacity)
        self.book = DraftBook()
        self.held: dict[int, object] = {}  # policy id -> vLLM Request, not yet admitted
        self.req_of: dict[int, object] = {}  # policy id -> vLLM Request (live)
        self.pid_of: dict[str, int] = {}  # vLLM request id -> policy id
        self.to_drop: set[int] = set()
        self.to_free: list[int] = []  # drafter copies to release with the next drafter op
        self.step: Step | None = None
        self.next_ops: list[Op] | None = None
        self.unsent: Op | None = None  # the step's drafter op, sent once the target's forward is launched
        from minedraft.executor import compat

        send = self.psd.drafter_send
        self.send_at_launch = send == "launch" or (send == "auto" and not compat.is_cpu_build())
        self.sends = {"at_launch": 0, "at_schedule": 0, "at_barrier": 0}  # drafter ops by where they were sent
        self.rng = np.random.default_rng([self.psd.synthetic_seed, 0x5053])
        self.fallback: str | None = None  # why speculation stopped (None: it runs)
        self.events: list[dict] = []
        self.minedraft_psd_done: deque[dict] = deque()  # per vLLM step, when recording
        #: per engine step: seconds update_from_output waited for the drafter (benchmarks: the engine's serial time
        #: between two target steps minus this is the host's own work)
        self.minedraft_waits: deque[float] = deque(maxlen=1 << 16)
        self._waited = 0.0
        self.drafter = self._start_drafter(rows)
        self.facts = {"mode": self.psd.mode, "k": self.k, "resident_batches": self.psd.resident_batches,
                      "drafter_send": "launch" if self.send_at_launch else "schedule",
                      "drafter": dict(self.drafter.facts)}
        self._update_facts()

    def _new_policy(self, m: int, psd_capacity: str) -> None:
        """A fresh policy object for ``m`` = max_num_seqs (the engine's or less) and the PSD capacity mode."""
        double = psd_capacity == "double" and self.psd.mode == "psd"
        self.capacity = 2 * m if double else m
        self.half_capacity = m if double else max(1, m // 2)
        num_blocks = int(self.kv_cache_config.num_blocks)
        kv_tokens = (num_blocks - 1 - self.capacity) * int(self.block_size)
        need = int(self.vllm_config.model_config.max_model_len) + self.k
        if kv_tokens < need:
            raise ValueError(f"the KV cache ({num_blocks} blocks of {self.block_size}) is too small for "
                             f"{self.psd.mode} with {self.capacity} requests in flight: enlarge it or lower "
                             "max_num_seqs")
        pcfg = PolicyConfig(max_num_seqs=m, num_speculative_tokens=self.k, k_schedule=self.psd.k_schedule,
                            psd_capacity=psd_capacity, max_num_batched_tokens=int(self.max_num_scheduled_tokens),
                            psd_split=self.psd_split, psd_split_rows=self.psd_split_rows,
                            kv_capacity_tokens=kv_tokens, psd_limit_halves=True,  # a half is one vLLM batch
                            sd_drafter="own")
        # the policy object is ``plan``: vLLM's Scheduler owns ``self.policy`` (its FCFS/priority queue policy,
        # read by schedule() in 0.26; overwriting it broke the first GPU run)
        self.plan = (PEARL if self.pearl else SD if self.sd else PSD)(pcfg, EMPTY, EMPTY)
        self.psd_capacity = psd_capacity
        self.kv_tokens = kv_tokens

    def _update_facts(self) -> None:
        halves = self.psd.mode == "psd"
        self.facts.update({"psd_capacity": self.psd_capacity if halves else None, "capacity": self.capacity,
                           "psd_split": self.plan.cfg.psd_split if halves else None,
                           "psd_split_rows": self.plan.split_rows if halves and self.plan.auto else None,
                           "half_capacity": self.half_capacity if halves else None,
                           "max_num_seqs": int(self.plan.cfg.max_num_seqs), "kv_capacity_tokens": self.kv_tokens,
                           "synthetic_acceptance": self.curve.to_json() if self.curve is not None else None})

    # --------------------------------------------------------------- knobs between runs (idle only)
    def reconfigure(self, max_num_seqs: int | None = None, psd_capacity: str | None = None,
                    psd_split: str | None = None, psd_split_rows: int | None | str = "keep") -> None:
        """A new policy for the next run (idle engine only): max_num_seqs up to the engine's, PSD capacity, PSD's
        schedule (auto or always) and its threshold (None: split when one batch is full)."""
        if self.held or self.running or self.waiting or self.step is not None:
            raise RuntimeError("reconfigure the PSD/PEARL policy only while the engine is idle")
        m = int(max_num_seqs or self.plan.cfg.max_num_seqs)
        if not 1 <= m <= self.engine_max_num_seqs:
            raise ValueError(f"max_num_seqs must be in [1, {self.engine_max_num_seqs}] for this engine; got {m}")
        cap = psd_capacity or self.psd_capacity
        if cap not in ("double", "split"):
            raise ValueError(f"psd_capacity must be double or split; got {cap}")
        if psd_split is not None:
            if self.psd.mode != "psd" or psd_split not in ("auto", "always"):
                raise ValueError(f"psd_split must be auto or always, for mode psd; got {psd_split} ({self.psd.mode})")
            self.psd_split = psd_split
        if psd_split_rows != "keep":
            self.psd_split_rows = psd_split_rows
        self._new_policy(m, cap)
        self.next_ops = None
        self._update_facts()

    def set_curve(self, curve) -> None:
        """The synthetic acceptance curve from now on (the scheduler's part: PEARL's guess draws)."""
        if self.curve is None:
            raise RuntimeError("this engine was not started in the plugin's synthetic acceptance mode")
        if curve.positions < self.k + (1 if self.pearl else 0):
            raise ValueError(f"the curve has {curve.positions} positions; k = {self.k} needs more")
        self.curve = curve
        self._update_facts()

    # ------------------------------------------------------------------------------ drafter
    def _start_drafter(self, rows: int) -> DrafterClient:
        from minedraft.executor import compat

        vc, o = self.vllm_config, self.psd
        dev = o.drafter_device
        cpu = compat.is_cpu_build()
        if cpu:
            if dev not in ("auto", "cpu", "same"):
                raise ValueError(f"minedraft.drafter_device {dev}: the CPU build runs the drafter on the CPU")
            dev = "cpu"
        elif dev == "auto":
            world = int(vc.parallel_config.world_size)
            dev = f"cuda:{world}" if compat.gpu_count() > world else "same"
        elif dev == "cpu":
            raise ValueError("minedraft.drafter_device cpu: a GPU build runs the drafter on a GPU")
        extra = 2 * self.k + 2  # PEARL's drafter runs ahead of the target by its drafts in flight + k + 1
        spec = {"model": o.draft_model, "load_format": o.draft_load_format, "dtype": o.draft_dtype,
                "max_model_len": int(vc.model_config.max_model_len) + extra, "max_num_seqs": rows,
                "max_num_batched_tokens": o.drafter_max_num_batched_tokens
                or max(int(self.max_num_scheduled_tokens), rows * (self.k + 3)),
                "seed": int(vc.model_config.seed or 0),
                "enforce_eager": o.drafter_enforce_eager if o.drafter_enforce_eager is not None
                else bool(vc.model_config.enforce_eager)}
        if o.drafter_uniform_passes:
            spec["uniform_passes"] = True
        if o.resident_batches and not o.drafter_fused and not o.drafter_uniform_passes:
            spec["resident"] = True  # (a catch-up pass of some rows would evict the half's other rows)
        graphs = o.drafter_cudagraph_mode
        if graphs == "auto":  # full graphs for every pass, the op's mixed first pass and prefills included
            graphs = None if cpu else "FULL"
        if graphs is not None:
            spec["cudagraph_mode"] = graphs
        if not cpu and not spec["enforce_eager"]:  # graphs for prefill chunks too (vLLM's default: 2 x max_num_seqs)
            spec["max_cudagraph_capture_size"] = min(spec["max_num_batched_tokens"], DRAFTER_MAX_GRAPH_TOKENS)
        if o.drafter_fused:  # drafts per op: k (PEARL k + 1); the pass samples the first, the proposer the rest
            spec["fused_drafts"] = self.k - 1 + (1 if self.pearl else 0)
            spec["max_num_batched_tokens"] += rows  # the proposer's first pass takes one more slot per row
        if o.drafter_kv_cache_memory_bytes is not None:
            spec["kv_cache_memory_bytes"] = o.drafter_kv_cache_memory_bytes
        elif cpu:
            spec["kv_cache_memory_bytes"] = 256 << 20
        if not cpu:
            spec["gpu_memory_utilization"] = o.drafter_gpu_memory_utilization or (
                shared_gpu_share(0.15) if dev == "same" else 0.9)
        client = DrafterClient(spec, drafter_env(dev), o.drafter_start_timeout_s, o.drafter_op_timeout_s)
        client.facts["device_requested"] = dev
        logger.info("minedraft %s: drafter pid %d on %s", o.mode, client.pid, dev)
        return client

    def shutdown(self) -> None:
        try:
            self.drafter.close()
        finally:
            super().shutdown()

    # ----------------------------------------------------------------------------- requests
    def add_request(self, request) -> None:
        from minedraft.executor import compat

        if request.request_id in self.pid_of or self.fallback is not None:
            super().add_request(request)  # a streaming continuation, or no more speculation: vLLM's own path
            return
        pid = int(self.plan.add_requests([request.num_prompt_tokens], [compat.request_max_tokens(request)])[0])
        self.pid_of[request.request_id] = pid
        self.req_of[pid] = request
        self.held[pid] = request
        self.plan.arrive([pid])

    def finish_requests(self, request_ids, finished_status):
        if request_ids is None:
            ids = list(self.pid_of)
        elif isinstance(request_ids, str):
            ids = [request_ids]
        else:
            ids = list(request_ids)
        for rid in ids:
            pid = self.pid_of.get(rid)
            if pid is None:
                continue
            req = self.held.pop(pid, None)
            if req is not None:  # never admitted: vLLM does not know it yet
                req.status = finished_status
                self.plan.drop([pid])
                self._forget(pid)
            else:
                self.to_drop.add(pid)
        return super().finish_requests(request_ids, finished_status)

    def get_num_unfinished_requests(self) -> int:
        n = super().get_num_unfinished_requests()
        paused = getattr(getattr(self, "pause_state", None), "name", "") == "PAUSED_ALL"
        return n if paused else n + len(self.held)

    def get_request_counts(self) -> tuple[int, int]:
        r, w = super().get_request_counts()
        return r, w + len(self.held)

    def _forget(self, pid: int) -> None:
        req = self.req_of.pop(pid, None)
        self.held.pop(pid, None)
        if req is not None:
            self.pid_of.pop(req.request_id, None)
        if pid in self.book:
            self.book.forget(pid)
            self.to_free.append(pid)

    # -------------------------------------------------------------------------------- steps
    def schedule(self, *args, **kwargs):
        if self.fallback is None and self.step is None:
            try:
                self._start_step()
            except DrafterFailed as exc:
                self._stop_speculating(f"drafter failed: {exc}")
            else:
                st = self.step
                if st.target is None and st.draft is None and (self.held or self.running or self.waiting):
                    self._stop_speculating("the policy has no op for the requests it holds")  # never seen
        if self.fallback is not None:
            return self._schedule_plain(*args, **kwargs)
        st = self.step
        visible: set[str] = set()
        if st.target is not None and st.target.kind == PREFILL:
            for pid in st.target.reqs.tolist():
                req = self.req_of.get(pid)
                if req is not None and not req.is_finished() and req.num_output_tokens == 0:
                    visible.add(req.request_id)
        elif st.target is not None:  # VERIFY: each row with the drafts made for it
            lengths = st.target.verify_lengths
            for pid, n in zip(st.target.reqs.tolist(), lengths.tolist()):
                req = self.req_of.get(pid)
                if req is None or req.is_finished():
                    continue
                drafts = self.book.drafts(pid, int(n)) if n > 0 else []
                req.spec_token_ids = list(drafts)
                st.verify_drafts[pid] = list(drafts)
                st.verify_pos[pid] = len(req.all_token_ids)
                visible.add(req.request_id)
        out = self._schedule_only(visible, *args, **kwargs)
        if out.preempted_req_ids:
            self._stop_speculating(f"vLLM preempted {sorted(out.preempted_req_ids)} (KV cache full)")
        elif visible and st.target is not None and st.target.kind == PREFILL and not out.total_num_scheduled_tokens:
            self._stop_speculating("vLLM could not schedule the prefill the policy admitted (KV cache full)")
        return out

    def _schedule_only(self, visible: set[str], *args, **kwargs):
        """vLLM's schedule() over the running requests in ``visible`` (plus vLLM's waiting queue)."""
        # vLLM ships the whole token list of every request it did not schedule last step (the other half, every
        # step). Its V1 runner reads it only under async scheduling, which the plugin refuses: the runner caches
        # every request's tokens itself. So the scheduler counts every running request as seen.
        self.prev_step_scheduled_req_ids.update(r.request_id for r in self.running)
        hidden = [r for r in self.running if r.request_id not in visible]
        self.running = [r for r in self.running if r.request_id in visible]
        try:
            return super().schedule(*args, **kwargs)
        finally:
            self.running = self.running + hidden

    def _start_step(self) -> None:
        ops = self.next_ops if self.next_ops is not None else self.plan.next_ops(BOTH)
        self.next_ops = None
        target = next((o for o in ops if o.resource == TARGET), None)
        draft = next((o for o in ops if o.resource == DRAFTER), None)
        self.step = Step(target, draft)
        if target is not None and target.kind == PREFILL:
            for pid in target.reqs.tolist():
                req = self.held.pop(pid)
                Scheduler.add_request(self, req)
        if draft is None:
            return
        if self.send_at_launch:
            self.unsent = draft  # packed and sent in get_grammar_bitmask, while the target's forward runs
        else:
            self._send_draft(draft)
            self.sends["at_schedule"] += 1

    def get_grammar_bitmask(self, scheduler_output):
        """vLLM's engine step calls this between launching the target's forward and waiting for its tokens (sync
        scheduling): the drafter op's packing and send run here, off the serial path between two target steps."""
        out = super().get_grammar_bitmask(scheduler_output)
        self._flush_draft("at_launch")
        return out

    def _flush_draft(self, where: str) -> None:
        """Send the step's drafter op if it is not sent yet (a driver that skips get_grammar_bitmask gets it at the
        barrier, from update_from_output)."""
        op, self.unsent = self.unsent, None
        if op is None or self.fallback is not None:
            return
        try:
            self._send_draft(op)
            self.sends[where] += 1
        except DrafterFailed as exc:
            self._stop_speculating(f"drafter failed: {exc}")

    def _send_draft(self, op: Op) -> None:
        st = self.step
        free, self.to_free = self.to_free, []
        if op.kind == DRAFT_PREFILL:
            ids, tokens = [], []
            for pid in op.reqs.tolist():
                truth = list(self.req_of[pid].all_token_ids)
                self.book.prefilled(pid, len(truth))
                ids.append(pid)
                tokens.append(truth)
            self.drafter.send("prefill", ids, tokens, free)
            return
        assert op.kind == DRAFT, op
        ids, keep, append = [], [], []
        for pid in op.reqs.tolist():
            req = self.req_of[pid]
            truth_len = len(req.all_token_ids)
            assume = self.pearl and self.book.views[pid].pearl_valid
            kp, frm = self.book.sync(pid, truth_len, assume)
            tail = list(req.all_token_ids[frm:truth_len])
            ids.append(pid)
            keep.append(kp)
            append.append(tail)
            st.draft_start[pid] = kp + len(tail)
            st.assumed[pid] = assume
        self.drafter.send("draft", ids, keep, append, op.k + (1 if self.pearl else 0), free)

    def _drafter_result(self):
        """Wait for the drafter's op; the time waited counts into this engine step's ``minedraft_waits``."""
        t = time.perf_counter()
        try:
            return self.drafter.result()
        finally:
            self._waited += time.perf_counter() - t

    def update_from_output(self, scheduler_output, model_runner_output):
        self._waited = 0.0
        try:
            return self._update_from_output(scheduler_output, model_runner_output)
        finally:
            self.minedraft_waits.append(self._waited)

    def _update_from_output(self, scheduler_output, model_runner_output):
        t_target = time.perf_counter()
        sampled = self._sampled(scheduler_output, model_runner_output)
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        if self.fallback is not None or self.step is None:
            self._record(None, t_target)
            return outputs
        st = self.step
        if st.target is not None and st.target.kind == PREFILL and not self._prefill_complete(st.target):
            self._record(st, t_target, partial=True)  # a long prefill takes more vLLM steps
            return outputs
        try:
            self._end_step(st, sampled)
        except DrafterFailed as exc:
            self._stop_speculating(f"drafter failed: {exc}")
        self._record(st, t_target)
        return outputs

    @staticmethod
    def _sampled(so, mro) -> dict[str, int]:
        """Tokens the target produced per scheduled request (accepted drafts + 1), before vLLM's stop checks."""
        toks = mro.sampled_token_ids
        index = mro.req_id_to_index
        out = {}
        for rid in so.num_scheduled_tokens:
            i = index.get(rid)
            if i is not None and toks:
                out[rid] = len(toks[i])
        return out

    def _prefill_complete(self, op: Op) -> bool:
        for pid in op.reqs.tolist():
            req = self.req_of.get(pid)
            if req is not None and not req.is_finished() and req.num_output_tokens == 0 and pid not in self.to_drop:
                return False
        return True

    def _end_step(self, st: Step, sampled: dict[str, int]) -> None:
        """The barrier: the drafter's outcome, then the target's, into the policy; drops; follow-ups."""
        drafts = None
        if st.draft is not None:
            self._flush_draft("at_barrier")
            if self.fallback is not None:
                return
            drafts, info = self._drafter_result()
            if self.psd.record:
                st.draft_info.append(self._draft_record(st.draft, info))
            if st.draft.kind == DRAFT:
                for pid, toks in zip(st.draft.reqs.tolist(), drafts.tolist()):
                    self.book.drafted(pid, st.draft_start[pid], toks, self.pearl, st.assumed[pid])
        if st.target is not None:
            self.plan.on_done(st.target, self._target_result(st, sampled))
        if st.draft is not None:
            self.plan.on_done(st.draft, OpResult())
        self._apply_drops(st.target, st.draft)
        # ops of the same engine step (the drafter's prefill after the target's): run them now; a target op
        # (SD's verify after its draft) needs a vLLM step of its own: the next one
        while True:
            ops = self.plan.next_ops(BOTH)
            if not ops or ops[0].new_step or any(op.resource == TARGET for op in ops):
                self.next_ops = ops or None
                break
            for op in ops:
                sub = Step(None, op)
                self.step = sub
                self._send_draft(op)
                _, info = self._drafter_result()
                if self.psd.record:
                    st.draft_info.append(self._draft_record(op, info))
                self.plan.on_done(op, OpResult())
            self._apply_drops(*ops)
        self.step = None

    def _target_result(self, st: Step, sampled: dict[str, int]) -> OpResult:
        op = st.target
        if op.kind == PREFILL:
            return OpResult()
        reqs = op.reqs.tolist()
        acc = np.zeros(len(reqs), dtype=np.int64)
        valid = np.zeros(len(reqs), dtype=bool) if self.pearl else None
        for i, pid in enumerate(reqs):
            req = self.req_of.get(pid)
            if req is None:
                continue
            n = sampled.get(req.request_id, 0)
            acc[i] = max(0, n - 1)
            truth = req.all_token_ids
            if not self.pearl:
                self.book.verified_psd(pid, truth)
                continue
            drafts = st.verify_drafts.get(pid, [])
            match = None
            if self.curve is not None:  # synthetic: the guess matches with the curve's next conditional rate
                cond = self.curve.conditional
                match = bool(self.rng.random() < cond[min(len(drafts), len(cond) - 1)])
            ok = self.book.verified_pearl(pid, drafts, st.verify_pos.get(pid, len(truth) - 1 - acc[i]), truth, match)
            valid[i] = ok
            if op.probe is not None and op.probe[i]:
                acc[i] = 1 if ok else 0  # a probe reports the match (the policy's convention)
        return OpResult(accepted=acc, valid=valid)

    def _apply_drops(self, *ops: Op | None) -> None:
        """Requests vLLM ended that the policy still runs (EOS, stop strings, aborts), and finished ones. Only the
        requests of ``ops`` (the step's) can have finished since the last call; aborts arrive in ``to_drop``."""
        for op in ops:
            if op is None:
                continue
            for pid in op.reqs.tolist():
                req = self.req_of.get(pid)
                if req is not None and pid not in self.held and req.is_finished():
                    self.to_drop.add(pid)
        if self.to_drop:
            self.plan.drop(sorted(self.to_drop))
            for pid in self.to_drop:
                self._forget(pid)
            self.to_drop.clear()

    # ------------------------------------------------------------------- without speculation
    def _stop_speculating(self, why: str) -> None:
        """The drafter died (or vLLM preempted): go on as plain vLLM decoding; nothing is lost."""
        if self.fallback is not None:
            return
        logger.error("minedraft %s: %s; continuing without speculation", self.psd.mode, why)
        self.fallback = why
        self.events.append({"event": "speculation_stopped", "reason": why, "t": time.perf_counter()})
        self.step, self.next_ops, self.unsent = None, None, None
        for req in self.running:
            req.spec_token_ids = []
        try:
            self.drafter.close(kill=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _schedule_plain(self, *args, **kwargs):
        for req in self.running:  # vLLM 0.26's runner proposes k zero drafts near max_model_len: none here
            req.spec_token_ids = []
        n_run, n_wait = Scheduler.get_request_counts(self)
        for pid in list(self.held):
            if n_run + n_wait >= self.capacity:
                break
            Scheduler.add_request(self, self.held.pop(pid))
            n_wait += 1
        cap = int(self.max_num_running_reqs)
        if len(self.running) <= cap:
            return super().schedule(*args, **kwargs)
        # more requests in flight than one vLLM batch holds (PSD's doubled capacity): take turns
        visible = {r.request_id for r in self.running[:cap]}
        out = self._schedule_only(visible, *args, **kwargs)
        turn = [r for r in self.running if r.request_id in visible]
        self.running = [r for r in self.running if r.request_id not in visible] + turn
        return out

    # -------------------------------------------------------------------------------- records
    def _draft_record(self, op: Op, info: dict) -> dict:
        ids = [self.req_of[p].request_id for p in op.reqs.tolist() if p in self.req_of]
        n = op.k + (1 if self.pearl and op.kind == DRAFT else 0)
        return dict(info, op=op.kind, batch_id=int(op.batch_id), request_ids=ids, k=int(op.k) if op.kind == DRAFT
                    else 0, forwards_planned=n if op.kind == DRAFT else None)

    def _record(self, st: Step | None, t_target: float, partial: bool = False) -> None:
        if not self.psd.record:
            self.events.clear()
            return
        rec: dict = {"t_target_end": t_target, "events": list(self.events)}
        self.events.clear()
        if st is not None:
            tgt = st.target
            rec["target"] = tgt.kind if tgt is not None else None
            rec["batch_id"] = int(tgt.batch_id) if tgt is not None else None
            rec["k"] = int(tgt.k) if tgt is not None else 0
            rec["draft_ops"] = [] if partial else list(st.draft_info)
        self.minedraft_psd_done.append(rec)

"""The driver: one in-process vLLM engine, stepped by us, recording every step and request.

Both modes add requests and call ``LLMEngine.step()`` in a loop, exactly what ``LLM.generate`` does
offline (it adds every prompt, then steps until nothing is left), so the driver can time each step:

- **offline**: every request is added at t = 0, then the engine steps until all are finished;
- **online**: before each step, the requests whose arrival time has passed are added (a request that
  arrives mid-step waits for the step boundary, as it would in vLLM's engine-core loop); an idle engine
  sleeps until the next arrival.

Times are ``time.perf_counter()`` seconds from the run's start (plus ``t_offset`` for a resumed run).
A step's ``t_start``/``t_end`` bracket ``LLMEngine.step()`` (scheduling, forward passes, rejection,
drafting, output processing); a request's first token and finish are the ``t_end`` of the step that
produced them. Each op and each finished request is handed to ``emit`` at once (the CLI appends and
flushes it to the trace).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from minedraft.executor import compat
from minedraft.executor.models import ResolvedModel
from minedraft.executor.psd.records import step_records
from minedraft.executor.records import RequestLog, ScheduledStep, op_record

#: KV cache of the CPU build when neither its size nor a memory fraction is given.
CPU_DEFAULT_KV_BYTES = 1 << 30


@dataclass(slots=True)
class EngineSpec:
    """What an engine is started with. ``draft`` None = AR (no speculation)."""

    target: ResolvedModel
    draft: ResolvedModel | None = None
    k: int = 0
    max_num_seqs: int = 16
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    synthetic_rates: list[float] | None = None
    k_schedule: list[tuple[int, int, int]] | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None  # None: on for the CPU build, vLLM's default on GPU
    dtype: str = "auto"
    seed: int = 0
    #: False (default): vLLM's sync engine step, pinned for SD on both builds and used for AR alike.
    #: True: vLLM's async scheduling (its GPU default for AR; not on the CPU build).
    async_scheduling: bool = False
    extra_args: dict = field(default_factory=dict)
    #: PSD/PEARL through minedraft's vLLM plugin: its options (``mode``, ``psd_capacity``, ``accept_curve``,
    #: ``drafter_device``, ...; see :class:`minedraft.executor.psd.PluginConfig`); ``draft`` is the drafter.
    plugin: dict | None = None

    @property
    def speculative(self) -> bool:
        return self.draft is not None


@dataclass(slots=True)
class Job:
    """Requests to run: ids (workload indices), arrivals (s, sorted), lengths, prompt-token seed."""

    ids: np.ndarray
    arrival: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    seed: int = 0
    online: bool = False
    temperature: float = 0.0

    def __post_init__(self) -> None:
        order = np.argsort(self.arrival, kind="stable")
        self.ids, self.arrival = np.asarray(self.ids)[order], np.asarray(self.arrival, float)[order]
        self.prompt_len, self.output_len = np.asarray(self.prompt_len)[order], np.asarray(self.output_len)[order]


def kv_bytes_default(spec: EngineSpec) -> int | None:
    """The drafter's KV cache on the CPU build: the target's size (or the CPU default)."""
    return spec.kv_cache_memory_bytes or CPU_DEFAULT_KV_BYTES


def prompt_tokens(seed: int, rid: int, length: int, vocab: int) -> list[int]:
    """The prompt of request ``rid``: ``length`` token ids, the same for every policy and engine."""
    rng = np.random.default_rng([int(seed), int(rid), 0x6D64])
    lo, hi = (10, vocab - 10) if vocab > 100 else (0, vocab)
    return rng.integers(lo, hi, size=int(length)).tolist()


@dataclass
class RunResult:
    """What one run produced beside the records it emitted."""

    wall_s: float = 0.0
    output_tokens: int = 0
    num_steps: int = 0
    finished: int = 0
    #: vLLM's SpecDecodingStats summed over the run (stat logger): num_drafts, num_draft_tokens, ...
    spec_decode: dict | None = None
    tokens: dict[int, list[int]] | None = None
    mismatched_steps: int = 0  # steps where our per-row accepted sum differed from vLLM's step stats
    #: the run's change in this engine's ``get_metrics()`` spec-decode counters (None if not registered)
    vllm_counters: dict | None = None


class Engine:
    """One vLLM engine in this process, with our scheduler hook and stat logger installed."""

    def __init__(self, spec: EngineSpec, name: str = "minedraft") -> None:
        compat.pin_env()
        if spec.async_scheduling and compat.is_cpu_build():
            raise ValueError("async scheduling: the CPU build of vLLM forces it off")
        from minedraft.executor.hooks import (RecordingMixin, RecordingPSDScheduler, scheduler_qualname,
                                              stat_logger_factory)

        self.spec = spec
        self.served_name = f"{name}-{time.time_ns() & 0xFFFFFFFF:08x}"
        self._stats: deque = deque()
        enforce_eager = spec.enforce_eager if spec.enforce_eager is not None else (True if compat.is_cpu_build()
                                                                                   else None)
        args = dict(
            model=spec.target.path, load_format=spec.target.load_format, skip_tokenizer_init=True,
            tensor_parallel_size=spec.tensor_parallel_size, max_num_seqs=spec.max_num_seqs,
            max_model_len=spec.max_model_len, seed=spec.seed, dtype=spec.dtype,
            enable_prefix_caching=False,
            scheduler_cls=scheduler_qualname(spec.async_scheduling, psd=spec.plugin is not None),
            served_model_name=self.served_name,
        )
        if enforce_eager is not None:
            args["enforce_eager"] = enforce_eager
        if spec.max_num_batched_tokens is not None:
            args["max_num_batched_tokens"] = int(spec.max_num_batched_tokens)
        kv_bytes = spec.kv_cache_memory_bytes
        if kv_bytes is None and spec.gpu_memory_utilization is None and compat.is_cpu_build():
            # the CPU build sizes its cache from this; without it vLLM reserves 92% of the node's memory
            kv_bytes = CPU_DEFAULT_KV_BYTES
        if kv_bytes is not None:
            args["kv_cache_memory_bytes"] = int(kv_bytes)
        if spec.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = float(spec.gpu_memory_utilization)
        if spec.plugin is not None:
            if spec.draft is None or spec.async_scheduling:
                raise ValueError("the PSD/PEARL plugin needs a drafter and sync scheduling")
            from minedraft.executor.psd import vllm_kwargs

            opts = dict(spec.plugin)
            mode = opts.pop("mode", "psd")
            opts.setdefault("draft_load_format", spec.draft.load_format)
            opts.setdefault("draft_dtype", spec.dtype)
            opts.setdefault("record", True)
            if compat.is_cpu_build() and opts.get("drafter_kv_cache_memory_bytes") is None and kv_bytes_default(spec):
                opts["drafter_kv_cache_memory_bytes"] = kv_bytes_default(spec)
            kw = vllm_kwargs(spec.draft.path, spec.k, mode, scheduler_cls=args["scheduler_cls"], **opts)
            args.update(kw)
        elif spec.draft is not None:
            sc = compat.speculative_config(spec.draft.path, spec.k, spec.synthetic_rates,
                                            draft_tp=spec.tensor_parallel_size)
            if spec.draft.load_format != spec.target.load_format:
                raise ValueError("target and drafter must both be checkpoints or both dummy (one load_format)")
            if spec.k_schedule:
                sc["num_speculative_tokens_per_batch_size"] = [tuple(x) for x in spec.k_schedule]
            args["speculative_config"] = sc
        args["async_scheduling"] = bool(spec.async_scheduling)
        args.update(spec.extra_args)
        vllm_config = compat.build_config(compat.engine_args(**args), async_scheduling=bool(spec.async_scheduling))
        if spec.kv_cache_tokens is not None:
            bs = int(vllm_config.cache_config.block_size)
            vllm_config.cache_config.num_gpu_blocks_override = max(1, math.ceil(spec.kv_cache_tokens / bs))
        t0 = time.perf_counter()
        self.engine = compat.start_engine(vllm_config, [stat_logger_factory(self._stats)])
        self.start_s = time.perf_counter() - t0
        self.vllm_config = vllm_config
        self.scheduler = compat.scheduler(self.engine)
        if not isinstance(self.scheduler, RecordingMixin):
            raise RuntimeError("vLLM did not install minedraft's scheduler hook (scheduler_cls)")
        self.psd = isinstance(self.scheduler, RecordingPSDScheduler)
        self.facts = compat.engine_facts(vllm_config) | {"engine_start_s": round(self.start_s, 3)}
        if self.psd:
            self.facts["plugin"] = self.scheduler.facts
        self._n = 0

    # ------------------------------------------------------------------ knobs without a restart
    def set_max_num_seqs(self, n: int) -> None:
        if self.psd:  # the policy decides admission and halves: a fresh one for the new size
            self.scheduler.reconfigure(max_num_seqs=n)
            self.facts["plugin"] = self.scheduler.facts
        compat.set_max_num_seqs(self.engine, n)

    def set_psd_capacity(self, capacity: str) -> None:
        """PSD engines: ``double`` (each half max_num_seqs) or ``split`` (halves share it), between runs."""
        if not self.psd:
            raise RuntimeError("not a PSD/PEARL plugin engine")
        self.scheduler.reconfigure(psd_capacity=capacity)

    def set_plugin_curve(self, curve) -> None:
        """PSD/PEARL engines started with a synthetic curve: another curve (same k), between runs."""
        if not self.psd:
            raise RuntimeError("not a PSD/PEARL plugin engine")
        compat.set_plugin_curve(self.engine, curve)

    def set_synthetic_rates(self, rates: list[float]) -> None:
        compat.set_synthetic_rates(self.engine, rates)

    def spec_decode_counters(self) -> dict | None:
        return compat.spec_decode_counters(self.engine, self.served_name)

    def close(self) -> None:
        """Shut the engine down now; its memory (GPU included: vLLM releases in-process runners) is freed."""
        if getattr(self, "engine", None) is not None:
            engine, self.engine, self.scheduler = self.engine, None, None
            try:
                compat.shutdown(engine)
            finally:
                del engine
                compat.free_memory()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ running
    def _params(self, max_tokens: int, temperature: float):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(max_tokens=int(max_tokens), temperature=float(temperature), ignore_eos=True,
                              detokenize=False, output_kind=RequestOutputKind.DELTA)

    def _add(self, tag: str, tokens: list[int], max_tokens: int, temperature: float) -> str:
        from vllm.inputs import TokensPrompt

        self._n += 1
        return self.engine.add_request(f"{tag}", TokensPrompt(prompt_token_ids=tokens),
                                       self._params(max_tokens, temperature))

    def _drain(self) -> None:
        self.scheduler.minedraft_reset()
        if self.psd:
            self.scheduler.minedraft_psd_done.clear()
        self._stats.clear()

    @property
    def drafter_pid(self) -> int | None:
        """The PSD/PEARL drafter process (None for vLLM's own AR and SD)."""
        return self.scheduler.drafter.pid if self.psd else None

    def warmup(self, n: int, prompt_len: int, output_len: int = 16) -> None:
        """Run ``n`` throw-away requests (nothing recorded): first-step costs stay out of the timed run.

        Their lengths are staggered (request i generates about ``output_len * (i + 1) / n`` tokens), so the batch
        shrinks through every size down to one row. A run's tail does the same. On an H200 the first step of one row
        in vLLM's SD stalled for 0.75-1.25 s once per engine (2026-12-01/02 traces). Warm-up requests of one length
        finish together and never reach that path."""
        if n <= 0:
            return
        vocab = self.spec.target.vocab_size
        for i in range(n):
            self._add(f"warmup-{self._n}", prompt_tokens(0xBEEF, i, prompt_len, vocab),
                      max(1, output_len * (i + 1) // n), 0.0)
        while self.engine.has_unfinished_requests():
            self.engine.step()
        self._drain()

    def run(self, job: Job, policy: str, emit: Callable[[dict], None], t_offset: float = 0.0,
            progress: Callable[[int], None] | None = None, keep_tokens: bool = False) -> RunResult:
        """Run ``job`` to completion, emitting op and request records as they happen."""
        eng, sched = self.engine, self.scheduler
        if eng.has_unfinished_requests():
            raise RuntimeError("the engine still has requests from an earlier run")
        self._drain()
        before = self.spec_decode_counters()
        vocab = self.spec.target.vocab_size
        n = len(job.ids)
        logs: dict[int, RequestLog] = {}
        internal: dict[str, int] = {}
        res = RunResult(tokens={} if keep_tokens else None)
        sums = [0, 0, 0, None]  # drafts, draft tokens, accepted, per position
        prompts = [prompt_tokens(job.seed, int(r), int(p), vocab) for r, p in zip(job.ids, job.prompt_len)]
        i = 0
        last_end = t_offset
        t0 = time.perf_counter()
        while i < n or eng.has_unfinished_requests():
            now = time.perf_counter() - t0
            while i < n and (not job.online or job.arrival[i] <= now):
                rid = int(job.ids[i])
                logs[rid] = RequestLog(rid, t_offset + (float(job.arrival[i]) if job.online else 0.0),
                                       int(job.prompt_len[i]), int(job.output_len[i]))
                internal[self._add(str(rid), prompts[i], int(job.output_len[i]), job.temperature)] = rid
                i += 1
            if not eng.has_unfinished_requests():
                time.sleep(max(0.0, float(job.arrival[i]) - (time.perf_counter() - t0)))
                continue
            ts = time.perf_counter()
            outs = eng.step()
            te = time.perf_counter()
            t_call, t_end = t_offset + ts - t0, t_offset + te - t0
            for step in sched.minedraft_new:
                step.t_call = t_call
            sched.minedraft_new.clear()
            steps: list[ScheduledStep] = list(sched.minedraft_done)
            sched.minedraft_done.clear()
            infos: list[dict] = []
            if self.psd:
                infos = list(sched.minedraft_psd_done)
                sched.minedraft_psd_done.clear()
            stat = None
            while self._stats:
                s = self._stats.popleft()
                stat = s if stat is None else (stat[0] + s[0], stat[1] + s[1], stat[2] + s[2],
                                               [a + b for a, b in zip(stat[3], s[3])])
            if stat is not None:
                sums[0] += stat[0]
                sums[1] += stat[1]
                sums[2] += stat[2]
                sums[3] = stat[3] if sums[3] is None else [a + b for a, b in zip(sums[3], stat[3])]
            for step in steps:
                # sync: the call that scheduled the step also finished it; async: the step was scheduled one
                # call earlier and ran while the previous step finished, so steps tile the busy time
                t_start = max(last_end, step.t_call if step.t_call is not None else t_call)
                for row in step.rows:
                    lg = logs.get(internal.get(row.req, -1))
                    if lg is not None and lg.scheduled is None:
                        lg.scheduled = step.t_call if step.t_call is not None else t_start
                for p in step.preempted:
                    lg = logs.get(internal.get(p, -1))
                    if lg is not None:
                        lg.preemptions += 1
                if stat is not None and self.spec.speculative and len(steps) == 1:
                    ours = sum(a for rq, (_, a) in step.accepted.items() if rq in internal)
                    if ours != stat[2]:
                        res.mismatched_steps += 1
                per_pos = stat[3] if (stat is not None and len(steps) == 1) else None
                if self.psd:
                    recs = step_records(policy, step, infos.pop(0) if infos else None, internal, t_start, t_end,
                                        res.num_steps, lambda t: t_offset + t - t0, self.spec.plugin.get("mode") ==
                                        "pearl", per_pos)
                    for r in recs:
                        emit(r)
                    if recs:
                        res.num_steps += 1
                        last_end = t_end
                    continue
                rec = op_record(policy, step, internal, t_start, t_end, res.num_steps, self.spec.speculative, per_pos)
                if rec is not None:
                    emit(rec)
                    res.num_steps += 1
                    last_end = t_end
            done = 0
            for o in outs:
                rid = _our_id(o.request_id)
                lg = logs.get(rid) if rid is not None else None
                if lg is None:
                    continue
                new = list(o.outputs[0].token_ids) if o.outputs else []
                lg.gained(len(new), t_end)
                res.output_tokens += len(new)
                if keep_tokens:
                    res.tokens.setdefault(rid, []).extend(new)
                if o.finished:
                    lg.finish = t_end
                    emit(lg.record(policy))
                    done += 1
            res.finished += done
            if progress is not None and done:
                progress(done)
        res.wall_s = time.perf_counter() - t0
        res.vllm_counters = _delta(before, self.spec_decode_counters())
        if sums[3] is not None or sums[0]:
            res.spec_decode = {"num_drafts": sums[0], "num_draft_tokens": sums[1], "num_accepted_tokens": sums[2],
                               "num_accepted_tokens_per_pos": sums[3] or []}
        return res


def _delta(before: dict | None, after: dict | None) -> dict | None:
    if after is None:
        return None
    before = before or {}
    out = {}
    for key, v in after.items():
        b = before.get(key)
        if isinstance(v, list):
            out[key] = [x - y for x, y in zip(v, b)] if isinstance(b, list) and len(b) == len(v) else list(v)
        else:
            out[key] = v - (b or 0)
    return out


def _our_id(request_id: str) -> int | None:
    """``RequestOutput.request_id`` is the id we passed (vLLM appends a suffix only internally)."""
    try:
        return int(str(request_id).split("-")[0])
    except ValueError:
        return None

"""The two vLLM hooks the executor installs: a recording scheduler and a stat logger.

- :class:`RecordingScheduler` is vLLM's own sync ``Scheduler`` (given as ``scheduler_cls``), unchanged in
  behaviour: after each ``schedule()`` it notes every scheduled request's tokens, drafts and prior KV
  length, and it sees each request's accepted-draft count where vLLM computes it for its own
  spec-decode statistics (``make_spec_decoding_stats``, same signature in 0.26 and 0.32). The driver
  pops each :class:`~minedraft.executor.records.ScheduledStep` once vLLM has applied its output.
  :class:`RecordingAsyncScheduler` does the same over vLLM's ``AsyncScheduler`` (GPU builds only), and
  :class:`RecordingPSDScheduler` over the PSD/PEARL plugin's scheduler.
- :class:`StepStatsLogger` is a custom stat logger (``stat_loggers=``): it keeps vLLM's per-step
  ``SpecDecodingStats`` (drafts, draft tokens, accepted tokens, accepted per position), which the driver
  checks row sums against and keeps as the run's "recorded spec-decode counts".

Both keep their records on the instance (no module globals), so several engines can live in a process.
This module imports vLLM; the rest of the executor imports it only when an engine is built.
"""

from __future__ import annotations

from collections import deque

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.metrics.loggers import StatLoggerBase

from minedraft.executor.psd.scheduler import PSDScheduler
from minedraft.executor.records import Row, ScheduledStep


class RecordingMixin:
    """Notes each scheduled step, and moves it to ``minedraft_done`` when vLLM applies its output.

    Sync scheduling completes each step in the ``LLMEngine.step()`` call that scheduled it; with async
    scheduling (a batch queue two deep) a call schedules step N + 1 and completes step N, so steps are
    matched to outputs first in, first out. ``minedraft_new`` lists the steps scheduled since the
    driver last looked (it stamps them with that call's start time).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.minedraft_pending: deque[ScheduledStep] = deque()
        self.minedraft_done: deque[ScheduledStep] = deque()
        self.minedraft_new: list[ScheduledStep] = []
        self._minedraft_current: ScheduledStep | None = None

    def schedule(self, *args, **kwargs):
        out = super().schedule(*args, **kwargs)
        spec = out.scheduled_spec_decode_tokens
        rows = []
        for rid, n in out.num_scheduled_tokens.items():
            req = self.requests.get(rid)
            if req is None:
                continue
            # schedule() has already advanced num_computed_tokens by the scheduled tokens
            rows.append(Row(rid, int(n), len(spec.get(rid, ())), int(req.num_computed_tokens) - int(n),
                            int(req.num_prompt_tokens)))
        step = ScheduledStep(rows, int(out.total_num_scheduled_tokens), sorted(out.preempted_req_ids or ()))
        self.minedraft_pending.append(step)
        self.minedraft_new.append(step)
        return out

    def update_from_output(self, scheduler_output, model_runner_output):
        step = self.minedraft_pending.popleft() if self.minedraft_pending else None
        self._minedraft_current = step
        try:
            return super().update_from_output(scheduler_output, model_runner_output)
        finally:
            self._minedraft_current = None
            if step is not None:
                self.minedraft_done.append(step)

    def make_spec_decoding_stats(self, spec_decoding_stats, num_draft_tokens, num_accepted_tokens,
                                 num_invalid_spec_tokens, request_id):
        # Called from update_from_output for each verified request of the step being applied.
        step = self._minedraft_current
        if step is not None and num_draft_tokens:
            invalid = (num_invalid_spec_tokens or {}).get(request_id, 0)
            step.accepted[request_id] = (int(num_draft_tokens - invalid), int(num_accepted_tokens))
        return super().make_spec_decoding_stats(spec_decoding_stats, num_draft_tokens, num_accepted_tokens,
                                                num_invalid_spec_tokens, request_id)

    def minedraft_reset(self) -> None:
        self.minedraft_pending.clear()
        self.minedraft_done.clear()
        self.minedraft_new.clear()


class RecordingScheduler(RecordingMixin, Scheduler):
    """vLLM's sync scheduler, unchanged in behaviour, recording each step (the default, pinned for SD)."""


class RecordingAsyncScheduler(RecordingMixin, AsyncScheduler):
    """vLLM's async scheduler (GPU builds; vLLM's default for AR), recording each step."""


class RecordingPSDScheduler(RecordingMixin, PSDScheduler):
    """The PSD/PEARL plugin's scheduler (``additional_config["minedraft"]``), recording each vLLM step; the
    plugin keeps its own per-step facts (half, drafter ops and their times) in ``minedraft_psd_done``."""


class StepStatsLogger(StatLoggerBase):
    """Keeps each step's ``SpecDecodingStats`` (vLLM's own per-step spec-decode counts)."""

    def __init__(self, vllm_config, engine_index: int = 0, sink: deque | None = None) -> None:
        self.sink: deque = sink if sink is not None else deque()

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
        sd = getattr(scheduler_stats, "spec_decoding_stats", None) if scheduler_stats is not None else None
        if sd is not None:
            self.sink.append((int(sd.num_drafts), int(sd.num_draft_tokens), int(sd.num_accepted_tokens),
                              [int(x) for x in sd.num_accepted_tokens_per_pos]))

    def log_engine_initialized(self) -> None:
        pass


def stat_logger_factory(sink: deque):
    """A per-engine stat-logger factory writing into ``sink`` (vLLM calls it with (config, index))."""

    def make(vllm_config, engine_index: int = 0) -> StepStatsLogger:
        return StepStatsLogger(vllm_config, engine_index, sink)

    return make


def scheduler_qualname(async_scheduling: bool, psd: bool = False) -> str:
    cls = RecordingPSDScheduler if psd else RecordingAsyncScheduler if async_scheduling else RecordingScheduler
    return f"{cls.__module__}.{cls.__qualname__}"

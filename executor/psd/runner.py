"""Resident batches: vLLM's V1 model runner with one persistent batch per group of requests stepped together.

vLLM's V1 runner keeps one persistent batch (``InputBatch``) and assumes consecutive steps schedule mostly the
same requests: a request absent from a step is removed from it, and added back (its whole token list, block
table row and sampling state copied again, the sampling metadata rebuilt) when it returns. PSD alternates two
halves, so every step removed one half and re-added the other: the "half swap" (fitted at 4.3 ms + 124 µs a
row on an H200 before this class). The drafter's runner alternated its halves the same way.

:class:`ResidentBatches` is a subclass mixin of vLLM's runner (``GPUModelRunner``, or the CPU build's
``CPUModelRunner``; :func:`make_resident` derives the class). It keeps several ``InputBatch`` objects and, at the
start of each step (``_update_states``), makes the one that holds most of the step's requests the runner's
``input_batch``; vLLM's own ``_update_states`` then finds the half resident and updates only what changed. A
step whose requests are resident nowhere (a prefill of newcomers) runs in a batch of its own, so that it evicts
neither half. Each request is resident in at most one batch (a request that moves is removed from the other
first); finished requests leave every batch.

The extra batches are built by vLLM's own ``may_reinitialize_input_batch`` (the same arguments as the first),
each with logits processors of its own. On a GPU they share the first batch's device block table and slot
mapping: CUDA graphs captured against those addresses replay correctly for every batch, and both buffers are
rewritten from the active batch's host copy at every step (``commit_block_table``, the slot-mapping kernel).
"""

from __future__ import annotations

from types import SimpleNamespace

#: most persistent batches a runner keeps (two PSD halves and one for prefill steps)
MAX_BATCHES = 3


class ResidentBatches:
    """Mixin over vLLM's V1 ``GPUModelRunner``: requests stay resident in one of several persistent batches."""

    #: switch (benchmarks compare both ways on one engine); off: vLLM's single persistent batch
    minedraft_resident: bool = True

    def may_reinitialize_input_batch(self, *args, **kwargs):
        self._md_args = (args, kwargs)
        out = super().may_reinitialize_input_batch(*args, **kwargs)
        self._md_batches = [self.input_batch]
        return out

    # ----------------------------------------------------------------------------- the step
    def _update_states(self, scheduler_output):
        if self.minedraft_resident and getattr(self, "_md_args", None) is not None:
            self._md_select(scheduler_output)
        stats = self.minedraft_stats
        stats["steps"] += 1
        stats["rows_readded"] += sum(1 for rid in scheduler_output.scheduled_cached_reqs.req_ids
                                     if rid not in self.input_batch.req_id_to_index)
        return super()._update_states(scheduler_output)

    def minedraft_set_resident(self, on: bool) -> None:
        """Switch resident batches on or off between steps (benchmarks compare both on one engine). Every batch is
        emptied (vLLM adds each request back from its cached state at its next step), so no stale row survives."""
        if bool(on) == self.minedraft_resident:
            return
        for b in getattr(self, "_md_batches", None) or [self.input_batch]:
            for rid in list(b.req_id_to_index):
                b.remove_request(rid)
        if getattr(self, "_md_batches", None):
            self._md_batches = [self.input_batch]
        self.minedraft_resident = bool(on)

    @property
    def minedraft_stats(self) -> dict:
        """Steps and cached rows vLLM had to add back to the active batch (a half swap's re-sends)."""
        st = self.__dict__.get("_md_stats")
        if st is None:
            st = self.__dict__["_md_stats"] = {"steps": 0, "rows_readded": 0}
        return st

    def _md_select(self, so) -> None:
        batches = self._md_batches
        scheduled = so.num_scheduled_tokens
        counts = [sum(1 for rid in scheduled if rid in b.req_id_to_index) for b in batches]
        best = max(range(len(batches)), key=counts.__getitem__)
        if counts[best] == 0:  # newcomers only (or nothing): a batch that evicts nobody
            best = min(range(len(batches)), key=lambda i: batches[i].num_reqs)
            if batches[best].num_reqs and len(batches) < MAX_BATCHES:
                batches.append(self._md_new_batch())
                best = len(batches) - 1
        active = batches[best]
        for b in batches:
            if b is active:
                continue
            gone = [rid for rid in scheduled if rid in b.req_id_to_index]
            gone += [rid for rid in so.finished_req_ids if rid in b.req_id_to_index]
            for rid in gone:  # condensed when that batch is next active (vLLM's _update_states)
                b.remove_request(rid)
        self.input_batch = active

    def _md_new_batch(self):
        """Another InputBatch, built by vLLM's own code with the first one's arguments."""
        from vllm.utils.torch_utils import PIN_MEMORY
        from vllm.v1.sample.logits_processor import build_logitsprocs

        first = self.input_batch
        args, kwargs = self._md_args
        saved = self._init_block_sizes
        custom = tuple(getattr(self.vllm_config.model_config, "logits_processors", None) or ())
        procs = build_logitsprocs(self.vllm_config, self.device, PIN_MEMORY, self.is_pooling_model, custom)
        self.input_batch = SimpleNamespace(
            logitsprocs=procs, logitsprocs_need_output_token_ids=first.logitsprocs_need_output_token_ids)
        self._init_block_sizes = None  # differs from what vLLM compares with: it builds a new batch
        try:
            super().may_reinitialize_input_batch(*args, **kwargs)
            twin = self.input_batch
        finally:
            self.input_batch = first
            self._init_block_sizes = saved
        if self.device.type == "cuda":  # one device block table for all: CUDA graphs captured on its address
            for mine, theirs in zip(twin.block_table.block_tables, first.block_table.block_tables):
                mine.block_table.gpu = theirs.block_table.gpu
                mine.slot_mapping.gpu = theirs.slot_mapping.gpu
        return twin

    # ------------------------------------------------------------------- the drafter's copies
    def minedraft_rewrite_outputs(self, req_id: str, keep: int, append: list[int]) -> None:
        """Set a request's output tokens to its first ``keep`` plus ``append`` (the drafter's copy after the
        target's verdict), in its cached state and in whichever persistent batch holds it: what vLLM's runner
        does for the tokens it samples itself (``_bookkeeping_sync``)."""
        state = self.requests[req_id]
        del state.output_token_ids[keep:]
        state.output_token_ids.extend(append)
        for b in getattr(self, "_md_batches", None) or [self.input_batch]:
            i = b.req_id_to_index.get(req_id)
            if i is None:
                continue
            start = int(b.num_prompt_tokens[i]) + keep
            end = start + len(append)
            b.token_ids_cpu[i, start:end] = append
            b.is_token_ids[i, start:end] = True
            b.num_tokens_no_spec[i] = end


_CLASSES: dict[type, type] = {}


def make_resident(runner) -> None:
    """Give a V1 runner (constructed, KV cache not yet initialised) the :class:`ResidentBatches` behaviour by
    making it an instance of a subclass of its own class (vLLM 0.26 has no runner-factory seam on its workers;
    0.32's ``Worker._make_model_runner`` would do the same)."""
    cls = type(runner)
    if isinstance(runner, ResidentBatches):
        return
    sub = _CLASSES.get(cls)
    if sub is None:
        sub = _CLASSES[cls] = type(f"Resident{cls.__name__}", (ResidentBatches, cls), {})
    runner.__class__ = sub

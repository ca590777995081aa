"""Measure one model's forward times over a grid on vLLM: a :class:`~minedraft.latency.LatencyProfile`
(``minedraft-calibrate grid``; the fit is :mod:`minedraft.calibration.latency`).

The engine is the PSD drafter's (:class:`~minedraft.executor.psd.drafter.DraftRunner`): a vLLM engine core at
TP 1, its own model runner, KV cache, attention kernels and CUDA graphs, whose scheduler is unused; each
forward's ``SchedulerOutput`` is built here.

**Forward grid** (batch x new tokens x context). For each context, the largest batch's rows are prefilled to
``context`` tokens (seeded random token ids, chunked within ``max_num_batched_tokens``). For each batch (the
first ``batch`` rows) and each ``n``, the rows enter vLLM's runner with ``n`` fresh tokens after their
``context`` computed ones (one untimed forward), then ``warmup`` untimed and ``repeats`` timed forwards each
compute the same ``n`` positions of every row again and sample one token per row. The rows stay in the runner
between these forwards (no re-entry); the context does not drift: each forward rolls back cleanly, telling
the runner ``num_computed_tokens = context`` and ``num_output_tokens = 0``, which drops the token it sampled
last time (vLLM's own path for discarded outputs, the same in 0.26 and 0.32) and overwrites the same KV slots.
Greedy sampling then returns the entry forward's tokens each time; the share that does is recorded
(``rollback_token_agreement``, 1.0 when the rollback is exact).

**Prefill grid** (batch x prompt length): ``warmup`` + ``repeats`` forwards, each over ``batch`` fresh rows of
``prompt_len`` tokens (all computed in one forward, one token sampled per row, as vLLM's prefill), freed after.

**Timing.** Each forward is the wall time of one runner pass (``compat.run_forward``: execute + sample). It
returns once the sampled tokens are on the host, so the GPU work is synchronised without a sync of ours. A
grid point is the median of its ``repeats`` timed forwards; all samples are kept in the provenance.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from minedraft.calibration.latency import Fit, Points, fit_with_holdout
from minedraft.errors import InputError, require
from minedraft.latency import LatencyModel, LatencyProfile
from minedraft.presets import GPUSpec, ModelShape, model_presets

#: Grid axes' upper bounds (sanity, not vLLM's limits).
MAX_BATCH, MAX_NEW_TOKENS, MAX_CONTEXT = 4096, 256, 1 << 20


def parse_axis(text: str, field: str, lo: int, hi: int) -> tuple[int, ...]:
    """A comma list of integers in ``[lo, hi]`` -> sorted, without repeats (a grid axis)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    vals = []
    for p in parts:
        try:
            v = float(p)
            ok = math.isfinite(v) and v == int(v)
        except ValueError:
            ok = False
        require(ok and lo <= int(v) <= hi, field, f"must be a comma list of integers in [{lo}, {hi}]", text)
        vals.append(int(v))
    require(len(vals) > 0, field, f"must be a comma list of integers in [{lo}, {hi}]", text)
    return tuple(sorted(set(vals)))


@dataclass(frozen=True, slots=True)
class Grid:
    """What to measure: the axes, the repeats, and the token budget of one forward."""

    batch: tuple[int, ...]
    new_tokens: tuple[int, ...]
    context: tuple[int, ...]
    prompt_len: tuple[int, ...] = ()  # empty: no prefill grid
    prefill_batch: tuple[int, ...] = (1,)
    repeats: int = field(default=5, metadata={"help": "timed forwards per point (their median is the point)"})
    warmup: int = field(default=2, metadata={"help": "untimed forwards per point before the timed ones"})
    max_num_batched_tokens: int = field(default=8192, metadata={"help": "tokens one forward may compute"})
    seed: int = 0

    def __post_init__(self) -> None:
        axes = (("batch", self.batch, 1, MAX_BATCH), ("new_tokens", self.new_tokens, 1, MAX_NEW_TOKENS),
                ("context", self.context, 0, MAX_CONTEXT), ("prefill_batch", self.prefill_batch, 1, MAX_BATCH))
        for name, vals, lo, hi in (*axes, ("prompt_len", self.prompt_len or (1,), 1, MAX_CONTEXT)):
            ok = len(vals) > 0 and all(isinstance(v, int) and lo <= v <= hi for v in vals)
            require(ok and all(a < b for a, b in itertools.pairwise(vals)), name,
                    f"must be strictly increasing integers in [{lo}, {hi}]", list(vals))
        require(isinstance(self.repeats, int) and 1 <= self.repeats <= 1000, "repeats",
                "must be an integer in [1, 1000]", self.repeats)
        require(isinstance(self.warmup, int) and 0 <= self.warmup <= 1000, "warmup", "must be an integer in [0, 1000]",
                self.warmup)
        budget = self.max_num_batched_tokens
        require(isinstance(budget, int) and budget >= self.max_num_seqs, "max_num_batched_tokens",
                f"must be an integer >= the largest batch ({self.max_num_seqs}; vLLM's rule)", budget)
        decode = self.batch[-1] * self.new_tokens[-1]
        require(decode <= budget, "batch", f"the largest batch x the most new tokens ({self.batch[-1]} x "
                f"{self.new_tokens[-1]}) must fit one forward's {budget} tokens (--max-num-batched-tokens)", decode)
        if self.prompt_len:
            pre = self.prefill_batch[-1] * self.prompt_len[-1]
            require(pre <= budget, "prompt_len", f"the largest prefill batch x the longest prompt "
                    f"({self.prefill_batch[-1]} x {self.prompt_len[-1]}) must fit one forward's {budget} tokens "
                    "(--max-num-batched-tokens; a chunked prompt is not one forward)", pre)

    @property
    def max_num_seqs(self) -> int:
        return max(self.batch[-1], self.prefill_batch[-1] if self.prompt_len else 1)

    @property
    def max_model_len(self) -> int:
        """Positions a row needs: its tokens plus the one sampled after them."""
        return max(self.context[-1] + self.new_tokens[-1], self.prompt_len[-1] if self.prompt_len else 0) + 1

    @property
    def forward_points(self) -> int:
        return len(self.batch) * len(self.new_tokens) * len(self.context)

    @property
    def prefill_points(self) -> int:
        return len(self.prefill_batch) * len(self.prompt_len)

    def kv_rows(self) -> list[tuple[int, int]]:
        """(rows, tokens each) held in the KV cache at once: the forward grid's largest batch at its largest
        context plus the largest ``n``, and the prefill grid's largest batch of its longest prompt."""
        out = [(self.batch[-1], self.context[-1] + self.new_tokens[-1])]
        if self.prompt_len:
            out.append((self.prefill_batch[-1], self.prompt_len[-1]))
        return out

    def kv_blocks(self, block_size: int) -> int:
        return max(rows * -(-tokens // block_size) for rows, tokens in self.kv_rows())

    def kv_tokens(self) -> int:
        return max(rows * tokens for rows, tokens in self.kv_rows())


# ----------------------------------------------------------------------------------- checks (pure)
def check_positions(grid: Grid, max_positions: int | None, field: str = "context") -> None:
    """Every row must fit the model's positions."""
    if max_positions is not None:
        require(grid.max_model_len <= max_positions, field,
                f"context + new tokens + 1 (and prompt length + 1) must fit the model's {max_positions} positions",
                grid.max_model_len)


def check_kv_bytes(grid: Grid, kv_bytes: int, shape: ModelShape, field: str = "kv_cache_memory_gib") -> None:
    """Before the engine starts: the KV cache of ``kv_bytes`` must hold the grid's rows (block rounding aside)."""
    per_token = shape.kv_bytes_per_token
    cap = kv_bytes // per_token
    rows, tokens = max(grid.kv_rows(), key=lambda rt: rt[0] * rt[1])
    require(grid.kv_tokens() <= cap, field,
            f"must hold {rows} rows x {tokens} tokens ({grid.kv_tokens() * per_token / 2**30:.2f} GiB at "
            f"{per_token} bytes per token); shrink --batch or --context, or raise it",
            f"{kv_bytes / 2**30:.3g} GiB ({cap} tokens)")


def check_kv_blocks(grid: Grid, num_blocks: int, block_size: int, field: str) -> None:
    """After the engine starts: its KV blocks must hold the grid's rows (block 0 is vLLM's null block)."""
    need = grid.kv_blocks(block_size)
    rows, tokens = max(grid.kv_rows(), key=lambda rt: rt[0] * -(-rt[1] // block_size))
    require(need <= num_blocks - 1, field,
            f"the engine's KV cache must hold {rows} rows x {tokens} tokens ({need} blocks of {block_size}); "
            f"shrink --batch or --context, or give the KV cache more memory",
            f"{num_blocks - 1} blocks")


def default_cpu_kv_bytes(grid: Grid, shape: ModelShape | None) -> int:
    """KV memory for a run on vLLM's CPU build when none is given: the grid's rows with room for float32 and for
    block rounding (CPU blocks hold 128 tokens), at least 64 MiB."""
    if shape is None:
        return 1 << 30
    per_token_f32 = shape.kv_bytes_per_token * 4 // shape.dtype_bytes
    return max(64 << 20, 2 * (grid.kv_tokens() + grid.max_num_seqs * 128) * per_token_f32)


# ------------------------------------------------------------------------------ profiles (pure)
def profile_of(model: LatencyModel, grid: Grid, name: str, gpu: str, provenance: dict | None = None,
               tp: int = 1) -> LatencyProfile:
    """The profile ``model`` would measure on ``grid`` (synthetic profiles; predictions on a measured grid)."""
    fwd = [[[model.forward_time(b, n, c) for c in grid.context] for n in grid.new_tokens] for b in grid.batch]
    pre = None
    if grid.prompt_len:
        pre = {"batch": list(grid.prefill_batch), "prompt_len": list(grid.prompt_len),
               "seconds": [[model.prefill_time(b, p) for p in grid.prompt_len] for b in grid.prefill_batch]}
    return LatencyProfile(model=name, gpu=gpu, tensor_parallel_size=tp,
                          forward={"batch": list(grid.batch), "new_tokens": list(grid.new_tokens),
                                   "context_len": list(grid.context), "seconds": fwd},
                          prefill=pre, provenance=provenance or {})


def profile_shape(profile: LatencyProfile, field: str = "profile") -> ModelShape:
    """The model shape of a profile: its provenance's ``model_config`` (written by :func:`measure`), else the
    preset its model names."""
    cfg = profile.provenance.get("model_config")
    if not isinstance(cfg, dict):
        cfg = model_presets().get(profile.model.strip().lower())
    require(isinstance(cfg, dict), field, "needs provenance.model_config or a model preset name to know the "
            f"model's shape (presets: {', '.join(model_presets())})", profile.model)
    try:
        return ModelShape.from_hf_config(cfg, name=profile.model)
    except InputError as exc:
        raise exc.relabel(field) from None


def fit_profile(profile: LatencyProfile, shape: ModelShape, gpu: GPUSpec, holdout: float = 0.25,
                seed: int = 0, new_tokens: tuple[int, ...] | None = None,
                field: str = "fit_new_tokens") -> Fit:
    """The roofline fitted to a profile's forward grid, with its error on held-out points
    (:func:`minedraft.calibration.latency.fit_with_holdout`). ``new_tokens`` keeps only those columns of the grid
    (for example the one-token decodes, the only forwards an engine without a speculative config runs under full
    CUDA graphs); every value must be one the profile measured."""
    pts = Points.from_profile(profile)
    if new_tokens is not None:
        have = sorted({int(n) for n in profile.forward["new_tokens"]})
        missing = [n for n in new_tokens if n not in have]
        require(not missing, field, f"names new-token counts the profile did not measure (it has "
                f"{','.join(map(str, have))})", ",".join(map(str, missing)))
        pts = pts.subset(np.flatnonzero(np.isin(pts.new_tokens, new_tokens)))
    return fit_with_holdout(pts, shape, gpu, profile.tensor_parallel_size, holdout, seed)


# ---------------------------------------------------------------------------------------- engine
@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine is built (vLLM's spellings); the grid sets its batch, token and length limits."""

    dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    kv_cache_memory_bytes: int | None = None
    enforce_eager: bool | None = None  # None: vLLM's default (CUDA graphs on a GPU; eager on the CPU build)
    cudagraph_mode: str | None = None  # None: vLLM's (FULL_AND_PIECEWISE); FULL: n > 1 forwards under full graphs too

    def kv_flag(self, cpu_build: bool) -> str:
        """The flag that sizes the KV cache (named when it is too small)."""
        given = self.kv_cache_memory_bytes is not None or cpu_build
        return "--kv-cache-memory-gib" if given else "--gpu-memory-utilization (or --kv-cache-memory-gib)"

    def spec(self, path: str, load_format: str, grid: Grid, cpu_build: bool, shape: ModelShape | None) -> dict:
        spec = {"model": path, "load_format": load_format, "dtype": self.dtype, "seed": grid.seed,
                "max_model_len": grid.max_model_len, "max_num_seqs": grid.max_num_seqs,
                "max_num_batched_tokens": grid.max_num_batched_tokens, "enforce_eager": self.enforce_eager,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "kv_cache_memory_bytes": self.kv_cache_memory_bytes, "cudagraph_mode": self.cudagraph_mode}
        if cpu_build and self.kv_cache_memory_bytes is None:
            spec["kv_cache_memory_bytes"] = default_cpu_kv_bytes(grid, shape)
        return spec


def measure(model, grid: Grid, engine: EngineOptions | None = None, progress: Callable[[int], None] | None = None,
            label: str | None = None, gpu: str | None = None, command: str | None = None) -> LatencyProfile:
    """Start an engine for ``model`` (a :class:`~minedraft.executor.models.ResolvedModel`), measure ``grid``,
    shut the engine down. ``gpu`` names the profile's GPU (a preset key; default: the device's name)."""
    from minedraft.executor import compat
    from minedraft.executor.psd.drafter import DraftRunner

    engine = engine or EngineOptions()
    label = label or model.label
    try:
        shape = ModelShape.from_hf_config(model.config, name=label)
    except InputError:
        shape = None
    t0 = time.perf_counter()
    cpu = compat.is_cpu_build()
    runner = DraftRunner(engine.spec(model.path, model.load_format, grid, cpu, shape))
    try:
        check_kv_blocks(grid, runner.num_blocks, runner.block_size, engine.kv_flag(cpu))
        m = _Measurer(runner, grid, progress or (lambda n: None), model.vocab_size)
        fwd, fwd_samples = m.forward_grid()
        pre, pre_samples = m.prefill_grid() if grid.prompt_len else (None, None)
        facts = _engine_facts(runner, grid)
        device = device_facts()
    finally:
        runner.core.shutdown()
    wall = time.perf_counter() - t0
    prov = {"command": command or " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **device, "vllm": compat.vllm_version(), "model": label, "load_format": model.load_format,
            "model_config": model.config, "tensor_parallel_size": 1, **facts,
            "grid": {"repeats": grid.repeats, "warmup": grid.warmup, "seed": grid.seed},
            "method": "median of `repeats` timed runner passes (compat.run_forward: execute + sample, returns with "
                      "the tokens on the host) after an entry forward and `warmup` untimed ones; rows stay in vLLM's "
                      "runner and each forward recomputes the same positions (rollback: num_computed_tokens = "
                      "context, num_output_tokens = 0); prefill points: fresh rows each forward",
            "rollback_token_agreement": m.agreement, "wall_s": round(wall, 1),
            "samples_s": {"forward": fwd_samples, **({"prefill": pre_samples} if pre_samples else {})}}
    forward = {"batch": list(grid.batch), "new_tokens": list(grid.new_tokens), "context_len": list(grid.context),
               "seconds": fwd}
    prefill = None if pre is None else {"batch": list(grid.prefill_batch), "prompt_len": list(grid.prompt_len),
                                        "seconds": pre}
    return LatencyProfile(model=label, gpu=gpu or device["device"], tensor_parallel_size=1, forward=forward,
                          prefill=prefill, dtype=facts["dtype"], provenance=prov)


class _Measurer:
    """The grid's forwards on one :class:`DraftRunner` (its copies, blocks and entry forward; timed passes here)."""

    def __init__(self, runner, grid: Grid, progress: Callable[[int], None], vocab: int) -> None:
        self.r, self.g, self.progress = runner, grid, progress
        self.rng = np.random.default_rng(grid.seed)
        self.lo, self.hi = min(10, vocab - 1), vocab
        self.next_id = 0
        self.same = self.total = 0

    @property
    def agreement(self) -> float | None:
        return round(self.same / self.total, 6) if self.total else None

    def _tokens(self, n: int) -> list[int]:
        return self.rng.integers(self.lo, self.hi, n).tolist()

    def _ids(self, n: int) -> list[int]:
        self.next_id += n
        return list(range(self.next_id - n, self.next_id))

    def _pass(self, new_reqs: list, cached: list, sched: dict[str, int]) -> tuple[float, dict[str, int]]:
        """One timed runner pass; returns (seconds, the token sampled per row)."""
        from minedraft.executor import compat

        finished, self.r.to_finish = self.r.to_finish, set()
        so = compat.drafter_scheduler_output(new_reqs, cached, sched, finished, self.r.params, self.r.num_groups)
        t = time.perf_counter()
        out = compat.run_forward(self.r.core, so)
        dt = time.perf_counter() - t
        return dt, {k: int(toks[-1]) for k, toks in zip(out.req_ids, out.sampled_token_ids) if len(toks)}

    def forward_grid(self) -> tuple[list, list]:
        g, r = self.g, self.r
        samples = np.zeros((len(g.batch), len(g.new_tokens), len(g.context), g.repeats))
        for ci, ctx in enumerate(g.context):
            ids = self._ids(g.batch[-1])
            r.prefill(ids, [self._tokens(ctx + 1) for _ in ids])  # KV for `ctx` tokens of every row
            for rid in ids:
                r._ensure_blocks(r.copies[rid], ctx + g.new_tokens[-1])  # handed to the runner at entry
            for bi, b in enumerate(g.batch):
                rows = ids[:b]
                for ni, n in enumerate(g.new_tokens):
                    for rid in rows:  # `ctx` computed tokens and `n` new ones, entering the runner (untimed)
                        c = r.copies[rid]
                        c.tokens = c.tokens[:ctx] + self._tokens(n)
                        c.kv = ctx
                    want = r._forward(rows, dict.fromkeys(rows, n), enter=set(rows))
                    cached = [(str(rid), ctx, 0) for rid in rows]  # rollback: the same n positions again
                    sched = {str(rid): n for rid in rows}
                    for i in range(g.warmup + g.repeats):
                        dt, got = self._pass([], cached, sched)
                        self.same += sum(got.get(str(rid)) == want.get(rid) for rid in rows)
                        self.total += len(rows)
                        if i >= g.warmup:
                            samples[bi, ni, ci, i - g.warmup] = dt
                    self.progress(1)
            r.free(ids)
        return np.median(samples, axis=-1).tolist(), np.round(samples, 9).tolist()

    def prefill_grid(self) -> tuple[list, list]:
        from minedraft.executor.psd.drafter import Copy

        g, r = self.g, self.r
        samples = np.zeros((len(g.prefill_batch), len(g.prompt_len), g.repeats))
        for bi, b in enumerate(g.prefill_batch):
            for pi, p in enumerate(g.prompt_len):
                for i in range(g.warmup + g.repeats):
                    rows, new = self._ids(b), []
                    for rid in rows:
                        c = Copy(self._tokens(p), kv=p, entered=p)
                        r._ensure_blocks(c, p)
                        r.copies[rid] = c
                        new.append((str(rid), list(c.tokens), 0, list(c.blocks)))
                    dt, _ = self._pass(new, [], {str(rid): p for rid in rows})
                    r.free(rows)  # they leave the runner in the next forward, as finished requests do
                    if i >= g.warmup:
                        samples[bi, pi, i - g.warmup] = dt
                self.progress(1)
        return np.median(samples, axis=-1).tolist(), np.round(samples, 9).tolist()


def _engine_facts(runner, grid: Grid) -> dict:
    cfg = runner.core.vllm_config
    cc = cfg.compilation_config
    sizes = getattr(cc, "cudagraph_capture_sizes", None)
    return {"dtype": str(cfg.model_config.dtype).removeprefix("torch."),
            "enforce_eager": bool(cfg.model_config.enforce_eager),
            "cudagraph_mode": str(getattr(cc, "cudagraph_mode", None)),
            "cudagraph_capture_sizes": list(sizes) if sizes else [],
            "engine": {"block_size": runner.block_size, "num_blocks": runner.num_blocks,
                       "max_num_seqs": grid.max_num_seqs, "max_num_batched_tokens": grid.max_num_batched_tokens,
                       "max_model_len": grid.max_model_len, "start_s": runner.facts.get("start_s"),
                       **_kv_sizing(cfg.cache_config),
                       "sampling": "greedy, one token per row"}}


def _kv_sizing(cache_config) -> dict:
    """What sized the KV cache: the bytes given, else the share of GPU memory (vLLM ignores it when bytes are given)."""
    kv = getattr(cache_config, "kv_cache_memory_bytes", None)
    if kv is not None:
        return {"kv_cache_memory_bytes": int(kv)}
    return {"gpu_memory_utilization": getattr(cache_config, "gpu_memory_utilization", None)}


def device_facts() -> dict:
    """The device and software the forwards ran on."""
    import torch

    out: dict = {"torch": str(torch.__version__), "python": platform.python_version()}
    if torch.cuda.is_available():
        out |= {"device": torch.cuda.get_device_name(0), "driver": _nvidia_driver(), "cuda": torch.version.cuda}
    else:
        out |= {"device": "cpu", "cpu_model": _cpu_model(), "torch_threads": int(torch.get_num_threads()),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    return out


def _nvidia_driver() -> str | None:
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        with open("/proc/driver/nvidia/version") as fh:
            return fh.readline().strip() or None
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

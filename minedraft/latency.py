"""Latency models: how long one forward pass of one model takes.

The single entry point is :meth:`LatencyModel.forward_time` (and :meth:`LatencyModel.prefill_time` for
prompts). Fixed per-step costs that are not a forward pass (scheduling, sampling and rejection,
draft<->target transfers) live in :class:`minedraft.costs.StepCosts`, apart from kernel time, as in Vidur.

- :class:`Constant` — every forward takes the same time (the simulator's hand-checkable mode);
- :class:`Affine` — ``a + beta * batch * new_tokens``: a fixed cost plus a cost per token in the forward
  (the theory's batch-dependent step-time model; the simulator runs it too);
- :class:`Roofline` — max(FLOPs / peak, bytes / bandwidth) plus a per-forward floor, from a model shape,
  a GPU spec and a tensor-parallel size (uncalibrated: efficiencies and floors are defaults);
- :class:`Table` — interpolates a measured :class:`LatencyProfile` (written by calibration).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minedraft.errors import InputError, read_json, require
from minedraft.presets import GPUSpec, ModelShape


class LatencyModel(ABC):
    """Seconds for one forward pass of one model at one parallel layout."""

    label: str = ""

    @abstractmethod
    def forward_time(self, batch: int, new_tokens: float, context_len: float) -> float:
        """A decode-type forward: ``batch`` sequences, ``new_tokens`` each (1 for a decode or draft
        step, k + 1 for a verification), ``context_len`` cached tokens per sequence on average."""

    def prefill_time(self, batch: int, prompt_len: float) -> float:
        """A prompt forward: ``batch`` prompts of ``prompt_len`` tokens on average, nothing cached."""
        return self.forward_time(batch, prompt_len, 0.0)

    def chunk_time(self, tokens: float) -> float:
        """What ``tokens`` prompt tokens add to a forward they ride in (vLLM V1's chunked prefill):
        by default the marginal cost of a prompt of that many tokens over a one-token forward."""
        return max(0.0, self.prefill_time(1, tokens) - self.prefill_time(1, 1))


@dataclass(frozen=True, slots=True)
class Constant(LatencyModel):
    """Every forward takes ``forward_s``; every prefill ``prefill_s``, whatever the shapes."""

    forward_s: float
    prefill_s: float = 0.0

    def __post_init__(self) -> None:
        for f in ("forward_s", "prefill_s"):
            v = getattr(self, f)
            require(math.isfinite(v) and v >= 0, f, "must be a finite time >= 0", v)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"constant {self.forward_s * 1e3:g} ms"

    def forward_time(self, batch: int, new_tokens: float, context_len: float) -> float:
        return self.forward_s

    def prefill_time(self, batch: int, prompt_len: float) -> float:
        return self.prefill_s


@dataclass(frozen=True, slots=True)
class Affine(LatencyModel):
    """``T(b, n) = fixed_s + per_token_s * max(b * n, knee_tokens) (+ per_context_s * b * ctx)``: a
    batch-independent part plus a part per token (and, optionally, per cached token read).

    ``knee_tokens`` (default 0: a straight line) is where a forward stops being bound by the weight reads
    and starts paying per token: below it the token term is flat (the roofline's knee, measured).

    ``b`` sequences with ``n`` new tokens each. A prompt forward is the same line over ``b * prompt_len``
    tokens at ``prefill_token_s`` per token (default ``per_token_s``); prompt chunks riding in another
    forward cost that per token too. ``per_token_s = 0`` is :class:`Constant`. Calibration fits all four
    terms to measured vLLM steps (``minedraft.calibration.steps``).
    """

    fixed_s: float
    per_token_s: float
    per_context_s: float = 0.0
    prefill_token_s: float | None = None
    knee_tokens: float = 0.0

    def __post_init__(self) -> None:
        for f in ("fixed_s", "per_token_s", "per_context_s", "knee_tokens"):
            v = getattr(self, f)
            require(math.isfinite(v) and v >= 0, f, "must be a finite time >= 0", v)
        p = self.prefill_token_s
        require(p is None or (math.isfinite(p) and p >= 0), "prefill_token_s", "must be a finite time >= 0", p)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"affine {self.fixed_s * 1e3:g} ms + {self.per_token_s * 1e6:g} us/token"

    @property
    def _prompt_token_s(self) -> float:
        return self.per_token_s if self.prefill_token_s is None else self.prefill_token_s

    def forward_time(self, batch: int, new_tokens: float, context_len: float) -> float:
        tokens = max(batch * new_tokens, self.knee_tokens)
        return self.fixed_s + self.per_token_s * tokens + self.per_context_s * batch * context_len

    def prefill_time(self, batch: int, prompt_len: float) -> float:
        return self.fixed_s + self._prompt_token_s * batch * prompt_len

    def chunk_time(self, tokens: float) -> float:
        return self._prompt_token_s * tokens


@dataclass(frozen=True, slots=True)
class Roofline(LatencyModel):
    """Analytic step time of a transformer on a GPU, split ``tp`` ways by tensor parallelism.

    ``time = max(FLOPs / (peak * flop_efficiency), bytes / (bandwidth * bandwidth_efficiency))
    + floor_s + floor_per_layer_s * layers + per_seq_s * batch + all-reduce time``. Bytes count weights
    (read once per forward), KV-cache reads and writes, activations and logits; FLOPs count matmuls, attention and the
    LM head at the positions that need logits. With ``tp > 1`` each layer does two all-reduces of the
    activations (ring: ``2 (tp - 1) / tp`` of the bytes over the GPU link, plus a latency each).
    """

    model: ModelShape
    gpu: GPUSpec
    tp: int = 1
    flop_efficiency: float = 0.6
    bandwidth_efficiency: float = 0.8
    floor_s: float = 50e-6
    floor_per_layer_s: float = 15e-6
    allreduce_latency_s: float = 8e-6
    #: Host-side cost per sequence in the batch (input preparation, sampling); fitted by calibration.
    per_seq_s: float = 0.0

    def __post_init__(self) -> None:
        require(isinstance(self.tp, int) and self.tp >= 1, "tensor_parallel_size", "must be an integer >= 1", self.tp)
        require(self.model.num_heads % self.tp == 0, "tensor_parallel_size",
                f"must divide the model's {self.model.num_heads} attention heads", self.tp)
        for f in ("flop_efficiency", "bandwidth_efficiency"):
            v = getattr(self, f)
            require(0 < v <= 1, f, "must be in (0, 1]", v)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"roofline {self.model.name} on {self.gpu.key} tp{self.tp}"

    def _time(self, batch: int, new_tokens: float, context_len: float, logit_tokens: float, causal: bool) -> float:
        m, tp, dt = self.model, self.tp, self.model.dtype_bytes
        tokens = batch * new_tokens
        kv_heads_per_gpu = max(1, math.ceil(m.num_kv_heads / tp))
        kv_bytes_token_gpu = 2 * m.num_layers * kv_heads_per_gpu * m.head_dim * dt
        # Attention: each new token attends to the cached context plus (causally) the new tokens.
        attended = context_len + ((new_tokens + 1) / 2 if causal else new_tokens)
        flops = (
            2 * tokens * m.layer_params
            + 4 * tokens * attended * m.num_heads * m.head_dim * m.num_layers
            + 2 * logit_tokens * m.lm_head_params
        ) / tp
        weight_bytes = (m.layer_params + m.lm_head_params) * dt / tp
        kv_bytes = batch * context_len * kv_bytes_token_gpu + tokens * kv_bytes_token_gpu
        act_bytes = tokens * m.num_layers * (8 * m.hidden_size + 3 * m.intermediate_size / tp) * dt
        logit_bytes = logit_tokens * m.vocab_size * 4 / tp
        byte_total = weight_bytes + kv_bytes + act_bytes + logit_bytes
        t = max(flops / (self.gpu.bf16_flops * self.flop_efficiency),
                byte_total / (self.gpu.hbm_bytes_per_s * self.bandwidth_efficiency))
        t += self.floor_s + self.floor_per_layer_s * m.num_layers + self.per_seq_s * batch
        if tp > 1:
            ar_bytes = tokens * m.hidden_size * dt
            t += 2 * m.num_layers * (self.allreduce_latency_s + 2 * (tp - 1) / tp * ar_bytes / self.gpu.link_bytes_per_s)
        return t

    def forward_time(self, batch: int, new_tokens: float, context_len: float) -> float:
        return self._time(batch, new_tokens, context_len, logit_tokens=batch * new_tokens, causal=True)

    def prefill_time(self, batch: int, prompt_len: float) -> float:
        return self._time(batch, prompt_len, 0.0, logit_tokens=batch, causal=True)


# ------------------------------------------------------------------------------------ measured profiles
PROFILE_KIND = "minedraft.latency_profile"


@dataclass(frozen=True)
class LatencyProfile:
    """Measured step times of one model at one layout, with provenance (GPU, software, date, ...).

    ``forward`` is a full grid over ``batch`` x ``new_tokens`` x ``context_len`` of seconds;
    ``prefill`` (optional) a grid over ``batch`` x ``prompt_len``.
    """

    model: str
    gpu: str
    tensor_parallel_size: int
    forward: dict
    prefill: dict | None = None
    dtype: str = "bfloat16"
    provenance: dict = field(default_factory=dict)

    FORWARD_AXES = ("batch", "new_tokens", "context_len")
    PREFILL_AXES = ("batch", "prompt_len")

    def __post_init__(self) -> None:
        _check_grid(self.forward, self.FORWARD_AXES, "forward")
        if self.prefill is not None:
            _check_grid(self.prefill, self.PREFILL_AXES, "prefill")
        require(isinstance(self.tensor_parallel_size, int) and self.tensor_parallel_size >= 1,
                "tensor_parallel_size", "must be an integer >= 1", self.tensor_parallel_size)

    def to_json(self) -> dict:
        out = {"kind": PROFILE_KIND, "version": 1, "model": self.model, "gpu": self.gpu,
               "tensor_parallel_size": self.tensor_parallel_size, "dtype": self.dtype,
               "provenance": self.provenance, "forward": self.forward}
        if self.prefill is not None:
            out["prefill"] = self.prefill
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, data: object, field_name: str = "profile") -> LatencyProfile:
        require(isinstance(data, dict) and data.get("kind") == PROFILE_KIND, field_name,
                f"must be a JSON object with kind '{PROFILE_KIND}'", type(data).__name__ if not isinstance(data, dict)
                else data.get("kind"))
        assert isinstance(data, dict)
        for key in ("model", "gpu", "tensor_parallel_size", "forward"):
            require(key in data, f"{field_name}.{key}", "is required")
        try:
            return cls(model=str(data["model"]), gpu=str(data["gpu"]),
                       tensor_parallel_size=data["tensor_parallel_size"], forward=data["forward"],
                       prefill=data.get("prefill"), dtype=str(data.get("dtype", "bfloat16")),
                       provenance=data.get("provenance") or {})
        except InputError as exc:
            raise exc.relabel(field_name) from None

    @classmethod
    def load(cls, path: str | Path, field_name: str = "latency-profile") -> LatencyProfile:
        return cls.from_json(read_json(path, field_name), f"{field_name} ({path})")


def _check_grid(grid: object, axes: tuple[str, ...], name: str) -> None:
    require(isinstance(grid, dict), name, "must be an object with axes and 'seconds'", type(grid).__name__)
    assert isinstance(grid, dict)
    shape = []
    for ax in axes:
        vals = grid.get(ax)
        require(isinstance(vals, list) and len(vals) >= 1 and all(_num(v) and v >= 0 for v in vals),
                f"{name}.{ax}", "must be a non-empty list of numbers >= 0", vals)
        require(all(vals[i] < vals[i + 1] for i in range(len(vals) - 1)), f"{name}.{ax}",
                "must be strictly increasing", vals)
        shape.append(len(vals))
    try:
        secs = np.asarray(grid.get("seconds"), dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name}.seconds", "must be a nested list of numbers", grid.get("seconds")) from None
    require(secs.shape == tuple(shape), f"{name}.seconds", f"must have shape {tuple(shape)} (one per grid point)",
            secs.shape)
    require(bool(np.all(np.isfinite(secs) & (secs > 0))), f"{name}.seconds", "every time must be finite and > 0")


def _num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _axis_weights(grid: np.ndarray, x: float) -> tuple[int, int, float]:
    """Bracketing indices and weight of ``x`` on a sorted axis, clamped to the measured range."""
    if len(grid) == 1 or x <= grid[0]:
        return 0, 0, 0.0
    if x >= grid[-1]:
        return len(grid) - 1, len(grid) - 1, 0.0
    hi = int(np.searchsorted(grid, x))
    lo = hi - 1
    return lo, hi, float((x - grid[lo]) / (grid[hi] - grid[lo]))


def _interp(axes: list[np.ndarray], values: np.ndarray, point: tuple[float, ...]) -> float:
    """Multilinear interpolation on a regular grid (clamped at the edges)."""
    brackets = [_axis_weights(a, x) for a, x in zip(axes, point)]
    total = 0.0
    for corner in range(1 << len(axes)):
        idx, w = [], 1.0
        for d, (lo, hi, t) in enumerate(brackets):
            up = (corner >> d) & 1
            idx.append(hi if up else lo)
            w *= t if up else 1.0 - t
        if w:
            total += w * values[tuple(idx)]
    return float(total)


class Table(LatencyModel):
    """Step times interpolated from a measured :class:`LatencyProfile` (clamped to its grid)."""

    def __init__(self, profile: LatencyProfile) -> None:
        self.profile = profile
        f = profile.forward
        self._f_axes = [np.asarray(f[a], dtype=float) for a in LatencyProfile.FORWARD_AXES]
        self._f_vals = np.asarray(f["seconds"], dtype=float)
        p = profile.prefill
        self._p_axes = [np.asarray(p[a], dtype=float) for a in LatencyProfile.PREFILL_AXES] if p else None
        self._p_vals = np.asarray(p["seconds"], dtype=float) if p else None
        self.label = f"measured {profile.model} on {profile.gpu} tp{profile.tensor_parallel_size}"

    def forward_time(self, batch: int, new_tokens: float, context_len: float) -> float:
        return _interp(self._f_axes, self._f_vals, (batch, new_tokens, context_len))

    def prefill_time(self, batch: int, prompt_len: float) -> float:
        if self._p_axes is None:
            return self.forward_time(batch, prompt_len, 0.0)
        return _interp(self._p_axes, self._p_vals, (batch, prompt_len))

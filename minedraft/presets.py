"""Model shapes and GPU specs: the presets every part of the toolkit names.

Model presets are Hugging Face ``config.json`` files (public shapes; no weights) under
``minedraft/data/models/``: the roofline reads its shape from them and the executor hands the same file
to vLLM with dummy weights. GPU specs are vendor datasheet figures in ``minedraft/data/gpus.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from minedraft.errors import InputError, read_json, require

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8": 1, "fp8": 1}
_DTYPE_ALIASES = {"half": "float16", "float": "float32"}  # vLLM's --dtype spellings


def dtype_bytes(name: str) -> int | None:
    """Bytes per element of a dtype named as vLLM's ``--dtype`` or a config's ``torch_dtype`` (None: unknown, or
    ``auto``)."""
    return _DTYPE_BYTES.get(_DTYPE_ALIASES.get(name, name))


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The dimensions that set a decoder-only transformer's FLOPs and bytes."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    dtype_bytes: int = 2

    def __post_init__(self) -> None:
        for f in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                  "vocab_size", "dtype_bytes"):
            v = getattr(self, f)
            require(isinstance(v, int) and v > 0, f, "must be a positive integer", v)

    @classmethod
    def from_hf_config(cls, cfg: dict, name: str = "") -> ModelShape:
        def get(key: str, default: object = None) -> object:
            if key in cfg:
                return cfg[key]
            if default is None:
                raise InputError(f"config.{key}", "is required for a model shape")
            return default

        heads = get("num_attention_heads")
        hidden = get("hidden_size")
        return cls(
            name=name or str(cfg.get("_name_or_path", "model")),
            hidden_size=hidden,
            intermediate_size=get("intermediate_size"),
            num_layers=get("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=get("num_key_value_heads", heads),
            head_dim=get("head_dim", hidden // heads if isinstance(hidden, int) and isinstance(heads, int) else 1),
            vocab_size=get("vocab_size"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            dtype_bytes=_DTYPE_BYTES.get(str(cfg.get("torch_dtype", cfg.get("dtype", "bfloat16"))), 2),
        )

    # Parameter counts (weights read once per forward pass).
    @property
    def attn_params_per_layer(self) -> int:
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return self.hidden_size * (q + 2 * kv) + q * self.hidden_size

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gated (SwiGLU) MLP

    @property
    def layer_params(self) -> int:
        return self.num_layers * (self.attn_params_per_layer + self.mlp_params_per_layer)

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        embed = self.vocab_size * self.hidden_size
        return self.layer_params + embed + (0 if self.tie_word_embeddings else self.lm_head_params)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies across all layers (keys and values)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """Datasheet figures of one GPU."""

    key: str
    name: str
    bf16_flops: float
    hbm_bytes_per_s: float
    memory_bytes: float
    link_bytes_per_s: float

    def __post_init__(self) -> None:
        for f in ("bf16_flops", "hbm_bytes_per_s", "memory_bytes", "link_bytes_per_s"):
            v = getattr(self, f)
            require(isinstance(v, (int, float)) and v > 0, f, "must be a positive number", v)


def _data_dir() -> Path:
    return Path(str(resources.files("minedraft.data")))


@cache
def model_presets() -> dict[str, dict]:
    """Preset key -> Hugging Face config dict."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((_data_dir() / "models").glob("*.json"))}


@cache
def gpu_presets() -> dict[str, GPUSpec]:
    data = json.loads((_data_dir() / "gpus.json").read_text())["gpus"]
    out: dict[str, GPUSpec] = {}
    for key, g in data.items():
        spec = GPUSpec(key, g["name"], g["bf16_flops"], g["hbm_bytes_per_s"], g["memory_bytes"], g["link_bytes_per_s"])
        for alias in [key, *g.get("aliases", [])]:
            out[alias] = spec
    return out


def model_config(name: str, field: str = "model") -> dict:
    """A preset's (case-insensitive) or a local directory's / file's ``config.json``."""
    presets = model_presets()
    key = name.strip().lower()
    if key in presets:
        return presets[key]
    path = Path(name)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.exists():
        cfg = read_json(path, field)
        require(isinstance(cfg, dict), field, "config.json must hold a JSON object", str(path))
        return cfg  # type: ignore[return-value]
    raise InputError(field, f"must be a preset ({', '.join(presets)}) or a model directory with config.json", name)


def model_shape(name: str, field: str = "model") -> ModelShape:
    key = name.strip().lower()
    try:
        return ModelShape.from_hf_config(model_config(name, field), name=key if key in model_presets() else name)
    except InputError as exc:
        raise exc.relabel(field, name) if exc.field != field else exc from None


def gpu_spec(name: str, field: str = "gpu") -> GPUSpec:
    gpus = gpu_presets()
    key = name.strip().lower()
    require(key in gpus, field, f"must be one of {', '.join(sorted({g.key for g in gpus.values()}))}", name)
    return gpus[key]

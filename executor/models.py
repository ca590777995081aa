"""Models for vLLM without downloads: presets and configs become directories vLLM can load.

- a **preset** name (``qwen3-8b``; ``minedraft/data/models/*.json``) or a ``config.json`` file: the config
  is written into a fresh directory and loaded with ``load_format="dummy"`` (random weights, shapes and
  timings of the real model);
- a **config dict** (the library API; tests build tiny Qwen3 models this way): the same;
- a **local directory**: used as given; with weights in it (``*.safetensors``, ``*.bin``, ``*.pt``) vLLM
  loads them, with only a ``config.json`` it gets dummy weights.

vLLM initialises every dummy tensor from the same fixed seed, so two models with one config get
identical weights: a drafter with the target's config (same preset) reproduces the target exactly and
its drafts are all accepted.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from minedraft.errors import InputError, require
from minedraft.presets import model_config, model_presets

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model as vLLM will load it."""

    label: str  # what the user named (preset key, directory, or "config:<hash>")
    path: str  # directory handed to vLLM
    load_format: str  # "dummy" or "auto"
    config: dict

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size") or self.config.get("text_config", {}).get("vocab_size", 32000))

    @property
    def max_position_embeddings(self) -> int | None:
        v = self.config.get("max_position_embeddings")
        return int(v) if isinstance(v, int) else None

    def describe(self) -> dict:
        return {"model": self.label, "load_format": self.load_format, "path": self.path}


def _has_weights(d: Path) -> bool:
    return any(any(d.glob(p)) for p in WEIGHT_PATTERNS)


def _write_config(cfg: dict, root: Path, name: str) -> str:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return str(d)


def resolve_model(ref: str | dict, field: str, root: str | Path | None = None) -> ResolvedModel:
    """Turn a preset name, a config file or dict, or a local directory into a :class:`ResolvedModel`.

    Generated directories go under ``root`` (a fresh temporary directory when not given); each is named
    by the config's hash, so one config is written once per root.
    """
    base = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="minedraft-models-"))
    if isinstance(ref, dict):
        require("architectures" in ref or "model_type" in ref, field,
                "a config dict needs 'architectures' or 'model_type' (a Hugging Face config.json)", sorted(ref)[:6])
        h = hashlib.sha256(json.dumps(ref, sort_keys=True).encode()).hexdigest()[:12]
        return ResolvedModel(f"config:{h}", _write_config(ref, base, f"config-{h}"), "dummy", dict(ref))
    require(isinstance(ref, str) and ref.strip() != "", field, "must name a preset or a model directory", ref)
    key = ref.strip().lower()
    path = Path(ref)
    if key not in model_presets() and path.is_dir():
        cfg = model_config(str(path), field)
        return ResolvedModel(str(path), str(path.resolve()), "auto" if _has_weights(path) else "dummy", cfg)
    try:
        cfg = model_config(ref, field)
    except InputError as exc:
        raise exc if exc.field == field else exc.relabel(field, ref) from None
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    name = key if key in model_presets() else f"config-{digest}"
    return ResolvedModel(key if key in model_presets() else ref, _write_config(cfg, base, name), "dummy", cfg)


def check_pair(target: ResolvedModel, draft: ResolvedModel) -> None:
    """vLLM's draft_model needs one vocabulary for target and drafter."""
    require(target.vocab_size == draft.vocab_size, "--draft",
            f"must share the target's vocabulary ({target.vocab_size} tokens)",
            f"{draft.label} ({draft.vocab_size} tokens)")


def tiny_qwen3_config(hidden: int = 64, layers: int = 2, vocab: int = 1024, heads: int = 2, kv_heads: int = 1,
                      head_dim: int = 32, intermediate: int = 128, max_positions: int = 4096) -> dict:
    """A tiny Qwen3 config for tests (CPU attention needs head_dim >= 32)."""
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab,
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-6, "rope_theta": 1000000,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "hidden_act": "silu", "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "use_cache": True,
    }

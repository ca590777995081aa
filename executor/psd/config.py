"""The plugin's options: ``additional_config={"minedraft": {...}}`` of a vLLM engine (no vLLM import here).

vLLM's ``SpeculativeConfig`` refuses unknown keys, so everything PSD-specific lives in vLLM's free-form
``additional_config`` under the key ``"minedraft"``. k itself is vLLM's ``num_speculative_tokens``
(``speculative_config``), so the target's rejection sampler and our policy agree on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from minedraft.acceptance import AcceptanceCurve
from minedraft.errors import InputError, require
from minedraft.executor.compat import CUDAGRAPH_MODES
from minedraft.policies.base import normalize_k_schedule

#: The key of ``additional_config`` the plugin reads.
CONFIG_KEY = "minedraft"
#: The key of the drafter engine's ``additional_config`` (its runner's options; set by the drafter process).
DRAFTER_KEY = "minedraft_drafter"
MODES = ("psd", "pearl", "sd")


def _help(text: str, default: object = None) -> object:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """What ``additional_config["minedraft"]`` may hold (validated here, at the edge)."""

    mode: str = _help("psd: two halves, verify one while drafting the other (MineDraft); pearl: whole batch, "
                      "draft the next k while verifying (published force_pearl); sd: whole batch, draft then "
                      "verify, no overlap (SD with the drafter on a device of its own)", "psd")
    draft_model: str = _help("the drafter: a local directory or a Hugging Face id (vLLM loads it)", "")
    draft_load_format: str = _help("vLLM load_format for the drafter (auto, dummy, ...)", "auto")
    draft_dtype: str = _help("drafter dtype (auto: the checkpoint's)", "auto")
    drafter_device: str = _help("auto (CPU build: cpu; GPU: the first GPU after the target's if there is one, else "
                                "the target's) | same (share the target's GPU) | cpu | cuda:N", "auto")
    drafter_kv_cache_memory_bytes: int | None = _help("drafter KV cache size (vLLM kv_cache_memory_bytes); "
                                                      "default on CPU: 256 MiB", None)
    drafter_gpu_memory_utilization: float | None = _help(
        "drafter's share of its GPU (default 0.9 on a GPU of its own, 0.15 when sharing the target's)", None)
    drafter_enforce_eager: bool | None = _help("drafter without CUDA graphs (default: the target's setting)", None)
    drafter_max_num_batched_tokens: int | None = _help(
        "tokens one drafter forward may take (default: the target's budget, at least capacity x (k + 2))", None)
    drafter_fused: bool = _help(
        "draft in one vLLM runner pass per op instead of one per token: the drafter's engine carries vLLM's "
        "draft_model proposer over the same model (two copies of its weights and KV), which adds the drafts after "
        "the first inside the pass; measured 1.8-2.0x slower than the default on an H200, so off)", False)
    drafter_uniform_passes: bool = _help(
        "every runner pass of a drafter op decodes one token per row: rows two tokens behind (all drafts of their "
        "last op accepted) first catch up in a pass of their own, so each pass is a uniform decode batch (vLLM's "
        "FULL CUDA graphs) instead of a first pass mixing one- and two-token rows; same drafts; an op with a row "
        "further behind (PEARL) keeps the default passes; not with drafter_fused; off: on an H200 (2026-12-03b) the "
        "extra pass cost more than it saved at 64 rows, and the drafter's FULL graphs (the default since 2026-12-04) "
        "cover mixed first passes anyway", False)
    drafter_cudagraph_mode: str | None = _help(
        "vLLM's cudagraph_mode for the drafter's engine: auto (FULL on a GPU build: every pass under full CUDA "
        "graphs, an op's mixed first pass and prefill chunks included; none on the CPU build), or one of vLLM's "
        "modes (None: vLLM's default, FULL_AND_PIECEWISE)", "auto")
    drafter_send: str = _help(
        "when the engine packs and sends each step's drafter op: launch (after the target's forward is launched, "
        "while the GPU runs it: off the serial path between two target steps), schedule (before the target's "
        "forward; the CPU build's forward runs on the host thread, so a send after it would not overlap), or auto "
        "(launch on a GPU build, schedule on the CPU build)", "auto")
    psd_capacity: str = _help("double: each half holds max_num_seqs (published); split: halves share it", "double")
    psd_split: str = _help("psd's schedule: auto (two halves only from psd_split_rows requests in flight, else one "
                           "batch drafted then verified; hysteretic: minedraft.policies.psd) | always (two halves: the "
                           "published schedule)", "auto")
    psd_split_rows: int | None = _help("auto: requests in flight from which psd splits (minedraft-exec passes the "
                                       "step model's threshold when it has one); None: only when one batch (max_num_seqs "
                                       "rows) cannot hold them", None)
    k_schedule: tuple[tuple[int, int, int], ...] | None = _help(
        "k per (half-)batch size: inclusive (start, end, k) ranges, capped at num_speculative_tokens", None)
    accept_curve: dict | str | None = _help(
        "synthetic acceptance (timing only: outputs are not the model's): a curve (minedraft.acceptance_curve JSON "
        "object, '0.8' geometric, or '0.9,0.7,0.5' rates); the target accepts a number of drafts drawn from it", None)
    synthetic_seed: int = _help("seed of the synthetic acceptance draws", 0)
    drafter_start_timeout_s: float = _help("seconds the drafter process may take to start", 900.0)
    drafter_op_timeout_s: float = _help("seconds one drafter op may take before the drafter counts as failed", 600.0)
    resident_batches: bool = _help(
        "keep each half resident in a persistent batch of its own in the target's and the drafter's vLLM runners "
        "(a half swap then re-sends nothing; off: vLLM's single persistent batch, which drops one half and adds the "
        "other back every step)", True)
    record: bool = _help("keep per-step records for minedraft-exec's trace (memory grows with the run: off for "
                         "serving)", False)

    def __post_init__(self) -> None:
        require(self.mode in MODES, "minedraft.mode", "must be psd, pearl or sd", self.mode)
        require(isinstance(self.draft_model, str) and self.draft_model.strip() != "", "minedraft.draft_model",
                "must name the drafter (a directory or a Hugging Face id)", self.draft_model)
        require(isinstance(self.draft_load_format, str) and self.draft_load_format != "", "minedraft.draft_load_format",
                "must be a vLLM load_format", self.draft_load_format)
        dev = str(self.drafter_device).strip().lower()
        ok = dev in ("auto", "same", "cpu") or (dev.startswith("cuda:") and dev[5:].isdigit())
        require(ok, "minedraft.drafter_device", "must be auto, same, cpu or cuda:N", self.drafter_device)
        object.__setattr__(self, "drafter_device", dev)
        if self.drafter_kv_cache_memory_bytes is not None:
            _int(self.drafter_kv_cache_memory_bytes, "minedraft.drafter_kv_cache_memory_bytes", 1 << 20, 1 << 50)
        if self.drafter_gpu_memory_utilization is not None:
            u = self.drafter_gpu_memory_utilization
            require(isinstance(u, (int, float)) and not isinstance(u, bool) and 0 < u <= 1,
                    "minedraft.drafter_gpu_memory_utilization", "must be in (0, 1]", u)
        if self.drafter_enforce_eager is not None:
            require(isinstance(self.drafter_enforce_eager, bool), "minedraft.drafter_enforce_eager",
                    "must be true or false", self.drafter_enforce_eager)
        if self.drafter_max_num_batched_tokens is not None:
            _int(self.drafter_max_num_batched_tokens, "minedraft.drafter_max_num_batched_tokens", 1, 1 << 30)
        for name in ("drafter_fused", "drafter_uniform_passes", "resident_batches"):
            require(isinstance(getattr(self, name), bool), f"minedraft.{name}", "must be true or false",
                    getattr(self, name))
        if self.drafter_cudagraph_mode is not None:
            require(self.drafter_cudagraph_mode in ("auto", *CUDAGRAPH_MODES), "minedraft.drafter_cudagraph_mode",
                    f"must be auto or one of {', '.join(CUDAGRAPH_MODES)}", self.drafter_cudagraph_mode)
        require(not (self.drafter_fused and self.drafter_uniform_passes), "minedraft.drafter_uniform_passes",
                "must be false with drafter_fused (a fused op is one runner pass)", self.drafter_uniform_passes)
        require(self.psd_split in ("auto", "always"), "minedraft.psd_split", "must be auto or always", self.psd_split)
        if self.psd_split_rows is not None:
            _int(self.psd_split_rows, "minedraft.psd_split_rows", 2, 1 << 20)
        require(self.drafter_send in ("auto", "launch", "schedule"), "minedraft.drafter_send",
                "must be auto, launch or schedule", self.drafter_send)
        require(self.psd_capacity in ("double", "split"), "minedraft.psd_capacity", "must be double or split",
                self.psd_capacity)
        if self.k_schedule is not None:
            try:
                object.__setattr__(self, "k_schedule", normalize_k_schedule(self.k_schedule))
            except InputError as exc:
                raise exc.relabel("minedraft.k_schedule") from None
        if self.accept_curve is not None:
            self.curve()  # validates
        _int(self.synthetic_seed, "minedraft.synthetic_seed", 0, (1 << 63) - 1)
        for name in ("drafter_start_timeout_s", "drafter_op_timeout_s"):
            v = getattr(self, name)
            require(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
                    f"minedraft.{name}", "must be a number > 0", v)
        require(isinstance(self.record, bool), "minedraft.record", "must be true or false", self.record)

    def curve(self) -> AcceptanceCurve | None:
        """The synthetic acceptance curve, or None (the models' own acceptance)."""
        c = self.accept_curve
        if c is None:
            return None
        try:
            if isinstance(c, dict):
                return AcceptanceCurve.from_json(c, field="minedraft.accept_curve")
            if isinstance(c, str) and not c.strip().startswith("{"):
                return AcceptanceCurve.parse(c)
        except InputError as exc:
            raise exc.relabel("minedraft.accept_curve") from None
        raise InputError("minedraft.accept_curve", "must be a curve object, '0.8' or '0.9,0.7,0.5'", c)

    @classmethod
    def from_additional_config(cls, additional: dict | None) -> PluginConfig:
        """Read ``additional_config["minedraft"]`` (unknown keys are refused, as vLLM refuses them)."""
        raw = (additional or {}).get(CONFIG_KEY)
        require(isinstance(raw, dict), f"additional_config.{CONFIG_KEY}",
                "must be an object with at least 'draft_model' (the PSD/PEARL plugin's options)", raw)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        require(not unknown, f"additional_config.{CONFIG_KEY}", f"unknown option(s); known: {', '.join(sorted(known))}",
                ", ".join(unknown))
        return cls(**raw)

    def to_dict(self, only_set: bool = False) -> dict:
        """As a JSON-able dict; ``only_set``: mode, draft_model and the options that differ from the defaults."""
        d = asdict(self)
        if d["k_schedule"] is not None:
            d["k_schedule"] = [list(x) for x in d["k_schedule"]]
        if only_set:
            defaults = {f.name: f.default for f in fields(self)}
            d = {k: v for k, v in d.items() if k in ("mode", "draft_model") or v != defaults[k]}
        return d

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def _int(v: object, name: str, lo: int, hi: int) -> None:
    require(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, name,
            f"must be an integer in [{lo}, {hi}]", v)

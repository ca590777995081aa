"""Fit per-model step-time lines to measured vLLM engine steps (traces written by ``minedraft-exec``).

A measured engine step of vLLM (V1 runner, ``draft_model`` SD, drafter on the target's GPU) is one op
record: the target's forward over the decode rows (``1 + k`` tokens each) and any prompt chunks, then,
for SD, the drafter's ``k`` forwards over the same rows. With each model's time an
:class:`~minedraft.latency.Affine` line ``fixed + per_token * tokens + per_context * cached tokens read``
(prompt tokens at ``prefill_token``), a step is *linear* in the unknowns, so all steps of all runs fit
at once by non-negative least squares — exactly the composition the simulator charges
(:meth:`minedraft.costs.StepCosts.op_time`):

- target: ``fixed_t + per_token_t * max(b (k + 1), knee_t) + per_context_t * sum(ctx) + prefill_token_t * chunk``
- drafter (SD only): ``k fixed_d + per_token_d * 2 k b + per_context_d * k sum(ctx) + prefill_token_d * chunk``

Per-step CPU overhead (scheduling, rejection, output processing) is inside ``fixed_t`` (vLLM runs it
serially with the forwards). Runs are weighted equally, so long runs do not drown short ones. Each
target's knee (the token count below which its forward does not grow: the roofline's memory-bound
floor) is chosen from a grid by the fit's own error; the drafters' lines stay straight.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from minedraft.errors import InputError, read_json, require
from minedraft.latency import Affine
from minedraft.trace import run_config

STEP_MODEL_KIND = "minedraft.step_model"
TERMS = ("fixed_s", "per_token_s", "per_context_s", "prefill_token_s", "knee_tokens")
LINEAR = TERMS[:4]  # fitted by least squares; the knee by a grid search
KNEES = (0, 32, 64, 96, 128, 192, 256, 384, 512)
#: Shipped fits: data/profiles/<gpu>/<target>.json and <target>+<draft>.json (the drafter's terms are fitted
#: per pair: in vLLM the drafter runs inside the target's step, and its per-forward cost differs by pair).
PROFILES = Path(__file__).parent / "data" / "profiles"


def draft_key(draft: str, target: str) -> str:
    return f"{target}+{draft}"


def model_key(target: str, tp: int = 1) -> str:
    """A target's name in fits and file names: ``qwen3-32b`` at TP 1, ``qwen3-32b@tp4`` at TP 4 (vLLM's
    drafter inside SD runs at the target's TP, so its pair key carries it too: ``qwen3-32b@tp4+qwen3-0.6b``)."""
    return target if int(tp) == 1 else f"{target}@tp{int(tp)}"


def key_tp(key: str) -> int:
    """The tensor-parallel size a :func:`model_key` (or a pair key built on one) names."""
    head = key.split("+", 1)[0]
    return int(head.rsplit("@tp", 1)[1]) if "@tp" in head else 1


def shipped(gpu: str, target: str, draft: str | None = None, tp: int = 1) -> Path | None:
    """The shipped step model of ``target`` at TP ``tp`` (or of ``draft`` drafting for it) on ``gpu``, if measured."""
    target = model_key(target, tp)
    name = draft_key(draft, target) if draft else target
    p = PROFILES / gpu / f"{name}.json"
    return p if p.is_file() else None


@dataclass
class StepRow:
    """One measured engine step, reduced to the features the step model needs."""

    run: str
    target: str
    draft: str | None
    k: int
    batch: int  # decode rows
    context: float  # sum over decode rows of cached tokens before the step
    chunk: int  # prompt tokens in the step
    draft_rows: int  # rows the drafter proposed for (decode rows + prompts completed in the step)
    seconds: float


def step_rows(records: Iterable[dict], run: str = "") -> list[StepRow]:
    """Features of every engine step of one executor trace (a header, op and request records)."""
    recs = list(records)
    header = next((r for r in recs if r.get("type") == "header"), {})
    cfg = run_config(header)
    target, draft = cfg.get("target"), cfg.get("draft")
    require(target is not None, "trace", "header must name the target (a minedraft-exec trace)", run)
    tp = int(cfg.get("tensor_parallel_size") or (cfg.get("executor") or {}).get("tensor_parallel_size") or 1)
    target = model_key(str(target), tp)  # steps at another TP are another model
    prompt = {int(r["request_id"]): int(r["prompt_len"]) for r in recs if r.get("type") == "request"}
    gen: dict[int, int] = {}
    out = []
    for o in recs:
        if o.get("type") != "op" or o.get("op") not in ("prefill", "decode", "verify"):
            continue
        ids = [int(x) for x in o.get("request_ids") or []] if o["op"] != "prefill" else []
        k = int(o.get("k") or 0) if o["op"] == "verify" else 0
        chunk = int(o.get("prefill_tokens") or 0)
        ctx = 0.0
        for r in ids:
            g = gen.setdefault(r, 1)  # a decode row already has its first token
            ctx += prompt.get(r, 0) + g
        acc = o.get("accepted") or [0] * len(ids)
        for r, a in zip(ids, acc):
            gen[r] += 1 + int(a) if k else 1
        completed = 0
        if o["op"] == "prefill":
            completed = len(o.get("request_ids") or [])
        elif o.get("mixed"):
            completed = len(o.get("prefill_request_ids") or [])
        out.append(StepRow(run, target, draft if k or (o["op"] == "prefill" and draft) else None,
                           k or int(cfg.get("k") or 0) if draft else 0, len(ids), ctx, chunk,
                           len(ids) + completed, float(o["t_end"]) - float(o["t_start"])))
    return out


@dataclass
class StepFit:
    """Affine lines per model (target and drafters) with the fit's quality."""

    models: dict[str, Affine]
    gpu: str
    train_runs: list[str] = field(default_factory=list)
    step_median_abs_rel_error: float = 0.0
    provenance: dict = field(default_factory=dict)

    def to_json(self, model: str) -> dict:
        a = self.models[model]
        return {"kind": STEP_MODEL_KIND, "version": 1, "model": model, "gpu": self.gpu,
                "tensor_parallel_size": key_tp(model), "affine": {t: getattr(a, t) for t in TERMS},
                "fit": {"train_runs": len(self.train_runs),
                        "step_median_abs_rel_error": self.step_median_abs_rel_error},
                "provenance": self.provenance}

    def save(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for m in self.models:
            p = folder / f"{m}.json"
            p.write_text(json.dumps(self.to_json(m), indent=2) + "\n")
            paths.append(p)
        return paths


def _design(rows: list[StepRow], names: list[str], knees: dict[str, float]) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    x = np.zeros((len(rows), 4 * len(names)))
    y = np.array([r.seconds for r in rows])
    runs = np.array([r.run for r in rows])
    for i, r in enumerate(rows):
        t = 4 * col[r.target]
        x[i, t + 0] = 1.0
        x[i, t + 1] = max(r.batch * (r.k + 1), knees.get(r.target, 0)) if r.batch else 0.0
        x[i, t + 2] = r.context
        x[i, t + 3] = r.chunk
        if r.draft is not None and r.k:
            d = 4 * col[r.draft]
            x[i, d + 0] = r.k
            x[i, d + 1] = 2 * r.k * r.draft_rows
            x[i, d + 2] = r.k * r.context
            x[i, d + 3] = r.chunk
    return x, y, runs


def _solve(rows: list[StepRow], names: list[str], knees: dict[str, float]) -> tuple[np.ndarray, float, np.ndarray]:
    x, y, runs = _design(rows, names, knees)
    _, inverse, counts = np.unique(runs, return_inverse=True, return_counts=True)
    w = 1.0 / (y * np.sqrt(counts[inverse]))  # relative error, runs weighted equally
    coef, _ = nnls(x * w[:, None], y * w)
    err = np.abs(x @ coef / y - 1)
    return coef, float(np.sum((err ** 2) / np.sqrt(counts[inverse]))), err


def fit_steps(rows: list[StepRow], gpu: str, provenance: dict | None = None) -> StepFit:
    """Non-negative least squares over all steps; relative error, each run weighted equally.

    Drafters are fitted per (target, drafter) pair and named ``target+draft`` in the result. Each target's
    knee is chosen from :data:`KNEES` by coordinate search on the same weighted error.
    """
    require(len(rows) >= 8, "steps", "need at least 8 measured steps", len(rows))
    rows = [r if r.draft is None else StepRow(r.run, r.target, draft_key(r.draft, r.target), r.k, r.batch,
                                              r.context, r.chunk, r.draft_rows, r.seconds) for r in rows]
    names = sorted({r.target for r in rows} | {r.draft for r in rows if r.draft})
    targets = sorted({r.target for r in rows})
    knees = {t: 0.0 for t in targets}
    best = _solve(rows, names, knees)
    for _ in range(2):  # coordinate search: each target's knee in turn
        for t in targets:
            for kn in KNEES:
                trial = knees | {t: float(kn)}
                got = _solve(rows, names, trial)
                if got[1] < best[1] - 1e-12:
                    knees, best = trial, got
    coef, _, err = best
    models = {n: Affine(*(float(c) for c in coef[4 * i: 4 * i + 4]), knee_tokens=knees.get(n, 0.0))
              for i, n in enumerate(names)}
    runs = sorted({r.run for r in rows})
    return StepFit(models, gpu, runs, float(np.median(err)), provenance or {})


def predict_steps(fit: StepFit, rows: list[StepRow]) -> np.ndarray:
    """Predicted seconds of measured steps under ``fit`` (the same composition the fit used)."""
    pred = []
    for r in rows:
        t = fit.models[r.target]
        tokens = max(r.batch * (r.k + 1), t.knee_tokens) if r.batch else 0
        sec = t.fixed_s + t.per_token_s * tokens + t.per_context_s * r.context \
            + (t.prefill_token_s or 0.0) * r.chunk
        if r.draft and r.k:
            d = fit.models[draft_key(r.draft, r.target)]
            sec += r.k * d.fixed_s + d.per_token_s * 2 * r.k * r.draft_rows + d.per_context_s * r.k * r.context \
                + (d.prefill_token_s or 0.0) * r.chunk
        pred.append(sec)
    return np.asarray(pred)


def load_step_model(path: str | Path, field_name: str = "latency-profile") -> tuple[Affine, dict]:
    """A shipped or fitted step model file -> (Affine, its JSON)."""
    data = read_json(path, field_name)
    require(isinstance(data, dict) and data.get("kind") == STEP_MODEL_KIND, field_name,
            f"must hold a JSON object of kind '{STEP_MODEL_KIND}'", str(path))
    a = data.get("affine")
    require(isinstance(a, dict) and all(isinstance(a.get(t), (int, float)) for t in LINEAR)
            and isinstance(a.get("knee_tokens", 0), (int, float)), field_name,
            f"'affine' must give numbers for {', '.join(TERMS)}", str(path))
    try:
        return Affine(*(float(a[t]) for t in LINEAR), knee_tokens=float(a.get("knee_tokens", 0))), data
    except InputError as exc:
        raise exc.relabel(field_name) from None

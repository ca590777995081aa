"""The PSD plugin's own costs, fitted to measured plugin runs: what vLLM's SD step models do not contain.

The step models (:mod:`minedraft.calibration.steps`) are fitted to vLLM's own AR and SD steps. minedraft's
plugin adds costs of its own (``StepCosts``): ``drafter_op_s`` per drafter op (its process re-enters the
requests' copies, builds inputs, answers over a socket), ``verify_swap_s`` + ``verify_swap_row_s`` per row on
each PSD verify (the target's batch alternates between halves, so vLLM's persistent batch drops and re-adds
its rows every step) and, with target and drafter processes time-sharing one GPU, ``shared_verify_stretch`` (a
verify's extra time per second of the drafter's later passes beside it, as the step models give them) and
``shared_gpu_slowdown`` (the drafter's op slowed by the verify).

The fit replays each measured run with the step models and compares op durations, per run, over the
full-size decode ops (verify ops of a whole half, draft ops of a whole half):

1. runs with the drafter on its own GPU: median(measured verify) - median(predicted verify) per run, fitted
   as ``verify_swap_s`` + ``verify_swap_row_s`` x half size (least squares; the median if all halves are the
   same size); or, where it was measured directly (``benchmarks/psd_costs.py``: alternating halves against one
   half on the target's own runner), those measurements fitted the same way;
2. runs sharing one GPU, replayed with (1): ``shared_verify_stretch`` = the least-squares slope (through 0) of
   measured - predicted verify over the drafter's later passes beside it, ``(k - 1) T_d(half, 1, ctx)``
   (:meth:`StepCosts.later_passes_s`). The sharing stretches a verify by what the drafter's uniform passes take
   of the GPU, not by a factor: with k = 1 the verify is as long as alone (measured 2026-12-01/02, printed by
   ``benchmarks/first_pass.py``);
3. ``drafter_op_s`` and ``shared_gpu_slowdown`` (the drafter's op slowed by the verify beside it) together from
   the draft ops of both layouts: measured = (predicted + ``drafter_op_s``) x (1 + ``shared_gpu_slowdown``
   when sharing), least squares in relative error (the slowdown on a 0.1 % grid, the op cost in closed form at each).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from minedraft.costs import StepCosts
from minedraft.errors import InputError, require
from minedraft.ops import DRAFT, VERIFY
from minedraft.trace import KIND_CODE

#: File name of the fitted plugin costs beside the step models of a GPU.
PLUGIN_FILE = "plugin.json"
#: The costs of the plugin before its halves stayed resident in vLLM's runners (2026-12-04): runs measured with it
#: (every run whose header does not record resident batches) are replayed with these, where a GPU has them.
SINGLE_BATCH_FILE = "plugin-single-batch.json"
KIND = "minedraft.plugin_costs"
FIELDS = ("drafter_op_s", "verify_swap_s", "verify_swap_row_s", "shared_gpu_slowdown", "shared_verify_stretch")
VERSION = 2  # 2: the sharing as a verify stretch per drafter pass plus a drafter slowdown (1: one factor)


def op_medians(trace, size: int) -> dict[str, float | None]:
    """Median duration of the verify and draft ops of ``size`` requests (a whole half) in a trace."""
    d = trace.op_t_end - trace.op_t_start
    out = {}
    for kind in (VERIFY, DRAFT):
        m = (trace.op_kind == KIND_CODE[kind]) & (trace.op_size == size)
        out[kind] = float(np.median(d[m])) if m.any() else None
    return out


def _pairs(runs: dict[str, list[dict]], costs_for, shared: bool, base: dict) -> list[dict]:
    """Per run of the layout: measured and predicted medians of full-size verify and draft ops."""
    from minedraft.policies.psd import half_capacity
    from minedraft.simulator.replay import measured_run, replay

    rows = []
    for name, recs in sorted(runs.items()):
        run = measured_run(recs, name)
        if run.policy != "psd" or (run.cfg.psd_drafter == "shared") != shared:
            continue
        costs = replace(costs_for(run.target, run.draft), **base)
        size = half_capacity(run.cfg)
        m, p = op_medians(run.trace, size), op_medians(replay(run, costs), size)
        if None in (m[VERIFY], m[DRAFT], p[VERIFY], p[DRAFT]):
            continue
        ctx = float(run.requests.prompt_len.mean() + run.requests.output_len.mean() / 2)
        rows.append({"run": name, "half": size, "k": run.k, "measured": m, "predicted": p,
                     "later_passes_s": costs.later_passes_s(size, run.k, ctx), "resident": run.resident})
    return rows


def swap_fit(rows: np.ndarray, extra: np.ndarray) -> tuple[float, float]:
    """(fixed s, per row s) of a half swap from (half size, extra verify seconds) points, both terms >= 0."""
    if len(set(rows.tolist())) > 1:
        per_row, fixed = np.polyfit(rows, extra, 1)
        if per_row < 0 or fixed < 0:  # keep both terms >= 0: the better of the two one-term fits
            per_row, fixed = (0.0, float(np.median(extra))) if per_row < 0 else (
                float(extra @ rows / (rows @ rows)), 0.0)
    else:
        per_row, fixed = 0.0, float(np.median(extra))
    return max(0.0, float(fixed)), max(0.0, float(per_row))


def measured_swaps(lines: list[dict], source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(rows, seconds) of the direct swap measurements of ``benchmarks/psd_costs.py`` (``kind`` swap: one verify
    step of alternating halves minus the same half every step, on the target's runner, resident batches on)."""
    pts = [(r["rows"], r["swap_ms"] / 1e3) for r in lines if r.get("kind") == "swap" and "swap_ms" in r]
    require(len(pts) > 0, "--swap-from", "holds no swap measurement (benchmarks/psd_costs.py lines of kind swap)",
            source)
    rows, sec = zip(*pts)
    return np.asarray(rows, dtype=float), np.asarray(sec, dtype=float)


def fit_plugin_costs(runs: dict[str, list[dict]], costs_for, gpu: str, provenance: dict | None = None,
                     swaps: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Fit the plugin's costs (see the module doc). ``costs_for(target, draft)`` gives the step models.
    ``swaps``: the half swap measured directly, (rows, seconds) points (:func:`measured_swaps`), in place of
    step 1 (no run with the drafter on its own GPU needed)."""
    zero = dict.fromkeys(FIELDS, 0.0)
    own = _pairs(runs, costs_for, False, zero)
    measured = swaps is not None  # the swap measured directly, on the plugin with resident halves
    if swaps is None:
        require(len(own) > 0, "runs", "need PSD runs with the drafter on its own GPU (drafter_device cuda:N) or "
                "a direct swap measurement (--swap-from)", ", ".join(sorted(runs)) or "none")
        rows = np.array([r["half"] for r in own], dtype=float)
        swaps = (rows, np.array([r["measured"][VERIFY] - r["predicted"][VERIFY] for r in own]))
    fixed, per_row = swap_fit(*swaps)
    fitted = dict(zero, verify_swap_s=fixed, verify_swap_row_s=per_row)
    shared = _pairs(runs, costs_for, True, fitted)
    generations = {r["resident"] for r in own + shared} | ({True} if measured else set())
    require(len(generations) <= 1, "runs", "mix the plugin with resident halves (2026-12-04, and --swap-from's "
            "measurements) and the one before: fit each on its own", ", ".join(sorted(runs)))
    if shared:
        x = np.array([r["later_passes_s"] for r in shared])
        y = np.array([r["measured"][VERIFY] - r["predicted"][VERIFY] for r in shared])
        fitted["shared_verify_stretch"] = max(0.0, float(x @ y / (x @ x))) if x @ x > 0 else 0.0
    drafts = [(r["measured"][DRAFT], r["predicted"][DRAFT], 0.0) for r in own]
    drafts += [(r["measured"][DRAFT], r["predicted"][DRAFT], 1.0) for r in shared]
    require(len(drafts) > 0, "runs", "need PSD runs (drafter on its own GPU or sharing the target's)", "none")
    m, p, sh = (np.array(v) for v in zip(*drafts))
    best = None
    for slow in np.arange(0.0, 1.0005, 0.001) if shared else [0.0]:
        w = (1 + slow * sh) / m  # predicted / measured per second of modelled draft
        op = max(0.0, float(w @ (1 - w * p) / (w @ w)))  # the least-squares op cost at this slowdown
        err = float(np.sum((w * (p + op) - 1) ** 2))
        if best is None or err < best[0]:
            best = (err, float(slow), op)
    fitted["shared_gpu_slowdown"], fitted["drafter_op_s"] = best[1], best[2]
    return {"kind": KIND, "version": VERSION, "gpu": gpu, **fitted,
            "fit": {"own_gpu_runs": own, "shared_gpu_runs": shared},
            "provenance": (provenance or {}) | {"date": datetime.date.today().isoformat()}}


def save(fit: dict, folder: str | Path) -> Path:
    path = Path(folder) / PLUGIN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fit, indent=1) + "\n")
    return path


def plugin_file(folder: str | Path, resident: bool) -> str:
    """The costs file in ``folder`` for a run of the plugin with (``resident``) or without resident halves."""
    return PLUGIN_FILE if resident or not (Path(folder) / SINGLE_BATCH_FILE).is_file() else SINGLE_BATCH_FILE


def load_plugin_costs(folder: str | Path, field_name: str = "--profile-dir",
                      name: str = PLUGIN_FILE) -> dict[str, float]:
    """The fitted plugin costs in ``folder`` (``name``: :data:`PLUGIN_FILE`, or :data:`SINGLE_BATCH_FILE` for runs of
    the plugin before resident halves); zeros if none were fitted there."""
    path = Path(folder) / name
    if not path.is_file():
        return dict.fromkeys(FIELDS, 0.0)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(field_name, f"{name} is not readable JSON ({exc.__class__.__name__})", str(path)) from None
    require(isinstance(d, dict) and d.get("kind") == KIND, field_name, f"{name} must be a {KIND} object",
            str(path))
    require(d.get("version") == VERSION, field_name, f"{name} must be version {VERSION} of {KIND} (refit it "
            "with minedraft-calibrate plugin: version 1 had one sharing factor)", d.get("version"))
    out = {}
    for f in FIELDS:
        v = d.get(f)
        require(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 10, field_name,
                f"{name}: {f} must be a number in [0, 10)", v)
        out[f] = float(v)
    return out


def with_plugin_costs(costs: StepCosts, folder: str | Path, field_name: str = "--profile-dir",
                      name: str = PLUGIN_FILE) -> StepCosts:
    return replace(costs, **load_plugin_costs(folder, field_name, name))

"""Fit the shipped step models from committed GPU measurements (traces of minedraft-exec / gpu_ar_sd.py).

Usage: python scripts/fit_step_profiles.py docs/measurements/2026-11-23-h200-ar-sd --gpu h200 \\
           --exclude alpha-0.8 --out calibration/data/profiles/h200

Reads every run trace inside the folder's traces_*.tgz, keeps the calibration split (runs whose file name
contains none of the --exclude patterns: those are held out for validation), fits one Affine step line
per target and per (target, drafter) pair (minedraft.calibration.steps), writes <model>.json files with
provenance, and prints the fit's median step error.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import tarfile
from pathlib import Path

from minedraft.calibration.steps import fit_steps, step_rows


def runs_in(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for tgz in sorted(folder.glob("traces_*.tgz")):
        with tarfile.open(tgz) as tf:
            for m in tf.getmembers():
                if m.isfile() and m.name.endswith(".jsonl"):
                    text = tf.extractfile(m).read().decode()
                    out[Path(m.name).name] = [json.loads(x) for x in io.StringIO(text) if x.strip()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--gpu", required=True)
    ap.add_argument("--exclude", default="", help="comma list of run-name patterns held out for validation")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = runs_in(Path(a.folder))
    held = [p for p in a.exclude.split(",") if p]
    train = {n: r for n, r in runs.items() if not any(p in n for p in held)}
    rows = [row for n, recs in train.items() for row in step_rows(recs, n)]
    prov = {"measurements": a.folder, "runs": len(train), "steps": len(rows), "held_out_patterns": held,
            "command": "python scripts/fit_step_profiles.py " + " ".join(
                [a.folder, "--gpu", a.gpu, "--exclude", a.exclude, "--out", a.out]),
            "fitted_on": datetime.date.today().isoformat(), "software": "vLLM 0.26.0, torch 2.11.0+cu130 (as measured)"}
    fit = fit_steps(rows, a.gpu, prov)
    for p in fit.save(a.out):
        print("wrote", p)
    print(f"{len(train)} calibration runs ({len(runs) - len(train)} held out), {len(rows)} steps, "
          f"median |step error| {fit.step_median_abs_rel_error:.2%}")
    for name, m in fit.models.items():
        print(f"  {name:24s} fixed {m.fixed_s * 1e3:7.3f} ms  per token {m.per_token_s * 1e6:7.3f} us  "
              f"per cached token {m.per_context_s * 1e9:7.3f} ns  per prompt token {m.prefill_token_s * 1e6:7.3f} us")


if __name__ == "__main__":
    main()

"""Why the PSD drafter's first runner pass is slow inside a run: the shape of the batch it decodes.

Reads committed PSD traces (``docs/measurements/<session>``, the runs whose drafter ops carry ``forward_ms``) and
joins each drafter op to the verify that last decided each of its rows. A row whose drafts were all accepted
(``accepted == k``) feeds the drafter two tokens at its next op (the last draft and the bonus token); the others
feed one. So an op's first pass is one of three shapes:

- ``1 token``: every row feeds one token (a uniform decode batch: vLLM replays a FULL CUDA graph);
- ``mixed``: some rows feed two;
- ``2 tokens``: every row feeds two (still not a uniform decode batch for the drafter, which has no
  speculative tokens of its own, so it runs under PIECEWISE graphs like ``mixed``).

For each shape it prints the first pass's excess over the median of the same op's later passes (all 1-token
uniform passes at the same rows, so the row count cancels), pooled per target/drafter/k.

Per run it prints the full halves' median draft and verify ops (the drafter's op is on the critical path only
where draft >= verify) and how much sharing the GPU stretched the verify: measured verify minus the verify the
shipped H200 models predict for the target alone (step model plus the half swap, no sharing), beside the GPU
time of the drafter's later passes ((k - 1) x their median), the uniform passes that run as FULL CUDA graphs.

    python benchmarks/first_pass.py docs/measurements/2026-12-01-h200-psd-shared docs/measurements/2026-12-02-h200-psd-shared
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_common import import_minedraft  # noqa: E402
from measurements_table import drafter_options  # noqa: E402

SHAPES = ("1 token", "mixed", "2 tokens")


def first_pass_rows(recs: list[dict]) -> tuple[dict, list[tuple[int, str, float]]]:
    """The run's config and, per drafter op with two or more passes: (rows, first-pass shape, excess ms)."""
    cfg = recs[0]["config"]
    k = int(cfg["k"])
    ops = [r for r in recs if r.get("type") == "op" and r["op"] in ("verify", "draft")]
    # a verify decides its rows when it ends; a draft reads them when it starts
    events = sorted(ops, key=lambda r: (r["t_end"] if r["op"] == "verify" else r["t_start"], r["op"] == "draft"))
    accepted, out = {}, []
    for r in events:
        if r["op"] == "verify":
            accepted.update(zip(r["request_ids"], r["accepted"]))
            continue
        fwd = r.get("forward_ms") or []
        if len(fwd) < 2 or r.get("catch_ups") or not all(i in accepted for i in r["request_ids"]):
            continue
        n = len(r["request_ids"])
        two = sum(accepted[i] == k for i in r["request_ids"])
        shape = SHAPES[0] if two == 0 else SHAPES[2] if two == n else SHAPES[1]
        out.append((n, shape, fwd[0] - statistics.median(fwd[1:])))
    return cfg, out


def sharing_row(name: str, recs: list[dict]) -> dict:
    """One run's full halves, medians in ms: draft op, verify, the verify the shipped H200 models predict with the
    GPU not shared ("alone"), the stretch (verify - alone) and the drafter's later passes ((k - 1) x the median
    pass after the first)."""
    from dataclasses import replace

    from minedraft.calibration.plugin import op_medians
    from minedraft.calibration.steps import PROFILES
    from minedraft.cli.validate import costs_for
    from minedraft.policies.psd import half_capacity
    from minedraft.simulator.replay import measured_run, replay

    run = measured_run(recs, name)
    half = half_capacity(run.cfg)
    costs = replace(costs_for(PROFILES / "h200", run.target, run.draft, "folders", plugin=PROFILES / "h200",
                              resident=run.resident), shared_gpu_slowdown=0.0, shared_verify_stretch=0.0)
    ms = lambda x: x * 1e3 if x is not None else None  # noqa: E731
    m, p = op_medians(run.trace, half), op_medians(replay(run, costs), half)
    draft, verify, alone = ms(m["draft"]), ms(m["verify"]), ms(p["verify"])
    later = [statistics.median(r["forward_ms"][1:]) for r in recs if r.get("type") == "op" and r["op"] == "draft"
             and len(r["request_ids"]) == half and len(r.get("forward_ms") or []) > 1]
    return {"rows": half, "draft": draft, "verify": verify, "alone": alone,
            "stretch": verify - alone if verify is not None and alone is not None else None,
            "later": (run.k - 1) * statistics.median(later) if later else None}


def ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x is not None and y else None


def main(argv: list[str] | None = None) -> int:
    import_minedraft()
    from minedraft.errors import InputError

    try:
        return report(argv)
    except InputError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2


def report(argv: list[str] | None) -> int:
    from rich.table import Table

    from minedraft.errors import require
    from minedraft.report import console
    from minedraft.trace import load_runs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="measurement folders with PSD traces (*.jsonl or traces_*.tgz)")
    a = p.parse_args(argv)
    pooled = defaultdict(list)
    per_run = Table(title="Full halves, medians in ms: drafter op, target verify, the verify modelled alone, the "
                          "stretch (verify - alone) and the drafter's later passes ((k - 1) x median pass)")
    for col in ("session", "target + drafter", "k", "rows", "draft", "verify", "D / V", "alone", "stretch", "later",
                "stretch / later"):
        per_run.add_column(col)
    for folder in a.folders:
        for name, recs in sorted(load_runs([], folder, "folders").items()):
            if not name.startswith("policy-psd"):
                continue
            cfg, rows = first_pass_rows(recs)
            if not any("forward_ms" in r for r in recs if r.get("op") == "draft"):
                continue
            group = (cfg["target"], cfg["draft"], int(cfg["k"]))
            for _, shape, ex in rows:
                pooled[group + (shape,)].append(ex)
            r = sharing_row(name, recs)
            f = lambda x, p=1: f"{x:.{p}f}" if x is not None else "-"  # noqa: E731
            per_run.add_row(Path(folder).name[:10], f"{cfg['target']} + {cfg['draft']}" + "".join(
                                ", " + x for x in drafter_options(cfg)), str(cfg["k"]), str(r["rows"]),
                            f(r["draft"]), f(r["verify"]), f(ratio(r["draft"], r["verify"]), 2), f(r["alone"]),
                            f(r["stretch"]), f(r["later"]), f(ratio(r["stretch"], r["later"]), 2))
    require(bool(pooled), "folders", "need PSD traces whose drafter ops carry forward_ms (written since 2026-12-01)",
            ", ".join(a.folders))
    table = Table(title="Drafter's first pass minus the median of its later passes, by the first pass's shape")
    for col in ("target", "drafter", "k", "shape", "ops", "excess median ms", "p25-p75 ms"):
        table.add_column(col)
    for key in sorted(pooled):
        v = sorted(pooled[key])
        q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
        table.add_row(key[0], key[1], str(key[2]), key[3], str(len(v)), f"{statistics.median(v):.2f}",
                      f"{q[0]:.2f} to {q[2]:.2f}")
    out = console()
    out.print(table)
    out.print(per_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

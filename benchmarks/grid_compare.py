"""Two forward-time grids of one model side by side (``minedraft-calibrate grid`` profiles): B's time over A's.

Made to compare a grid measured with vLLM's default CUDA graphs (``FULL_AND_PIECEWISE``: full graphs for
one-token decodes only) with one under ``--cudagraph-mode FULL`` (full graphs for every shape). Prints, at one
context length, the ratio per batch and new tokens, then the median and range of the ratio over all points with
one new token and with more than one.

    python benchmarks/grid_compare.py docs/measurements/2026-12-01-h200-psd-shared/grid_qwen3-8b.json \\
        docs/measurements/2026-12-03b-h200-exec-cli/grid_qwen3-8b_full_graphs.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_common import import_minedraft  # noqa: E402

import_minedraft()
from minedraft.cli.common import run_cli  # noqa: E402
from minedraft.latency import LatencyProfile  # noqa: E402


def grid(path: Path, name: str) -> tuple[dict, dict]:
    """``{(batch, new_tokens, context): seconds}`` and the profile's provenance (the file checked as a profile)."""
    prof = LatencyProfile.load(path, name)
    f = prof.forward
    pts = {(b, n, c): f["seconds"][i][j][m] for i, b in enumerate(f["batch"]) for j, n in enumerate(f["new_tokens"])
           for m, c in enumerate(f["context_len"])}
    return pts, prof.provenance


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="the reference grid")
    p.add_argument("b", type=Path, help="the grid compared with it")
    p.add_argument("--context", type=int, default=None, help="context length of the printed table (default: largest)")
    a = p.parse_args(argv)
    ga, pa = grid(a.a, "a")
    gb, pb = grid(a.b, "b")
    common = sorted(set(ga) & set(gb))
    if not common:
        raise SystemExit("error: the two grids share no (batch, new tokens, context) point")
    ctx = a.context or max(c for _, _, c in common)
    batches = sorted({b for b, _, c in common if c == ctx})
    news = sorted({n for _, n, c in common if c == ctx})
    label = lambda pr: f"{pr.get('date', '?')[:10]}, cudagraph_mode {pr.get('cudagraph_mode') or 'default'}"  # noqa: E731
    t = Table(title=f"B / A forward time at context {ctx}; A = {a.a.name} ({label(pa)}), B = {a.b.name} ({label(pb)})",
              title_justify="left")
    t.add_column("batch \\ new tokens", justify="right")
    for n in news:
        t.add_column(str(n), justify="right")
    for b in batches:
        t.add_row(str(b), *(f"{gb[b, n, ctx] / ga[b, n, ctx]:.2f}" for n in news))
    out = Console()
    out.print(t)
    for name, keep in (("1 new token", lambda n: n == 1), ("> 1 new token", lambda n: n > 1)):
        r = [gb[k] / ga[k] for k in common if keep(k[1])]
        if r:
            out.print(f"{name}: B / A median {statistics.median(r):.2f}, range {min(r):.2f}-{max(r):.2f} "
                      f"({len(r)} points, every context)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))

"""Measure a forward-time grid on vLLM and fit the roofline to it: ``minedraft-calibrate grid`` for machines where
minedraft is not installed (this checkout is mapped into the namespace, as the other GPU scripts do).

Same flags as ``minedraft-calibrate grid`` (``--help``); for example, on a lent H100 with vLLM 0.26:
``python3 benchmarks/forward_grid.py --model qwen3-8b --gpu h100 --fit --out $OUT/qwen3-8b.json``.
"""

from __future__ import annotations

import os
import sys

from _gpu_common import import_minedraft  # beside this script


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import_minedraft()
    from minedraft.cli.calibrate import main as calibrate
    from minedraft.cli.common import run_cli

    return run_cli(calibrate, ["grid", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

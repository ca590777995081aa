"""What the GPU benchmark scripts share: importing this checkout, list flags, a deadline clock, JSON lines.

The scripts run on lent GPU machines where minedraft is not installed: ``import_minedraft`` maps this
checkout's top-level folders into the ``minedraft`` namespace, as pyproject's package-dir does.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_minedraft() -> None:
    """Use an installed minedraft, or map this checkout's top-level folders into the namespace."""
    try:
        import minedraft.executor.psd  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import minedraft

        minedraft.__path__.append(str(ROOT))  # minedraft.executor -> ROOT/executor, as package-dir maps it


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


class Clock:
    """Seconds since the start, against an optional deadline."""

    def __init__(self, deadline: float | None) -> None:
        self.t0, self.deadline = time.monotonic(), deadline

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, need: float = 0.0) -> bool:
        return self.deadline is None or self.elapsed + need < self.deadline


def emit(obj: dict) -> None:
    """One JSON line on stdout, flushed (numpy scalars as numbers)."""
    print(json.dumps(obj, default=lambda x: x.item() if hasattr(x, "item") else str(x)), flush=True)

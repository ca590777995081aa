"""What the GPU benchmark scripts share: importing this checkout, list flags, a deadline clock, JSON lines.

The scripts run on lent GPU machines where minedraft is not installed: ``import_minedraft`` maps this
checkout's top-level folders into the ``minedraft`` namespace, as pyproject's package-dir does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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


def target_drafter_pairs(text: str) -> list[tuple[str, str]]:
    """``--pairs``: a comma list of target:drafter (presets or model directories)."""
    out = []
    for item in text.split(","):
        if item.strip():
            t, d = item.split(":")
            out.append((t.strip(), d.strip()))
    return out


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


def add_run_flags(p: argparse.ArgumentParser, engine_start_s: float) -> None:
    """The flags every GPU benchmark has: warm-up, seed, trace folder, and the deadline of a device call."""
    p.add_argument("--warmup", type=int, default=8, help="throw-away requests after each engine start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace-dir", default=None, help="write each run's trace JSONL here (e.g. $OUT)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no run (or engine) after this many seconds; print 'skipped' lines instead")
    p.add_argument("--engine-start-s", type=float, default=engine_start_s,
                   help="time an engine start (with warm-up and one run) is assumed to need before the deadline")


def run_children(script: str, argv: list[str], jobs: list[tuple[object, list[str]]], deadline_s: float | None,
                 engine_start_s: float, env: dict | None = None) -> tuple[int, float]:
    """Run ``script`` once per job (``argv`` + the job's arguments), one engine per child process.

    An in-process engine does not hand all its GPU memory back when dropped, so each engine gets a process.
    A job is (label, arguments); a job that could not start its engine before the deadline prints a
    ``skipped`` line with its label. Each child gets the time left as its own ``--deadline-s``. Returns the
    worst exit code and the seconds spent.
    """
    clock = Clock(deadline_s)
    rc = 0
    for label, extra in jobs:
        child = [*argv, *extra]
        if deadline_s is not None:
            left = deadline_s - clock.elapsed
            if left < engine_start_s:
                emit({"kind": "skipped", "job": label, "reason": "deadline (engine start)"})
                continue
            child += ["--deadline-s", f"{left:.0f}"]
        rc = max(rc, subprocess.run([sys.executable, script, *child], env=env, check=False).returncode)
    return rc, clock.elapsed


def start_engine(spec, name: str, labels: dict, clock: Clock, start_s: float, warmup: int, input_len: int):
    """A benchmark's engine, warmed up, with its ``engine`` line; None (and a ``skipped`` line) when the deadline
    leaves no time for an engine start."""
    from minedraft.executor.engine import Engine

    if not clock.left(start_s):
        emit({"kind": "skipped", **labels, "reason": "deadline (engine start)"})
        return None
    t = time.monotonic()
    eng = Engine(spec, name=name)
    eng.warmup(warmup, input_len, 32)
    emit({"kind": "engine", **labels, "start_s": round(time.monotonic() - t, 1), "facts": eng.facts})
    return eng


def device_facts() -> dict:
    """torch's version and the GPUs it sees, for a benchmark's setup line (an error text where torch fails)."""
    try:
        import torch

        return {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                else None, "gpus": torch.cuda.device_count()}
    except Exception as exc:  # noqa: BLE001 - reported in the line, the run goes on
        return {"torch_error": repr(exc)}


class RunRecorder:
    """One run's records in memory and, with ``trace_dir``, in a trace file named after the run's labels."""

    def __init__(self, trace_dir: str | None, labels: dict) -> None:
        from minedraft.trace import TraceWriter

        self.records: list[dict] = []
        self.writer = None
        if trace_dir:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            name = "_".join(f"{key}-{Path(str(v)).name}" for key, v in labels.items() if v is not None) + ".jsonl"
            self.writer = TraceWriter(Path(trace_dir) / name.replace("/", "_").replace(":", ""))

    def __call__(self, rec: dict) -> None:
        self.records.append(rec)
        if self.writer is not None:
            self.writer.write(rec)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


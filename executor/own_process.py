"""One policy's engine in a process of its own, its records streamed back as they come.

An in-process vLLM engine does not hand all its GPU memory back when it is closed (seen on an H200: the next
engine found 108 of 140 GiB free, `docs/measurements/2026-11-23-h200-ar-sd/COMMANDS.md`), so ``minedraft-exec
--policy ar,sd,psd`` on a GPU starts each policy's engine in a fresh Python (:mod:`minedraft.executor.boot`) and
lets the process's exit free the device. The parent writes the trace and drives the progress bar from the
child's messages, so a child that dies leaves every record it sent, and the run can be resumed.

Wire (pickled over the socket): parent -> child: one job dict (:func:`minedraft.executor.run.run_one`'s
arguments); child -> parent: ("record", rec)*, ("progress", args)*, then ("done", RunResult, engine facts)
or ("error", exception or None, traceback text).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable

from minedraft.errors import RunFailed
from minedraft.executor.boot import child_connection, start


class EngineProcessFailed(RunFailed):
    """The engine's process died or failed without a picklable error of its own."""


def run_in_own_process(job: dict, emit: Callable[[dict], None],
                       progress: Callable[..., None] | None) -> tuple[object, dict]:
    """Run ``job`` (``run_one``'s keyword arguments, no callbacks) in a fresh process; (RunResult, facts)."""
    proc, conn = start("minedraft.executor.own_process", dict(os.environ))
    try:
        conn.send(job)
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                raise EngineProcessFailed(
                    f"the {job['policy']} engine's process exited (code {proc.wait()}) before its run finished; "
                    "the records it sent are kept (resume with --resume)") from None
            if msg[0] == "record":
                emit(msg[1])
            elif msg[0] == "progress":
                if progress is not None:
                    progress(*msg[1])
            elif msg[0] == "done":
                return msg[1], msg[2]
            else:
                _, exc, text = msg
                if exc is not None:
                    raise exc
                last = text.strip().splitlines()[-1] if text.strip() else "no message"
                raise EngineProcessFailed(f"the {job['policy']} engine's process failed: {last}")
    finally:
        conn.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _picklable(exc: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - then the parent gets the traceback text instead
        return None
    return exc


def main(argv: list[str] | None = None) -> int:
    conn = child_connection(sys.argv[1:] if argv is None else argv,
                            "minedraft's engine process for one policy (started by minedraft-exec)")
    try:
        job = conn.recv()
        from minedraft.executor.run import run_one

        result, facts = run_one(**job, emit=lambda rec: conn.send(("record", rec)),
                                progress=lambda *a: conn.send(("progress", a)))
        conn.send(("done", result, facts))
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which raises it
        if os.environ.get("MINEDRAFT_DEBUG"):
            traceback.print_exc()
        try:
            conn.send(("error", _picklable(exc), traceback.format_exc(limit=30)))
        except OSError:
            pass
        return 1
    finally:
        conn.close()

"""Run a list of GPU benchmark jobs across the visible GPUs within one device call's time.

A lent machine runs one command at a time for at most 10 minutes, and an engine start costs 1-3 of them, so
a session's measurements are a queue worked through by a few calls. Each GPU gets a worker; a worker takes
the next job whose estimated time still fits before ``--deadline-s``, runs it with ``CUDA_VISIBLE_DEVICES``
set to its GPU, and records it as done in ``--state`` (a file that stays on the machine between calls, so
the next call goes on where this one stopped; a job that failed is not retried). At ``--hard-stop-s`` running jobs are killed (their JSON
lines are already flushed); then everything under the output folder is packed into one ``.tgz`` (a device
call brings back few files).

Jobs file: one JSON object per line, ``{"name": ..., "est_s": seconds, "cmd": [...]}``; ``{out}`` in the
command becomes the job's own output folder, ``{left}`` the seconds left before the hard stop (for a
script's own ``--deadline-s``). Each job's stdout goes to ``NAME.jsonl``, stderr to
``NAME.err``.

``python3 benchmarks/gpu_queue.py docs/measurements/SESSION/jobs.jsonl --gpus 0,1 --out $OUT
--deadline-s 560 --hard-stop-s 585``; ``--gpus 0+1`` gives one worker both GPUs (PSD with its drafter on a GPU of
its own), ``--gpus 0+1+2+3+4`` five (the published layout: TP 4 and the drafter's GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from _gpu_common import Clock, emit  # beside this script


def load_jobs(path: Path) -> list[dict]:
    jobs = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        job = json.loads(line)
        for key in ("name", "est_s", "cmd"):
            if key not in job:
                raise SystemExit(f"error: {path}:{i}: job lacks {key!r}")
        jobs.append(job)
    names = [j["name"] for j in jobs]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: {path}: job names repeat")
    return jobs


#: Where vLLM, torch and the kernel libraries keep what an engine start compiles: an engine on a fresh machine
#: fills them first (the first engine of a session starts 100-150 s slower). Their sizes go to the queue log, to
#: judge whether carrying them from session to session would pay.
CACHES = ("~/.cache/vllm", "~/.triton", "~/.cache/flashinfer", "/tmp/torchinductor_root")


def _mib(path: Path) -> str:
    if not path.exists():
        return "absent"
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 2**20:.1f}"


def _done(state: Path) -> set[str]:
    return set(state.read_text().split()) if state.exists() else set()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("jobs", type=Path)
    p.add_argument("--gpus", default="0", help="comma list of GPU indices, one worker each; a worker given 0+1 "
                                               "runs each job on GPUs 0 and 1 (a target and its own drafter GPU)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--state", type=Path, default=Path("/tmp/minedraft-gpu-queue.done"),
                   help="names of finished jobs (kept on the machine between calls)")
    p.add_argument("--deadline-s", type=float, default=560, help="start no job whose est_s would pass this")
    p.add_argument("--hard-stop-s", type=float, default=585, help="kill running jobs at this time")
    p.add_argument("--pack", default="queue", help="name of the .tgz written under --out")
    a = p.parse_args(argv)
    clock = Clock(a.deadline_s)
    jobs = load_jobs(a.jobs)
    done = _done(a.state)
    todo = [j for j in jobs if j["name"] not in done]
    work = a.out / a.pack
    work.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    running: dict[str, subprocess.Popen] = {}
    log = open(work / "queue.log", "a", buffering=1)

    def say(msg: str) -> None:
        log.write(f"{clock.elapsed:7.1f} {msg}\n")

    def worker(gpu: str) -> None:
        while True:
            with lock:
                job = next((j for j in todo if clock.left(j["est_s"])), None)
                if job is None:
                    return
                todo.remove(job)
            jdir = work / job["name"]
            jdir.mkdir(exist_ok=True)
            left = a.hard_stop_s - clock.elapsed - 10
            cmd = [str(x).replace("{out}", str(jdir)).replace("{left}", f"{left:.0f}") for x in job["cmd"]]
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu.replace("+", ","))
            say(f"gpu {gpu} start {job['name']} (est {job['est_s']} s)")
            t = clock.elapsed
            with open(work / f"{job['name']}.jsonl", "w") as so, open(work / f"{job['name']}.err", "w") as se:
                proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, start_new_session=True)
                with lock:
                    running[job["name"]] = proc
                rc = proc.wait()
                with lock:
                    running.pop(job["name"], None)
            say(f"gpu {gpu} end {job['name']} rc {rc} in {clock.elapsed - t:.0f} s")
            if rc != -9:  # finished (a failure is not retried); killed at the hard stop: the next call reruns it
                with lock, open(a.state, "a") as f:
                    f.write(job["name"] + "\n")

    threads = [threading.Thread(target=worker, args=(g.strip(),), daemon=True) for g in a.gpus.split(",") if g.strip()]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        if clock.elapsed > a.hard_stop_s:
            with lock:
                for name, proc in running.items():
                    say(f"hard stop: killing {name}")
                    try:
                        os.killpg(proc.pid, 9)
                    except ProcessLookupError:
                        pass
            break
        time.sleep(1)
    for th in threads:
        th.join(timeout=10)
    done = _done(a.state)
    left = [j["name"] for j in jobs if j["name"] not in done]
    say(f"left: {' '.join(left) or 'none'}")
    say("compile caches (MiB): " + ", ".join(f"{c} {_mib(Path(c).expanduser())}" for c in CACHES))
    log.close()
    with tarfile.open(a.out / f"{a.pack}.tgz", "w:gz") as tar:
        tar.add(work, arcname=a.pack)
    shutil.rmtree(work)
    emit({"kind": "queue", "elapsed_s": round(clock.elapsed, 1), "left": left})
    return 0


if __name__ == "__main__":
    sys.exit(main())

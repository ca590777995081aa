"""Evaluating points: one ``minedraft-sim`` command line each, in parallel, checkpointed as they finish.

A point is evaluated by :func:`evaluate_point`, which hands its argv to ``minedraft-sim``'s own parser and
builds the run with the same functions that CLI uses (:mod:`minedraft.cli.common`, :func:`sim_build`), so a
point's numbers are exactly what ``minedraft-sim <argv>`` prints: PSD's ``auto`` schedule included, its
threshold from :func:`minedraft.cli.common.with_split_rows` as that CLI takes it. Points run in local worker processes
(:class:`LocalPool`, ``concurrent.futures``), in-process (one worker), or as Ray tasks on a cluster
(:class:`RayPool`). Each finished point is appended to a JSONL :class:`Checkpoint` and flushed at once,
so a killed sweep loses nothing it finished: a restart skips every point already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

from minedraft.errors import InputError

#: Bump when what a point's metrics mean changes: old checkpoint lines are then ignored.
#: /2: PSD points run minedraft-sim's ``--psd-split`` (auto: the step model's threshold) and keep split_fraction.
POINT_SCHEMA = "minedraft.plan.point/2"
#: The metrics a point keeps (the rest of minedraft-sim's JSON is not needed by the planner).
KEEP = ("output_throughput", "output_throughput_per_gpu", "request_throughput", "num_gpus", "mean_e2el_ms",
        "p99_e2el_ms", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "p90_tpot_ms",
        "mean_acceptance_length", "makespan_s", "target_busy_fraction", "drafter_busy_fraction", "completed",
        "total_output_tokens", "split_fraction")


def point_key(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps([POINT_SCHEMA, argv]).encode()).hexdigest()[:20]


#: What the reports and the dashboard say for ``--psd-split always`` (minedraft-sim prints no line for it).
PSD_ALWAYS_LINE = "PSD always: two halves whenever two can be formed (the published schedule)"


class SimRun(NamedTuple):
    """What ``minedraft-sim <argv>`` builds before it simulates (:func:`sim_build`)."""

    args: Any  # the parsed namespace
    policies: list[str]
    cfg: Any  # PolicyConfig, as the run takes it (PSD auto: the step model's psd_split_rows filled in)
    curve: Any  # AcceptanceCurve or None (no speculative policy)
    workload: Any  # Workload
    requests: Any  # the workload's requests
    costs: Any  # StepCosts
    tp: int
    info: dict  # timing and latency sources
    split_line: str | None  # PSD auto: when it splits and why (minedraft-sim prints it; JSON config.psd_split)


def sim_build(argv: list[str]) -> SimRun:
    """minedraft-sim's flags -> its run, built by the very calls ``minedraft.cli.sim.main`` makes: its parser,
    :mod:`minedraft.cli.common`'s configs (the acceptance curve with PEARL's extra position) and, with PSD among
    the policies, :func:`~minedraft.cli.common.with_split_rows` at the workload's mean context."""
    from minedraft.cli import common, sim
    from minedraft.policies import POLICIES

    a = sim.build_parser().parse_args(argv)
    policies = common.parse_policies(a.policy)
    cfg = common.policy_config(a)
    speculative = any(POLICIES[p].speculative for p in policies)
    curve = common.acceptance_curve(a, cfg, extra=1 if "pearl" in policies else 0) if speculative else None
    wl = common.workload(a)
    costs, tp, info = common.step_costs(a, needs_drafter=speculative)
    requests = wl.generate()
    line = None
    if "psd" in policies:
        context = float(requests.prompt_len.mean() + requests.output_len.mean() / 2)
        cfg, line = common.with_split_rows(cfg, costs, curve, tp, context)
    return SimRun(a, policies, cfg, curve, wl, requests, costs, tp, info, line)


def sim_inputs(argv: list[str]):
    """minedraft-sim's flags -> (namespace, PolicyConfig, curve, Workload, StepCosts, tp, timing info), as
    :func:`sim_build` builds them (the PolicyConfig is the one the run takes)."""
    r = sim_build(argv)
    return r.args, r.cfg, r.curve, r.workload, r.costs, r.tp, r.info


def evaluate_point(argv: list[str]) -> dict:
    """Simulate one point exactly as ``minedraft-sim <argv>`` would; returns its metrics and provenance
    (``psd_split``: the line minedraft-sim prints on when PSD splits, None for other runs)."""
    from minedraft.simulator.run import Comparison

    t0 = time.perf_counter()
    r = sim_build(argv)
    (_, m), = Comparison(r.policies, r.requests, r.cfg, r.costs, r.curve, seed=r.workload.seed,
                         target_gpus=r.tp).run()
    return {"metrics": {k: m.get(k) for k in KEEP},
            "latency": r.info.get("latency_sources") or r.info.get("latency_model"), "psd_split": r.split_line,
            "elapsed_s": time.perf_counter() - t0, "worker": f"{socket.gethostname()}:{os.getpid()}"}


class Checkpoint:
    """Finished points, one JSON line each (``key``, ``argv``, ``result``), appended and flushed as they come.

    Reading skips lines that do not parse (a line cut short by a kill) and lines of another schema.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.done: dict[str, dict] = {}
        self._fh = None
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec, dict) and rec.get("schema") == POINT_SCHEMA and "key" in rec \
                            and isinstance(rec.get("result"), dict):
                        self.done[rec["key"]] = rec["result"]
        self.loaded = len(self.done)
        self.initial = frozenset(self.done)

    def get(self, argv: list[str]) -> dict | None:
        return self.done.get(point_key(argv))

    def add(self, argv: list[str], result: dict) -> None:
        key = point_key(argv)
        self.done[key] = result
        if self.path is None:
            return
        if self._fh is None:
            cut = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")
            if cut:  # a line cut short by a kill: start ours on a fresh line
                self._fh.write("\n")
        self._fh.write(json.dumps({"schema": POINT_SCHEMA, "key": key, "argv": argv, "result": result},
                                  separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


# ------------------------------------------------------------------------------------------ pools
class InlinePool:
    """Evaluate points one after another in this process (one worker)."""

    name = "in-process"
    workers = 1

    def imap_unordered(self, fn: Callable[[list[str]], dict], items: list[list[str]]) -> Iterator[tuple[int, dict]]:
        for i, item in enumerate(items):
            yield i, fn(item)

    def close(self) -> None:
        pass


class LocalPool:
    """Worker processes on this machine (``concurrent.futures``, spawned: no state shared with the driver)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.name = f"{workers} local processes"
        self._ex: ProcessPoolExecutor | None = None

    def imap_unordered(self, fn: Callable[[list[str]], dict], items: list[list[str]]) -> Iterator[tuple[int, dict]]:
        if self._ex is None:
            self._ex = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        pending = {self._ex.submit(fn, item): i for i, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield pending.pop(f), f.result()

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)
            self._ex = None


class RayPool:
    """Ray tasks on the cluster at ``address`` (``auto``, ``host:port`` or ``ray://host:port``).

    Every node needs this package installed (the same version): tasks import ``minedraft`` there.
    """

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--ray-address", "needs Ray installed (pip install 'minedraft[ray]')", address) from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _probe(address)  # Ray retries an address that does not answer for minutes; say so at once
        try:
            ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False,
                     include_dashboard=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
            raise InputError("--ray-address", f"must name a running Ray cluster ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())[:160]})", address) from None
        self._ray = ray
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self.name = f"Ray cluster at {address} ({self.workers} CPUs)"
        self._remote = {}

    def imap_unordered(self, fn: Callable[[list[str]], dict], items: list[list[str]]) -> Iterator[tuple[int, dict]]:
        ray = self._ray
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=1, max_retries=2)(fn)
        pending = {remote.remote(item): i for i, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)

    def close(self) -> None:
        self._ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to ``host:port`` (or ``ray://host:port``); ``auto`` is left to Ray."""
    hostport = address.split("://", 1)[-1].strip()
    if address.strip().lower() == "auto":
        return
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--ray-address", "must be auto, HOST:PORT or ray://HOST:PORT", address)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError("--ray-address", f"must name a running Ray cluster (cannot connect: {exc.strerror or exc})",
                         address) from None


def make_pool(workers: int, ray_address: str | None):
    if ray_address:
        return RayPool(ray_address)
    return InlinePool() if workers <= 1 else LocalPool(workers)


# ------------------------------------------------------------------------------------------ running
class Progress:
    """A Rich progress bar per stage on a terminal; one line per stage otherwise (or nothing, quiet)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self._bar = None

    def start(self, stage: str, total: int, resumed: int) -> None:
        self.stage, self.total, self.t0 = stage, total, time.monotonic()
        if not self.enabled or total == 0:
            return
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{stage}[/]"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(stage, total=total, completed=resumed)
        else:
            print(f"minedraft-plan: {stage}: {total} points ({resumed} already done)", file=sys.stderr,
                  flush=True)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def run_points(argvs: Iterable[list[str]], pool, checkpoint: Checkpoint, progress: Progress, stage: str,
               fn: Callable[[list[str]], dict] = evaluate_point) -> tuple[dict[str, dict], dict]:
    """Evaluate every argv not already in the checkpoint; returns ``{key: result}`` and counts."""
    unique: dict[str, list[str]] = {}
    for argv in argvs:
        unique.setdefault(point_key(argv), argv)
    out = {k: checkpoint.done[k] for k in unique if k in checkpoint.done}
    todo = [argv for k, argv in unique.items() if k not in checkpoint.done]
    resumed = sum(1 for k in unique if k in checkpoint.initial)
    progress.start(stage, len(unique), len(out))
    try:
        for i, result in pool.imap_unordered(fn, todo):
            checkpoint.add(todo[i], result)
            out[point_key(todo[i])] = result
            progress.advance()
    finally:
        progress.stop()
    return out, {"points": len(unique), "resumed": resumed, "simulated": len(todo),
                 "reused": len(unique) - len(todo) - resumed}

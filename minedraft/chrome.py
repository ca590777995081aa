"""A run's ops as a Chrome / Perfetto trace (the Trace Event Format's JSON object form), for ui.perfetto.dev or
chrome://tracing.

One process per policy; in it one track (thread) per resource, ``target`` and ``drafter``, and for PSD one track
per resource and half (``target · half 0``, ...): a PSD step shows as the verify of one half above the draft of the
other. Each op is a complete event (``"ph": "X"``, microseconds) named by its kind, with its rows, k, half and
accepted drafts in ``args``; metadata events name the processes and tracks and keep their order. Simulated and
measured traces convert alike (``minedraft-sim --trace-chrome``, ``minedraft-exec --trace-chrome``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from minedraft.ops import DRAFT, DRAFTER, OP_KINDS, RESOURCES, TARGET, VERIFY
from minedraft.trace import Trace

HALVES = (DRAFT, VERIFY)  # PSD ops that belong to a half; prefills and the rest stay on the resource's own track
LABEL = {TARGET: "target", DRAFTER: "drafter"}  # a track's name per resource


def track(policy: str, resource: str, kind: str, batch_id: int) -> str:
    """The track an op is drawn on."""
    if policy == "psd" and kind in HALVES:
        return f"{LABEL[resource]} · half {int(batch_id)}"
    return LABEL[resource]


def chrome_events(traces: Sequence[Trace]) -> dict:
    """The Trace Event Format object of one or more runs (one process each, in order)."""
    events: list[dict] = []
    for pid, tr in enumerate(traces, 1):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": tr.policy}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        ops = []
        for i in range(tr.num_ops):
            kind, res = OP_KINDS[tr.op_kind[i]], RESOURCES[tr.op_resource[i]]
            ops.append((i, kind, track(tr.policy, res, kind, int(tr.op_batch_id[i]))))
        order = sorted({n for _, _, n in ops}, key=lambda n: (n.split(" ·")[0] != LABEL[TARGET], n))
        tids = {n: j for j, n in enumerate(order, 1)}
        for name, tid in tids.items():
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
        for i, kind, name in ops:
            t0, t1 = float(tr.op_t_start[i]), float(tr.op_t_end[i])
            args = {"rows": int(tr.op_size[i]), "k": int(tr.op_k[i]), "half": int(tr.op_batch_id[i])}
            if kind == VERIFY:
                args["accepted_drafts"] = int(tr.op_accepted[i])
            if tr.op_chunk_tokens[i]:
                args["prefill_tokens"] = int(tr.op_chunk_tokens[i])
            events.append({"name": kind, "cat": tr.policy, "ph": "X", "ts": round(t0 * 1e6, 3),
                           "dur": round(max(0.0, t1 - t0) * 1e6, 3), "pid": pid, "tid": tids[name], "args": args})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"source": "minedraft", "policies": [t.policy for t in traces]}}


def write_chrome(traces: Sequence[Trace], path: str | os.PathLike) -> None:
    """Write the runs' Chrome trace to ``path`` (whole or not at all: a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(chrome_events(traces), fh, separators=(",", ":"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

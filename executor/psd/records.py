"""Trace records of a PSD/PEARL engine step (pure Python, no vLLM).

One vLLM step of the plugin becomes:

- the target's op (``verify`` of one half, ``prefill``, or ``decode`` once speculation has stopped), built
  by :func:`minedraft.executor.records.op_record`, with the half in ``batch_id``, PEARL's probe rows in
  ``probe`` and ``t_target_end``: when the target's results reached the scheduler (before the barrier
  waited for the drafter);
- one op per drafter op on the ``draft`` resource (``draft``, ``draft_prefill``) with the drafter
  process's own ``t_start`` / ``t_end``, ``forwards``, ``tokens_in`` (target tokens shipped), and the
  transfer: ``t_sent`` (engine sent the op), ``t_received`` (the barrier collected the drafts: after the
  target's work too, so not a latency) and ``bytes_sent`` / ``bytes_received``;
- ``{"type": "event"}`` records (``speculation_stopped`` with its reason).
"""

from __future__ import annotations

from collections.abc import Callable

from minedraft.executor.records import ScheduledStep, op_record
from minedraft.ops import DECODE, DRAFTER, VERIFY


def step_records(policy: str, step: ScheduledStep, info: dict | None, ids: dict[str, int], t_start: float,
                 t_end: float, index: int, clock: Callable[[float], float], pearl: bool,
                 accepted_per_pos: list[int] | None = None) -> list[dict]:
    """Records of one vLLM step (target op first, then drafter ops, then events); ``clock`` maps
    ``time.perf_counter()`` values (any process of this host) to trace time."""
    info = info or {}
    out: list[dict] = []
    rec = op_record(policy, step, ids, t_start, t_end, index, True, accepted_per_pos)
    if rec is not None:
        if rec["op"] == VERIFY and info.get("target") != VERIFY and not rec.get("drafted_tokens"):
            rec["op"] = DECODE  # no speculation any more (the drafter failed): plain decoding
            for key in ("accepted", "verify_lengths", "drafted_tokens", "accepted_tokens", "accepted_per_pos"):
                rec.pop(key, None)
            rec["k"] = 0
        if info.get("batch_id") is not None:
            rec["batch_id"] = int(info["batch_id"])
        if pearl and rec["op"] == VERIFY:
            lengths = rec.get("verify_lengths") or [rec["k"]] * rec["size"]
            if any(n == 0 for n in lengths):
                rec["probe"] = [n == 0 for n in lengths]
        if info.get("t_target_end") is not None:
            rec["t_target_end"] = clock(info["t_target_end"])
        out.append(rec)
    for d in info.get("draft_ops") or ():
        rids = [ids[r] for r in d["request_ids"] if r in ids]
        out.append({"type": "op", "policy": policy, "op": d["op"], "resource": DRAFTER,
                    "batch_id": int(d.get("batch_id") or 0), "request_ids": rids, "k": int(d.get("k") or 0),
                    "t_start": clock(d["t_start"]), "t_end": clock(d["t_end"]), "size": len(rids), "step": index,
                    "forwards": d.get("forwards"), "tokens_in": d.get("tokens_in"),
                    "t_sent": clock(d["t_sent"]), "t_received": clock(d["t_received"]),
                    "bytes_sent": d.get("bytes_sent"), "bytes_received": d.get("bytes_received"),
                    **{key: d[key] for key in ("forward_ms", "cpu_ms", "preempted", "catch_ups", "entries")
                       if key in d}})
    for e in info.get("events") or ():
        out.append({"type": "event", "policy": policy, **{k: v for k, v in e.items() if k != "t"},
                    "t": clock(e["t"])})
    return out

"""From what vLLM scheduled and returned to our trace records (pure Python: no vLLM import here).

One **engine step** of vLLM (``LLMEngine.step``: schedule, target forward, rejection sampling, drafter
proposals for the next step, output processing) becomes one ``op`` record on the ``target`` resource:

- ``verify`` for an SD step with decode rows (each decode row checks the drafts made for it in the
  previous step and, in the same step, the drafter proposes the next ones: vLLM's drafter shares the
  target's device and runs serially inside the step, so the step's time covers draft + verify);
- ``decode`` for an AR step with decode rows;
- ``prefill`` for a step that held only prefill rows (whole prompts or chunks of them).

**Mixed steps.** With chunked prefill vLLM packs prompt chunks and decode rows into one forward pass.
Such a step is written once, as ``verify``/``decode``, with ``"mixed": true``; ``request_ids`` holds the
decode rows only (so per-request step counts, and ITL, stay right) and ``prefill_request_ids`` /
``prefill_tokens`` the prompt rows. ``size`` is ``len(request_ids)``; ``batch_size`` counts every row.

A row is a **decode row** when the request's prompt was fully computed before the step and the step
schedules exactly its last token plus its drafts (``1 + drafts`` tokens); anything else (a prompt, a
prompt chunk, a recomputation after preemption) is a prefill row.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from minedraft.errors import InputError, require
from minedraft.ops import DECODE, PREFILL, TARGET, VERIFY
from minedraft.trace import SCHEMA, read_records

#: Relative difference allowed between trace-derived and wall-clock output throughput.
THROUGHPUT_TOLERANCE = 0.01


@dataclass(slots=True)
class Row:
    """One request's share of a scheduled step (vLLM's internal request id)."""

    req: str
    scheduled: int  # tokens scheduled for this request this step
    drafts: int  # draft tokens scheduled for verification
    computed_before: int  # tokens already in the KV cache before the step
    prompt_len: int

    @property
    def is_decode(self) -> bool:
        return self.computed_before >= self.prompt_len and self.scheduled == 1 + self.drafts


@dataclass(slots=True)
class ScheduledStep:
    """What the scheduler hook saw for one step: rows, preemptions, and per-row acceptance."""

    rows: list[Row]
    total_tokens: int
    preempted: list[str] = field(default_factory=list)
    #: request -> (drafts checked, drafts accepted), exactly as vLLM counts them for its spec-decode stats
    accepted: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: start (driver clock) of the ``LLMEngine.step()`` call that scheduled this step
    t_call: float | None = None


def op_record(policy: str, step: ScheduledStep, ids: dict[str, int], t_start: float, t_end: float,
              index: int, speculative: bool, accepted_per_pos: list[int] | None = None) -> dict | None:
    """The op record of one engine step (None for a step that scheduled nothing of ours)."""
    rows = [r for r in step.rows if r.req in ids]
    if not rows or step.total_tokens <= 0:
        return None
    dec = [r for r in rows if r.is_decode]
    pre = [r for r in rows if not r.is_decode]
    kind = (VERIFY if speculative else DECODE) if dec else PREFILL
    main = dec if dec else pre
    rec: dict = {"type": "op", "policy": policy, "op": kind, "resource": TARGET, "batch_id": 0,
                 "request_ids": [ids[r.req] for r in main], "k": 0, "t_start": t_start, "t_end": t_end,
                 "size": len(main), "step": index, "batch_size": len(rows),
                 "scheduled_tokens": sum(r.scheduled for r in rows)}
    if kind == VERIFY:
        lengths = [step.accepted.get(r.req, (r.drafts, 0))[0] for r in dec]
        acc = [step.accepted.get(r.req, (0, 0))[1] for r in dec]
        k = max(lengths) if lengths else 0
        rec["k"] = k
        rec["accepted"] = acc
        if any(x != k for x in lengths):
            rec["verify_lengths"] = lengths
        rec["drafted_tokens"] = sum(lengths)
        rec["accepted_tokens"] = sum(acc)
        if accepted_per_pos is not None:
            rec["accepted_per_pos"] = list(accepted_per_pos)
    if dec and pre:
        rec["mixed"] = True
        rec["prefill_request_ids"] = [ids[r.req] for r in pre]
        rec["prefill_tokens"] = sum(r.scheduled for r in pre)
    elif not dec:
        rec["prefill_tokens"] = sum(r.scheduled for r in pre)
    preempted = [ids[p] for p in step.preempted if p in ids]
    if preempted:
        rec["preempted"] = preempted
    return rec


@dataclass(slots=True)
class RequestLog:
    """One request's timeline during a run (seconds on the trace clock)."""

    rid: int
    arrival: float
    prompt_len: int
    output_len: int  # asked for
    first_token: float | None = None
    finish: float | None = None
    scheduled: float | None = None
    generated: int = 0
    tokens_per_step: list[int] = field(default_factory=list)
    preemptions: int = 0

    def gained(self, n: int, t: float) -> None:
        if n <= 0:
            return
        if self.generated == 0:
            self.first_token = t
        self.generated += n
        self.tokens_per_step.append(n)

    def record(self, policy: str) -> dict:
        rec = {"type": "request", "policy": policy, "request_id": self.rid, "arrival": self.arrival,
               "first_token": self.first_token, "finish": self.finish, "prompt_len": self.prompt_len,
               "output_len": self.generated, "tokens_per_step": self.tokens_per_step,
               "scheduled": self.scheduled}
        if self.preemptions:
            rec["preemptions"] = self.preemptions
        return rec


def throughput_check(trace_tok_s: float, wall_tokens: int, wall_s: float,
                     tol: float = THROUGHPUT_TOLERANCE) -> dict:
    """Trace-derived output throughput against tokens counted from vLLM's outputs over wall-clock time."""
    wall = wall_tokens / wall_s if wall_s > 0 else 0.0
    rel = abs(trace_tok_s - wall) / wall if wall > 0 else math.inf
    return {"trace_output_throughput": trace_tok_s, "wall_output_throughput": wall, "wall_s": wall_s,
            "wall_output_tokens": wall_tokens, "rel_diff": rel, "tolerance": tol, "ok": bool(rel <= tol)}


# ---------------------------------------------------------------------------------------- resume
@dataclass(slots=True)
class PolicyProgress:
    """What an existing trace says about one policy's run."""

    has_header: bool = False
    finished: set[int] = field(default_factory=set)
    t_end: float = 0.0  # the latest time recorded (resumed segments continue the clock from here)
    fingerprint: dict | None = None


def scan_trace(path: str | os.PathLike) -> tuple[list[dict], dict[str, PolicyProgress]]:
    """Valid records of a trace (a truncated last line is dropped) and per-policy progress."""
    records = list(read_records(path, "--trace"))
    progress: dict[str, PolicyProgress] = {}
    for rec in records:
        pol = str(rec.get("policy", ""))
        p = progress.setdefault(pol, PolicyProgress())
        typ = rec.get("type")
        if typ == "header":
            p.has_header = True
            p.fingerprint = (rec.get("config") or {}).get("fingerprint")
        elif typ == "op":
            p.t_end = max(p.t_end, float(rec.get("t_end", 0.0)))
        elif typ == "request" and rec.get("finish") is not None:
            p.finished.add(int(rec["request_id"]))
            p.t_end = max(p.t_end, float(rec["finish"]))
    return records, progress


def check_fingerprint(progress: dict[str, PolicyProgress], fingerprint: dict, path: str) -> None:
    """A resumed trace must come from the same workload, models and engine knobs."""
    for pol, p in progress.items():
        if p.has_header and p.fingerprint is not None and p.fingerprint != _jsonable(fingerprint):
            diff = sorted(k for k in set(p.fingerprint) | set(fingerprint)
                          if p.fingerprint.get(k) != _jsonable(fingerprint).get(k))
            raise InputError("--resume", f"the trace's {pol} run used other settings ({', '.join(diff)} differ)",
                             path)


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def compact_for_resume(path: str | os.PathLike, records: list[dict],
                       progress: dict[str, PolicyProgress]) -> int:
    """Rewrite the trace (atomically) without the rows of requests that never finished.

    A run killed midway left op records naming requests that will run again from scratch; counting
    those rows too would inflate their step counts (ITL) and the acceptance statistics. Rows are
    dropped from ``request_ids``/``accepted``/``verify_lengths`` (``dropped_rows`` says how many); the
    ops' times stay. A truncated last line disappears. Returns the number of rows dropped.
    """
    dropped = 0
    out: list[dict] = []
    for rec in records:
        if rec.get("type") == "op" and rec.get("request_ids"):
            done = progress.get(str(rec.get("policy", "")), PolicyProgress()).finished
            ids = rec["request_ids"]
            keep = [i for i, r in enumerate(ids) if int(r) in done]
            if len(keep) != len(ids):
                rec = dict(rec)
                n = len(ids) - len(keep)
                dropped += n
                rec["dropped_rows"] = int(rec.get("dropped_rows", 0)) + n
                rec["request_ids"] = [ids[i] for i in keep]
                for key in ("accepted", "verify_lengths"):
                    if isinstance(rec.get(key), list) and len(rec[key]) == len(ids):
                        rec[key] = [rec[key][i] for i in keep]
                rec["size"] = len(rec["request_ids"])
            pre = rec.get("prefill_request_ids")
            if pre:
                rec["prefill_request_ids"] = [r for r in pre if int(r) in done]
        out.append(rec)
    p = Path(path)
    tmp = p.with_name(p.name + ".resume-tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in out:
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return dropped


def records_of(records: Iterable[dict], policy: str) -> list[dict]:
    return [r for r in records if str(r.get("policy", "")) == policy]


def header_record(policy: str, num_gpus: int, config: dict) -> dict:
    return {"type": "header", "schema": SCHEMA, "policy": policy, "num_gpus": int(num_gpus), "config": config}


def require_resumable(trace: str | None, resume: bool) -> None:
    require(not resume or trace not in (None, "-"), "--resume", "needs --trace PATH (the trace to continue)", trace)

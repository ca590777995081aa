"""Traces: what happened, op by op and request by request. Simulated and measured runs write the same.

In memory a :class:`Trace` is columnar (numpy arrays), so metrics over 100,000 requests stay cheap. On
disk it is JSON Lines, one record per line, appended and flushed as they happen (a killed run keeps
every record written; a truncated last line is skipped on reading):

- ``{"type": "header", "schema": "minedraft.trace/1", "policy", "num_gpus", "config"}``
- ``{"type": "op", "policy", "op", "resource", "batch_id", "request_ids", "k", "accepted", "t_start",
  "t_end"}`` (``accepted``: per request, verify ops only; ``k``: draft tokens per request, with
  ``verify_lengths`` when they differ)
- ``{"type": "request", "policy", "request_id", "arrival", "first_token", "finish", "prompt_len",
  "output_len", "tokens_per_step"}``

Readers also accept the published MineDraft benchmark traces (see :func:`from_minedraft`).
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minedraft.errors import MAX_INPUT_BYTES, InputError, require
from minedraft.ops import DECODE, OP_KINDS, PREFILL, RESOURCES, TARGET, VERIFY, Op
from minedraft.policies import POLICIES

SCHEMA = "minedraft.trace/1"
KIND_CODE = {k: i for i, k in enumerate(OP_KINDS)}
RES_CODE = {r: i for i, r in enumerate(RESOURCES)}
MAX_POS = 64


@dataclass
class Trace:
    """One policy's run. Request arrays are indexed by request id; op arrays by op order."""

    policy: str
    num_gpus: int
    arrival: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    steps: np.ndarray  # token-producing steps after the first token (ITL denominators)
    op_kind: np.ndarray
    op_resource: np.ndarray
    op_batch_id: np.ndarray
    op_size: np.ndarray
    op_k: np.ndarray
    op_t_start: np.ndarray
    op_t_end: np.ndarray
    op_accepted: np.ndarray  # accepted draft tokens summed over the op's requests (verify)
    op_drafted_rows: np.ndarray  # requests in the op that had drafts checked (verify)
    op_chunk_tokens: np.ndarray  # prompt tokens riding in the op's forward (vLLM V1 chunked prefill)
    pos_drafts: np.ndarray  # per draft position j: checks that reached position j
    pos_accepted: np.ndarray  # per draft position j: checks whose position j was accepted
    config: dict = field(default_factory=dict)
    op_reqs: list[np.ndarray] | None = None
    op_row_accepted: list[np.ndarray | None] | None = None
    op_row_lengths: list[np.ndarray | None] | None = None
    op_row_probe: list[np.ndarray | None] | None = None
    tokens_per_step: list[list[int]] | None = None

    @property
    def num_ops(self) -> int:
        return len(self.op_kind)

    def ops_of(self, *kinds: str) -> np.ndarray:
        return np.isin(self.op_kind, [KIND_CODE[k] for k in kinds])

    # ------------------------------------------------------------------ JSONL
    def records(self) -> Iterator[dict]:
        yield {"type": "header", "schema": SCHEMA, "policy": self.policy, "num_gpus": self.num_gpus,
               "config": self.config}
        for i in range(self.num_ops):
            rec = {"type": "op", "policy": self.policy, "op": OP_KINDS[self.op_kind[i]],
                   "resource": RESOURCES[self.op_resource[i]], "batch_id": int(self.op_batch_id[i]),
                   "k": int(self.op_k[i]), "t_start": float(self.op_t_start[i]), "t_end": float(self.op_t_end[i]),
                   "size": int(self.op_size[i])}
            if self.op_chunk_tokens[i]:
                rec["prefill_tokens"] = int(self.op_chunk_tokens[i])
            if self.op_reqs is not None:
                rec["request_ids"] = self.op_reqs[i].tolist()
                acc = self.op_row_accepted[i] if self.op_row_accepted else None
                if acc is not None:
                    rec["accepted"] = acc.tolist()
                lens = self.op_row_lengths[i] if self.op_row_lengths else None
                if lens is not None:
                    rec["verify_lengths"] = lens.tolist()
                probe = self.op_row_probe[i] if self.op_row_probe else None
                if probe is not None:
                    rec["probe"] = probe.tolist()
            elif OP_KINDS[self.op_kind[i]] == VERIFY:
                rec["accepted_total"] = int(self.op_accepted[i])
            yield rec
        for r in range(len(self.arrival)):
            rec = {"type": "request", "policy": self.policy, "request_id": r, "arrival": float(self.arrival[r]),
                   "first_token": _f(self.first_token[r]), "finish": _f(self.finish[r]),
                   "prompt_len": int(self.prompt_len[r]), "output_len": int(self.output_len[r])}
            if self.tokens_per_step is not None:
                rec["tokens_per_step"] = self.tokens_per_step[r]
            yield rec


def _f(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class TraceRecorder:
    """Collects a run's ops and request times (cheap appends), then builds a :class:`Trace`."""

    def __init__(self, n_requests: int, details: bool = False) -> None:
        self.cols: dict[str, list] = {k: [] for k in ("kind", "res", "bid", "size", "k", "t0", "t1", "acc", "rows",
                                                      "chunk")}
        self.first_token = np.full(n_requests, np.nan)
        self.finish = np.full(n_requests, np.nan)
        self.steps = np.zeros(n_requests, dtype=np.int64)
        self.pos_drafts = np.zeros(MAX_POS, dtype=np.int64)
        self.pos_accepted = np.zeros(MAX_POS, dtype=np.int64)
        self.details = details
        self.op_reqs: list[np.ndarray] = []
        self.row_acc: list[np.ndarray | None] = []
        self.row_len: list[np.ndarray | None] = []
        self.row_probe: list[np.ndarray | None] = []
        self.gains: list[tuple[np.ndarray, np.ndarray]] = []

    def op(self, op: Op, t0: float, t1: float, accepted: np.ndarray | None = None,
           finished: np.ndarray | None = None, gained: np.ndarray | None = None,
           totals: tuple[int, int] | None = None, first: np.ndarray | None = None) -> None:
        """Record one op. ``totals`` = (accepted, drafted rows) when only totals are known (no rows);
        ``first``: requests whose first token became visible at its end (default: a prefill's rows)."""
        c = self.cols
        c["kind"].append(KIND_CODE[op.kind])
        c["res"].append(RES_CODE[op.resource])
        c["bid"].append(op.batch_id)
        c["size"].append(len(op.reqs))
        c["k"].append(op.k)
        c["t0"].append(t0)
        c["t1"].append(t1)
        c["chunk"].append(op.chunk_tokens)
        reqs = op.reqs
        if first is not None:
            self.first_token[first] = t1
        elif op.kind == PREFILL:
            self.first_token[reqs] = t1
        if op.kind in (DECODE, VERIFY):
            self.steps[reqs] += 1
        acc_sum, rows = 0, 0
        if op.kind == VERIFY and accepted is not None:
            lengths = op.verify_lengths
            checked = lengths > 0
            if op.probe is not None:
                checked &= ~op.probe
            rows = int(checked.sum())
            if rows:
                a, ln = accepted[checked], lengths[checked]
                acc_sum = int(a.sum())
                m = int(ln.max())
                # reached[j] = checks with a position j; hit[j] = checks whose position j was accepted
                self.pos_drafts[:m] += np.bincount(ln, minlength=m + 1)[::-1].cumsum()[::-1][1:m + 1]
                self.pos_accepted[:m] += np.bincount(a, minlength=m + 1)[::-1].cumsum()[::-1][1:m + 1]
        if totals is not None:
            acc_sum, rows = totals
        c["acc"].append(acc_sum)
        c["rows"].append(rows)
        if finished is not None and len(finished):
            self.finish[finished] = t1
        if self.details:
            self.op_reqs.append(reqs)
            self.row_acc.append(accepted if op.kind == VERIFY else None)
            self.row_len.append(op.lengths if op.kind == VERIFY else None)
            self.row_probe.append(op.probe if op.kind == VERIFY else None)
            if gained is not None:
                self.gains.append((reqs, gained))

    def build(self, policy: str, num_gpus: int, arrival: np.ndarray, prompt_len: np.ndarray,
              output_len: np.ndarray, config: dict | None = None) -> Trace:
        c = self.cols
        tps = None
        if self.details:
            tps = [[] for _ in range(len(arrival))]
            for r in np.flatnonzero(~np.isnan(self.first_token)):
                tps[r].append(1)
            for reqs, g in self.gains:
                for r, x in zip(reqs.tolist(), g.tolist()):
                    tps[r].append(x)
        return Trace(
            policy=policy, num_gpus=num_gpus, arrival=np.asarray(arrival, float), first_token=self.first_token,
            finish=self.finish, prompt_len=np.asarray(prompt_len), output_len=np.asarray(output_len),
            steps=self.steps, op_kind=np.asarray(c["kind"], np.int8), op_resource=np.asarray(c["res"], np.int8),
            op_batch_id=np.asarray(c["bid"], np.int64), op_size=np.asarray(c["size"], np.int64),
            op_k=np.asarray(c["k"], np.int64), op_t_start=np.asarray(c["t0"], float),
            op_t_end=np.asarray(c["t1"], float), op_accepted=np.asarray(c["acc"], np.int64),
            op_drafted_rows=np.asarray(c["rows"], np.int64), op_chunk_tokens=np.asarray(c["chunk"], np.int64),
            pos_drafts=self.pos_drafts,
            pos_accepted=self.pos_accepted, config=config or {},
            op_reqs=self.op_reqs if self.details else None, op_row_accepted=self.row_acc if self.details else None,
            op_row_lengths=self.row_len if self.details else None,
            op_row_probe=self.row_probe if self.details else None, tokens_per_step=tps)


# ---------------------------------------------------------------------- writing and reading JSONL
class TraceWriter:
    """Appends records to a JSONL file, flushing each one (nothing written is lost on a crash)."""

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "a" if append else "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def write_all(self, records: Iterable[dict]) -> None:
        for rec in records:
            self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_config(header: dict) -> dict:
    """A run's header config with its facts as flat keys: ``policy``, ``target``, ``draft``, ``k``,
    ``max_num_seqs``, ``psd_capacity``. The benchmarks write them so; ``minedraft-exec`` writes one config for all
    its policies and keeps them in ``fingerprint`` and ``policy_config``, from where they are taken (AR: no
    drafter, k = 0)."""
    cfg = dict(header.get("config") or {})
    policy = header.get("policy") or cfg.get("policy")
    fp, pc = cfg.get("fingerprint") or {}, cfg.get("policy_config") or {}
    speculative = policy not in POLICIES or POLICIES[policy].speculative
    nested = {"policy": policy, "target": fp.get("target"), "draft": fp.get("draft") if speculative else None,
              "k": fp.get("k") if speculative else 0, "max_num_seqs": pc.get("max_num_seqs"),
              "psd_capacity": pc.get("psd_capacity")}
    for key, value in nested.items():
        if cfg.get(key) is None:
            cfg[key] = value
    return cfg


def read_records(path: str | os.PathLike, field_name: str = "trace") -> Iterator[dict]:
    """Records of a JSONL trace (ours or MineDraft's). A truncated last line (a crash) is skipped."""
    p = Path(path)
    require(p.is_file(), field_name, "must name an existing trace file (JSONL)", str(path))
    size = p.stat().st_size
    require(size <= MAX_INPUT_BYTES, field_name, f"file must be at most {MAX_INPUT_BYTES} bytes", f"{size} bytes")
    require(size > 0, field_name, "file is empty", str(path))
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(field_name, "must be a UTF-8 JSONL file", str(path)) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # the last line of a run that was killed mid-write
                return
            raise InputError(field_name, f"line {n} is not valid JSON", str(path)) from None
        require(isinstance(rec, dict), field_name, f"line {n} must be a JSON object", str(path))
        if "traces" in rec and "type" not in rec:
            yield from from_minedraft(rec)
        else:
            yield rec


def from_minedraft(line: dict) -> Iterator[dict]:
    """Convert one line of a published MineDraft benchmark trace into our records.

    Step records become ops: a prompt run is a ``prefill``; a decode step a ``verify`` over its
    ``batched_requests`` with ``accepted`` only as a total (``accepted_total``). Times are converted
    from microseconds to seconds, relative to the earliest request start.
    """
    items = line.get("traces")
    require(isinstance(items, list), "trace", "a MineDraft line must hold a 'traces' list")
    reqs = [t for t in items if isinstance(t, dict) and t.get("type") == "Request"]
    steps = [t for t in items if isinstance(t, dict) and t.get("type") == "Step"]
    starts = [t.get("start_us") for t in reqs + steps if isinstance(t.get("start_us"), (int, float))]
    require(len(starts) > 0, "trace", "MineDraft line has no timed records")
    t0 = min(starts)
    yield {"type": "header", "schema": "minedraft-published", "policy": "published", "num_gpus": None, "config": {}}
    for s in steps:
        start, end = s.get("start_us"), s.get("end_us")
        if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
            continue
        prompt = bool(s.get("is_prompt_run"))
        yield {"type": "op", "policy": "published", "op": PREFILL if prompt else VERIFY, "resource": TARGET,
               "batch_id": 0, "k": int(s.get("proposed_len") or 0), "t_start": (start - t0) / 1e6,
               "t_end": (end - t0) / 1e6, "size": len(s.get("batched_requests") or []),
               "accepted_total": int(s.get("accepted_num") or 0), "verify_len": int(s.get("verify_len") or 0),
               "drafted_rows": int(s.get("match_count", len(s.get("batched_requests") or []))),
               "generated": int(s.get("generated_num") or 0), "parallel": bool(s.get("is_parallelised")),
               "measured_draft_time": s.get("measured_draft_time"),
               "measured_target_time": s.get("measured_target_time")}
    for i, r in enumerate(reqs):
        start, end = r.get("start_us"), r.get("end_us")
        yield {"type": "request", "policy": "published", "request_id": i,
               "arrival": (start - t0) / 1e6 if isinstance(start, (int, float)) else None, "first_token": None,
               "finish": (end - t0) / 1e6 if isinstance(end, (int, float)) else None,
               "prompt_len": r.get("prompt_len"), "output_len": r.get("gen_len")}


def trace_from_records(records: Iterable[dict]) -> dict[str, Trace]:
    """Rebuild columnar traces (one per policy) from JSONL records, ours or converted MineDraft ones."""
    by_policy: dict[str, dict] = {}
    for rec in records:
        pol = str(rec.get("policy", ""))
        slot = by_policy.setdefault(pol, {"header": {}, "ops": [], "reqs": {}})
        typ = rec.get("type")
        if typ == "header":
            slot["header"] = rec
        elif typ == "op":
            slot["ops"].append(rec)
        elif typ == "request":
            slot["reqs"][int(rec.get("request_id", len(slot["reqs"])))] = rec
    out = {}
    for pol, slot in by_policy.items():
        ops, reqs = slot["ops"], slot["reqs"]
        # size by requests *and* op rows: a killed run's ops name requests that never finished
        op_ids = [max(o["request_ids"]) for o in ops if isinstance(o.get("request_ids"), list) and o["request_ids"]
                  and all(isinstance(x, int) for x in o["request_ids"])]
        n = max([max(reqs) + 1 if reqs else 0, *(i + 1 for i in op_ids)])
        arr = {k: np.full(n, np.nan) for k in ("arrival", "first_token", "finish")}
        lens = {k: np.zeros(n, dtype=np.int64) for k in ("prompt_len", "output_len")}
        for rid, r in reqs.items():
            for k in arr:
                v = r.get(k)
                arr[k][rid] = np.nan if v is None else float(v)
            for k in lens:
                lens[k][rid] = int(r.get(k) or 0)
        rec = TraceRecorder(n)
        for i, o in enumerate(ops):
            try:
                _replay_op(rec, o, n)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError("trace", f"op record {i} of policy {pol!r} is malformed ({exc.__class__.__name__})",
                                 {k: o.get(k) for k in ("op", "t_start", "t_end")}) from None
        header = slot["header"]
        t = rec.build(pol, int(header.get("num_gpus") or 1), arr["arrival"], lens["prompt_len"],
                      lens["output_len"], header.get("config") or {})
        t.first_token, t.finish = arr["first_token"], arr["finish"]
        out[pol] = t
    return out


def _replay_op(rec: TraceRecorder, o: dict, n: int) -> None:
    kind = o.get("op")
    if kind not in KIND_CODE:
        return
    ids = np.asarray(o.get("request_ids") or [], dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise ValueError("request id without a request record")
    k = int(o.get("k", 0))
    lengths = o.get("verify_lengths")
    probe = o.get("probe")
    op = Op(kind, o.get("resource") if o.get("resource") in RES_CODE else TARGET, ids, k=k,
            batch_id=int(o.get("batch_id", 0)),
            lengths=np.asarray(lengths, dtype=np.int64) if lengths is not None else None,
            probe=np.asarray(probe, dtype=bool) if probe is not None else None,
            chunk_tokens=int(o.get("prefill_tokens") or 0))
    acc = o.get("accepted")
    totals = None
    if acc is None or len(acc) != len(ids):
        acc = None
        rows = int(o.get("drafted_rows", o.get("size", len(ids)))) if kind == VERIFY and k > 0 else 0
        totals = (int(o.get("accepted_total", 0)), rows)
    rec.op(op, float(o["t_start"]), float(o["t_end"]),
           np.asarray(acc, dtype=np.int64) if acc is not None else None, totals=totals)
    rec.cols["size"][-1] = int(o.get("size", len(ids)))


def load_runs(paths: list[str], folder: str | None = None, flag: str = "--all") -> dict[str, list[dict]]:
    """Measured runs by name: trace files, plus every trace (``*.jsonl``, or inside ``traces_*.tgz``) of
    ``folder``. Other JSONL files in the folder (results, logs) are skipped. A file with several policies' runs
    (``minedraft-exec --policy ar,sd,psd --trace``) gives one run each, named ``STEM-POLICY``."""
    runs: dict[str, list[dict]] = {}
    if folder is not None:
        d = Path(folder)
        require(d.is_dir(), flag, "must name a folder of traces", folder)
        for tgz in sorted(d.glob("traces_*.tgz")):
            try:
                with tarfile.open(tgz) as tf:
                    for m in tf.getmembers():
                        if m.isfile() and m.name.endswith(".jsonl"):
                            text = tf.extractfile(m).read().decode()
                            _add_runs(runs, Path(m.name).stem, [json.loads(x) for x in io.StringIO(text) if x.strip()],
                                      flag)
            except (tarfile.TarError, OSError, json.JSONDecodeError, UnicodeDecodeError):
                raise InputError(flag, "holds an unreadable trace archive", str(tgz)) from None
        paths = paths + [str(p) for p in sorted(d.glob("*.jsonl")) if _is_trace(p)]
    for p in paths:
        _add_runs(runs, Path(p).stem, list(read_records(p, "run")), flag)
    if folder is not None and not paths:
        require(len(runs) > 0, flag, "must name a folder with traces (*.jsonl or traces_*.tgz)", folder)
    require(len(runs) > 0, "run", "give a trace file or --all DIR with traces")
    return runs


def _add_runs(runs: dict[str, list[dict]], name: str, records: list[dict], flag: str) -> None:
    """One run per policy with a header in ``records`` (records naming no policy belong to each)."""
    policies = list(dict.fromkeys(r.get("policy") for r in records if r.get("type") == "header"))
    split = {name: records} if len(policies) <= 1 else {
        f"{name}-{p}": [r for r in records if r.get("policy", p) == p] for p in policies}
    for key, recs in split.items():
        require(key not in runs, flag, "holds two traces of one run name (rename one)", key)
        runs[key] = recs


def _is_trace(path: Path) -> bool:
    """A trace starts with our header record (other JSONL files in a folder, e.g. results, are skipped)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return '"type": "header"' in fh.readline().replace('"type":"header"', '"type": "header"')

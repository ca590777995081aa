"""--trace-chrome: a run's ops as a Chrome / Perfetto trace, checked against the Trace Event Format's schema."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import invoke

from minedraft.cli.sim import main as sim_main

SCHEMA = json.loads((Path(__file__).parent / "data/chrome_trace.schema.json").read_text())
SIM = ["--gpu", "h200", "-tp", "1", "--target", "qwen3-8b", "-k", "3", "--max-num-seqs", "8", "--num-prompts", "24",
       "--input-len", "128", "--output-len", "32", "--quiet"]


def _check(doc: dict) -> dict:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SCHEMA)
    names, procs, slices = {}, {}, defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "process_name":
            procs[e["pid"]] = e["args"]["name"]
        elif e["ph"] == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"], e))
    for key, evs in slices.items():
        assert key in names  # every slice sits on a named track
        evs.sort(key=lambda x: x[0])
        for (_, end, _), (start, _, e) in zip(evs, evs[1:]):  # one op at a time per track: nothing overlaps
            assert start >= end - 0.01, (names[key], e)  # (times are rounded to 1 ns)
    return {(procs[k[0]], names[k]): [e for *_, e in v] for k, v in slices.items()}


def test_sim_writes_a_chrome_trace_with_a_track_per_resource_and_psd_half(tmp_path, capsys):
    out, jsonl = tmp_path / "run.trace.json", tmp_path / "run.jsonl"
    code, _, err = invoke(sim_main, ["--policy", "sd,psd", "--psd-split", "always", *SIM, "--trace-chrome", str(out),
                                     "--trace", str(jsonl)], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    tracks = _check(doc)
    procs = [e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert procs == ["sd", "psd"]
    assert {("sd", "target"), ("psd", "target"), ("psd", "target · half 0"), ("psd", "target · half 1"),
            ("psd", "drafter · half 0"), ("psd", "drafter · half 1")} <= set(tracks)
    assert ("sd", "drafter") not in tracks  # vLLM's SD drafts on the target's GPU: its draft ops sit on the target
    # the same ops as the JSONL trace, in microseconds
    ops = [json.loads(x) for x in jsonl.read_text().splitlines()]
    ops = [r for r in ops if r["type"] == "op"]
    slices = [e for evs in tracks.values() for e in evs]
    assert len(slices) == len(ops)
    total = sum(r["t_end"] - r["t_start"] for r in ops)
    assert sum(e["dur"] for e in slices) == pytest.approx(total * 1e6, rel=1e-6)
    # a PSD step: one half's verify beside the other half's draft
    verify = tracks[("psd", "target · half 0")][5]
    beside = [e for e in tracks[("psd", "drafter · half 1")] if abs(e["ts"] - verify["ts"]) < 1.0]
    assert beside and beside[0]["name"] == "draft" and verify["name"] == "verify"


def test_trace_chrome_bad_path_is_one_line(tmp_path, capsys):
    code, _, err = invoke(sim_main, ["--policy", "sd", *SIM, "--trace-chrome", "-"], capsys)
    assert code == 2 and err.startswith("error: --trace-chrome:") and len(err.strip().splitlines()) == 1
    code, _, err = invoke(sim_main, ["--policy", "sd", *SIM, "--trace-chrome", str(tmp_path / "no" / "dir" / "x.json")],
                          capsys)
    assert code == 2 and "--trace-chrome" in err and len(err.strip().splitlines()) == 1

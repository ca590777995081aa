"""Workloads, traces (JSONL, MineDraft's format) and metrics."""

import gzip
import json

import numpy as np
import pytest

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.errors import InputError
from minedraft.latency import Constant
from minedraft.metrics import RESULT_KEYS, compute_metrics
from minedraft.policies import PolicyConfig
from minedraft.simulator import simulate
from minedraft.trace import TraceWriter, read_records, trace_from_records
from minedraft.workload import LengthDist, Workload, default_dataset, load_sharegpt


def test_length_distributions():
    rng = np.random.default_rng(0)
    assert LengthDist.parse("256", "x").sample(rng, 3).tolist() == [256] * 3
    u = LengthDist.parse("uniform:10:20", "x").sample(rng, 10_000)
    assert u.min() == 10 and u.max() == 20
    ln = LengthDist.parse("lognormal:200:0.5", "x").sample(rng, 20_000)
    assert np.median(ln) == pytest.approx(200, rel=0.03)
    for bad in ("0", "-3", "2.5", "uniform:9:3", "lognormal:100:9", "poisson:3", "", "1e99"):
        with pytest.raises(InputError):
            LengthDist.parse(bad, "--input-len")


def test_arrivals():
    off = Workload(num_prompts=50, input_len=LengthDist("fixed", 8), output_len=LengthDist("fixed", 8)).generate()
    assert np.all(off.arrival == 0)
    pois = Workload(num_prompts=20_000, request_rate=5.0, input_len=LengthDist("fixed", 8),
                    output_len=LengthDist("fixed", 8)).generate()
    assert np.all(np.diff(pois.arrival) >= 0)
    assert 1 / np.mean(np.diff(pois.arrival)) == pytest.approx(5.0, rel=0.03)
    bursty = Workload(num_prompts=20_000, request_rate=5.0, burstiness=0.25, input_len=LengthDist("fixed", 8),
                      output_len=LengthDist("fixed", 8)).generate()
    gaps = np.diff(bursty.arrival)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(2.0, rel=0.08)  # gamma shape 1/4: cv = 2


def test_shipped_sample_is_sharegpt_shaped():
    pairs = load_sharegpt(str(default_dataset()), fixed_output=256)
    assert len(pairs) >= 900
    assert pairs[:, 0].min() >= 256 and pairs[:, 0].max() + 256 <= 2048
    with gzip.open(default_dataset()) as fh:
        data = json.load(fh)
    assert data[0]["conversations"][0]["from"] == "human"
    wl = Workload(num_prompts=1000, output_len=LengthDist("fixed", 256), dataset=str(default_dataset()))
    req = wl.generate()
    assert len(req) == 1000 and np.all(req.output_len == 256)


def test_dataset_errors(tmp_path):
    for name, content in {"a.json": "{}", "b.json": "[1, 2]", "c.json": '[{"conversations": []}]', "d.json": "[",
                          "e.json": ""}.items():
        p = tmp_path / name
        p.write_text(content)
        with pytest.raises(InputError):
            load_sharegpt(str(p))


def _run(policy="psd", details=True):
    req = Workload(num_prompts=60, request_rate=20.0, input_len=LengthDist("uniform", 8, 64),
                   output_len=LengthDist("uniform", 4, 40), seed=3).generate()
    return simulate(policy, req, PolicyConfig(max_num_seqs=4), StepCosts(Constant(0.01), Constant(0.002)),
                    AcceptanceCurve.geometric(0.7), seed=2, details=details, config={"note": "test"})


@pytest.mark.parametrize("policy", ["ar", "sd", "psd", "pearl"])
def test_metrics_survive_the_jsonl_round_trip(tmp_path, policy):
    tr = _run(policy)
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write_all(tr.records())
    back = trace_from_records(read_records(path))[policy]
    a, b = compute_metrics(tr), compute_metrics(back)
    for key in RESULT_KEYS:
        if isinstance(a[key], float):
            assert b[key] == pytest.approx(a[key], rel=1e-9), key
        else:
            assert b[key] == a[key], key
    assert b["acceptance_rates"] == pytest.approx(a["acceptance_rates"])


def test_truncated_last_line_is_skipped(tmp_path):
    tr = _run()
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write_all(tr.records())
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # a crash mid-write
    recs = list(read_records(path))
    assert recs and recs[-1]["type"] == "request"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "op"}\nnot json\n{"type": "op"}\n')
    with pytest.raises(InputError):
        list(read_records(bad))


def test_reads_published_minedraft_traces(tmp_path):
    line = {"metadata": {}, "traces": [
        {"tid": "Request:0", "type": "Request", "start_us": 1_000_000, "end_us": 3_000_000, "prompt_len": 300,
         "gen_len": 4},
        {"tid": "Request:1", "type": "Request", "start_us": 1_000_000, "end_us": 3_500_000, "prompt_len": 280,
         "gen_len": 4},
        {"tid": "Step:0", "type": "Step", "start_us": 1_000_000, "end_us": 1_500_000, "is_prompt_run": 2,
         "batched_requests": ["0", "1"], "accepted_num": 0, "generated_num": 2},
        {"tid": "Step:1", "type": "Step", "start_us": 1_500_000, "end_us": 2_500_000, "is_prompt_run": 0,
         "batched_requests": ["0", "1"], "is_parallelised": True, "proposed_len": 3, "verify_len": 6,
         "accepted_num": 4, "generated_num": 6},
    ]}
    path = tmp_path / "pub.jsonl"
    path.write_text(json.dumps(line) + "\n")
    tr = trace_from_records(read_records(path))["published"]
    m = compute_metrics(tr)
    assert m["completed"] == 2 and m["makespan_s"] == pytest.approx(2.5)
    assert m["mean_acceptance_length"] == pytest.approx(1 + 4 / 2)


def test_killed_trace_counts_only_finished_requests(tmp_path):
    tr = _run("sd")
    recs = list(tr.records())
    kept = [r for r in recs if not (r["type"] == "request" and r["request_id"] % 3 == 0)]
    back = trace_from_records(kept)["sd"]
    m = compute_metrics(back)
    assert m["completed"] == sum(1 for r in kept if r["type"] == "request")
    assert len(back.arrival) == len(tr.arrival)  # ops still name every request

"""Acceptance calibration: estimators recover known curves, every source parses, bad input is one line.

The model-pair tests need torch and transformers (the vLLM environment); they are skipped where those
are missing. The vLLM cross-check runs only with ``-m vllm``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke
from minedraft.calibration import CURVES_DIR, DATA, PAIR_DIR
from minedraft.calibration.acceptance import (
    CurveEstimate,
    Observations,
    PositionCounts,
    StepTotals,
    binomial_interval,
    counters_from_samples,
    estimate,
    fit_geometric_totals,
    observations_from_trace,
    observations_from_vllm_metrics,
    parse_prometheus,
)

from minedraft.acceptance import AcceptanceCurve
from minedraft.cli.calibrate import main
from minedraft.cli.common import run_cli
from minedraft.errors import InputError

EXAMPLES = DATA / "examples"
CURVE = AcceptanceCurve((0.9, 0.72, 0.55, 0.41, 0.3, 0.2))


def assert_one_line_error(code, err, flag):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), err
    assert "Traceback" not in err


def rows_from(curve: AcceptanceCurve, k: int, n: int, seed: int) -> np.ndarray:
    return curve.sample(np.random.default_rng(seed), k, size=n)


# ============================================================================ estimators

def run(args, capsys):
    return invoke(main, args, capsys)


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_binomial_intervals_cover_at_the_nominal_rate(method):
    rng = np.random.default_rng(1)
    p, n = 0.3, 60
    x = rng.binomial(n, p, size=4000)
    lo, hi = binomial_interval(x, np.full(x.shape, n), 0.95, method)
    coverage = np.mean((lo <= p) & (p <= hi))
    assert 0.93 <= coverage <= 0.985, coverage  # Clopper-Pearson is conservative, Wilson close to nominal
    assert np.all(lo <= x / n) and np.all(x / n <= hi)


def test_empirical_rates_recover_a_known_curve():
    a = rows_from(CURVE, 6, 20_000, seed=2)
    est = estimate(Observations.from_rows("synthetic", a, 6), "empirical", "wilson", 0.99)
    for true, lo, r, hi in zip(CURVE.rates, est.lower, est.rates, est.upper):
        assert lo <= true <= hi
        assert abs(r - true) < 0.015
    assert est.counts.num_drafts == 20_000
    assert est.mean_length() == pytest.approx(CURVE.expected_tokens(6), abs=0.03)


def test_empirical_with_variable_draft_lengths_stays_monotone():
    rng = np.random.default_rng(3)
    d = rng.integers(1, 7, size=30_000)
    a = CURVE.sample(rng, d)
    est = estimate(Observations.from_rows("synthetic", a, d), "empirical", "clopper-pearson", 0.99)
    assert list(est.counts.reached) == [int(np.sum(d >= i + 1)) for i in range(6)]
    assert all(x >= y for x, y in zip(est.rates, est.rates[1:]))
    for true, lo, hi in zip(CURVE.rates, est.lower, est.upper):
        assert lo <= true <= hi
    assert any("different subsets" in w for w in est.warnings)


def test_geometric_fit_from_exact_counts():
    g = AcceptanceCurve.geometric(0.73, 5)
    a = rows_from(g, 5, 8000, seed=4)
    est = estimate(Observations.from_rows("synthetic", a, 5), "geometric", "wilson", 0.95, positions=12)
    lo, hi = est.fit["alpha_ci"]
    assert lo <= 0.73 <= hi and abs(est.fit["alpha"] - 0.73) < 0.01
    assert est.curve.positions == 12  # a fitted model extends beyond the observed k
    assert est.rates[11] == pytest.approx(est.fit["alpha"] ** 12)


def test_geometric_fit_from_per_step_totals_matches_the_exact_fit():
    """Published traces carry only step totals; the convolution MLE must agree with the per-row MLE."""
    rng = np.random.default_rng(5)
    alpha, steps = 0.64, 600
    n = rng.integers(1, 33, size=steps)
    k = rng.choice([3, 5], size=steps)
    g = AcceptanceCurve.geometric(alpha, 5)
    per_row = [g.sample(rng, kk, size=nn) for nn, kk in zip(n, k)]
    totals = StepTotals(n, k, np.array([r.sum() for r in per_row]))
    best, lo, hi, _ = fit_geometric_totals(totals, 0.95)
    assert lo <= alpha <= hi and abs(best - alpha) < 0.02
    a = np.concatenate(per_row)
    d = np.repeat(k, n)
    exact = estimate(Observations.from_rows("rows", a, d), "geometric")
    assert abs(exact.fit["alpha"] - best) < 0.01
    # totals carry less information than rows: the interval is not narrower
    assert hi - lo >= (exact.fit["alpha_ci"][1] - exact.fit["alpha_ci"][0]) * 0.99


def test_geometric_totals_interval_covers():
    """Likelihood-ratio interval of the totals fit: coverage over repeated synthetic runs."""
    rng = np.random.default_rng(6)
    alpha, hits, reps = 0.55, 0, 120
    g = AcceptanceCurve.geometric(alpha, 4)
    for _ in range(reps):
        n = rng.integers(1, 9, size=40)
        tot = np.array([g.sample(rng, 4, size=m).sum() for m in n])
        _, lo, hi, _ = fit_geometric_totals(StepTotals(n, np.full(40, 4), tot), 0.9)
        hits += lo <= alpha <= hi
    assert 0.83 <= hits / reps <= 0.97, hits / reps


def test_geometric_totals_at_the_boundaries():
    n, k = np.array([4, 4]), np.array([3, 3])
    best, lo, hi, _ = fit_geometric_totals(StepTotals(n, k, np.array([12, 12])))
    assert best == 1.0 and hi == 1.0 and 0.5 < lo < 1.0
    best, lo, hi, _ = fit_geometric_totals(StepTotals(n, k, np.array([0, 0])))
    assert best == 0.0 and lo == 0.0 and 0.0 < hi < 0.5


def test_mean_length_schedule_and_interval():
    g = AcceptanceCurve.geometric(0.7, 5)
    a = rows_from(g, 5, 5000, seed=7)
    est = estimate(Observations.from_rows("synthetic", a, 5), "mean-length", level=0.95)
    lo, hi = est.fit["mean_length_ci"]
    assert lo <= g.expected_tokens(5) <= hi
    assert est.mean_length() == pytest.approx(1 + a.mean())
    assert est.rates == AcceptanceCurve.from_mean_length(1 + a.mean(), 5).rates


def test_estimate_file_round_trips_and_loads_as_a_curve(tmp_path):
    a = rows_from(CURVE, 6, 500, seed=8)
    est = estimate(Observations.from_rows("synthetic", a, 6))
    est.provenance = {"command": "test"}
    path = tmp_path / "c.json"
    est.save(path)
    back = CurveEstimate.load(path)
    assert back.rates == est.rates and back.lower == est.lower and back.upper == est.upper
    assert back.counts == est.counts and back.provenance == est.provenance and back.method == "empirical"
    assert AcceptanceCurve.parse(str(path)).rates == est.rates  # usable as --accept-curve


def test_position_counts_reject_inconsistent_data():
    with pytest.raises(InputError, match="non-increasing"):
        PositionCounts.uniform(10, [5, 7])
    with pytest.raises(InputError, match="exceed"):
        PositionCounts.uniform(10, [11, 3])
    with pytest.raises(InputError, match=">= 0"):
        PositionCounts.uniform(10, [5, -1])
    with pytest.raises(InputError, match="no drafts"):
        PositionCounts.uniform(0, [0])
    with pytest.raises(InputError, match="rows x k"):
        StepTotals(np.array([2]), np.array([3]), np.array([7]))


# ============================================================================ vLLM metrics
PROM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen3-8b"} 0.0
vllm:num_requests_running{engine="1",model_name="qwen3-8b"} 0.0
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="qwen3-8b"} 1000.0
vllm:spec_decode_num_drafts_total{engine="1",model_name="qwen3-8b"} 600.0
# HELP vllm:spec_decode_num_drafts_created Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_created gauge
vllm:spec_decode_num_drafts_created{engine="0",model_name="qwen3-8b"} 1.7636203504e+09
vllm:spec_decode_num_drafts_created{engine="1",model_name="qwen3-8b"} 1.7636203504e+09
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="qwen3-8b"} 3000.0
vllm:spec_decode_num_draft_tokens_total{engine="1",model_name="qwen3-8b"} 1800.0
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="qwen3-8b"} 1950.0
vllm:spec_decode_num_accepted_tokens_total{engine="1",model_name="qwen3-8b"} 1190.0
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="qwen3-8b",position="0"} 850.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="qwen3-8b",position="1"} 650.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="qwen3-8b",position="2"} 450.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="qwen3-8b",position="0"} 510.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="qwen3-8b",position="1"} 400.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="1",model_name="qwen3-8b",position="2"} 280.0
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_created Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_created gauge
vllm:spec_decode_num_accepted_tokens_per_pos_created{engine="0",model_name="qwen3-8b",position="0"} 1.76e+09
"""


def test_prometheus_text_engines_are_summed(tmp_path):
    path = tmp_path / "metrics.prom"
    path.write_text(PROM)
    obs = observations_from_vllm_metrics(str(path))
    assert obs.counts.num_drafts == 1600 and obs.counts.accepted == (1360, 1050, 730)
    assert obs.info["engines"] == ["0", "1"] and obs.info["model_name"] == "qwen3-8b"
    est = estimate(obs)
    assert est.rates == pytest.approx((1360 / 1600, 1050 / 1600, 730 / 1600))
    assert est.warnings == []


def test_prometheus_parser_handles_labels_without_total_suffix_and_timestamps():
    text = ('vllm:spec_decode_num_drafts{model_name="a \\"quoted\\" name",engine="0"} 10 1700000000000\n'
            'vllm:spec_decode_num_accepted_tokens_per_pos{model_name="a \\"quoted\\" name",engine="0",position="0"} 7\n')
    samples = parse_prometheus(text)
    assert samples[0][1]["model_name"] == 'a "quoted" name'
    c = counters_from_samples(samples)
    assert c.num_drafts == 10 and c.accepted_per_pos == [7]


def test_several_models_need_a_model_name(tmp_path):
    other = PROM.replace('engine="1",model_name="qwen3-8b"', 'engine="0",model_name="llama"')
    path = tmp_path / "m.prom"
    path.write_text(other)
    with pytest.raises(InputError, match="--model-name"):
        observations_from_vllm_metrics(str(path))
    obs = observations_from_vllm_metrics(str(path), model_name="llama")
    assert obs.counts.num_drafts == 600 and obs.counts.accepted == (510, 400, 280)


def test_short_drafts_are_flagged(tmp_path):
    path = tmp_path / "m.prom"
    path.write_text(PROM.replace("} 3000.0", "} 2900.0"))
    est = estimate(observations_from_vllm_metrics(str(path)))
    assert any("not drafted" in w for w in est.warnings)


def test_get_metrics_dump_shape():
    """vLLM 0.32's get_metrics(): Counter (value) and Vector (values) dataclasses, dumped with asdict."""
    dump = [
        {"type": "gauge", "name": "vllm:num_requests_running", "labels": {"engine": "0", "model_name": "m"},
         "value": 0.0},
        {"type": "counter", "name": "vllm:spec_decode_num_drafts", "labels": {"engine": "0", "model_name": "m"},
         "value": 200},
        {"type": "counter", "name": "vllm:spec_decode_num_draft_tokens", "labels": {"engine": "0", "model_name": "m"},
         "value": 800},
        {"type": "counter", "name": "vllm:spec_decode_num_accepted_tokens",
         "labels": {"engine": "0", "model_name": "m"}, "value": 300},
        {"type": "vector", "name": "vllm:spec_decode_num_accepted_tokens_per_pos",
         "labels": {"engine": "0", "model_name": "m"}, "values": [150, 90, 40, 20]},
        {"type": "histogram", "name": "vllm:e2e_request_latency_seconds", "labels": {"engine": "0", "model_name": "m"},
         "count": 3, "sum": 1.5, "buckets": {"1.0": 2, "+Inf": 3}},
    ]
    from minedraft.calibration.acceptance import samples_from_get_metrics

    c = counters_from_samples(samples_from_get_metrics(dump))
    assert (c.num_drafts, c.accepted_per_pos, c.num_draft_tokens, c.num_accepted_tokens) == (200, [150, 90, 40, 20],
                                                                                              800, 300)


def test_metrics_scraped_from_a_server(capsys):
    body = PROM.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code, out, err = run(["acceptance", "--vllm-metrics", f"http://127.0.0.1:{server.server_port}/metrics",
                              "--out", "-"], capsys)
    finally:
        server.shutdown()
    assert code == 0, err
    data = json.loads(out)
    assert data["counts"]["accepted_per_pos"] == [1360, 1050, 730]
    assert data["provenance"]["inputs"]["vllm_metrics"].startswith("http://127.0.0.1")


@pytest.mark.parametrize("stem", ["vllm_pair_greedy_k8", "vllm_pair_t1_probabilistic_k8", "vllm_pair_t1_greedy_k8"])
def test_real_vllm_dumps_parse(stem):
    """Dumps written by real vLLM runs of the trained pair (calibration/vllm_pair.py): the get_metrics() JSON
    and the Prometheus text of the same run hold the same counters."""
    prom = observations_from_vllm_metrics(str(EXAMPLES / f"{stem}.prom"))
    dump = observations_from_vllm_metrics(str(EXAMPLES / f"{stem}.json"))
    assert prom.counts == dump.counts and prom.info["format"] != dump.info["format"]
    c = dump.counts
    assert c.positions == 8 and c.num_drafts > 5000
    assert dump.info["num_accepted_tokens"] == sum(c.accepted)
    assert prom.warnings == []  # every draft had k tokens


def test_vllm_greedy_counts_equal_the_torch_loop():
    """Greedy, the same prompts, k and lengths: vLLM's draft_model speculative decoding (float32, CPU) and our
    torch loop accept exactly the same drafts at every position."""
    vllm = observations_from_vllm_metrics(str(EXAMPLES / "vllm_pair_greedy_k8.json")).counts
    assert vllm == shipped("trained_pair_greedy.json").counts


# ============================================================================ traces
def test_our_trace_recovers_the_simulated_curve(tmp_path, capsys):
    from minedraft.cli.sim import main as sim_main

    trace = tmp_path / "t.jsonl"
    rates = ",".join(f"{r:g}" for r in CURVE.rates)
    code = run_cli(sim_main, ["--policy", "sd", "--accept-curve", rates, "-k", "6", "--num-prompts", "400",
                              "--input-len", "16", "--output-len", "64", "--draft-ms", "1", "--verify-ms", "5",
                              "--trace", str(trace), "--quiet"])
    assert code == 0
    capsys.readouterr()
    code, out, err = run(["acceptance", "--trace", str(trace), "--confidence", "0.99", "--out", "-"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "empirical" and len(data["rates"]) == 6
    for true, lo, hi in zip(CURVE.rates, data["ci"]["lower"], data["ci"]["upper"]):
        assert lo <= true <= hi
    obs = observations_from_trace(str(trace))
    assert obs.counts.num_drafts == data["counts"]["drafts_per_pos"][0] > 2000


@pytest.mark.parametrize("policy,extra", [("psd", []), ("pearl", []), ("sd", ["--tetris-extra-proposals", "2"])])
def test_trace_counts_match_the_recorders_own(tmp_path, capsys, policy, extra):
    """Per-position counts rebuilt from the JSONL records equal the ones the simulator recorded while running
    (PEARL probes excluded; TETRIS gives variable draft lengths)."""
    from minedraft.cli.sim import main as sim_main
    from minedraft.trace import read_records, trace_from_records

    trace = tmp_path / "t.jsonl"
    code = run_cli(sim_main, ["--policy", policy, "--accept-curve", "0.8", "-k", "4", "--num-prompts", "200",
                              "--input-len", "16", "--output-len", "48", "--draft-ms", "1", "--verify-ms", "5",
                              "--max-num-seqs", "8", "--trace", str(trace), "--quiet", *extra])
    assert code == 0
    capsys.readouterr()
    obs = observations_from_trace(str(trace))
    t = trace_from_records(read_records(trace))[policy]
    m = obs.counts.positions
    assert list(obs.counts.reached) == t.pos_drafts[:m].tolist() and t.pos_drafts[m] == 0
    assert list(obs.counts.accepted) == t.pos_accepted[:m].tolist()
    est = estimate(obs, "geometric", level=0.999)
    lo, hi = est.fit["alpha_ci"]
    assert lo <= 0.8 <= hi


def published_trace(path: Path, alpha: float, seed: int, steps: int = 400) -> None:
    """A trace in the published MineDraft format: per-step totals only, like their Step records."""
    rng = np.random.default_rng(seed)
    g = AcceptanceCurve.geometric(alpha, 5)
    items, t = [], 1_000_000
    items.append({"tid": "Step:0", "type": "Step", "start_us": t, "end_us": t + 5000, "is_prompt_run": True,
                  "batched_requests": ["Request:0"], "accepted_num": 0, "generated_num": 1})
    for i in range(steps):
        n = int(rng.integers(1, 17))
        acc = int(g.sample(rng, 5, size=n).sum())
        rec = {"tid": f"Step:{i + 1}", "type": "Step", "start_us": t, "end_us": t + 20_000, "is_prompt_run": False,
               "batched_requests": [f"Request:{j}" for j in range(n)], "is_parallelised": bool(i % 2),
               "proposed_len": 5, "verify_len": 5 * n, "accepted_num": acc, "generated_num": acc + n,
               "match_count": n}
        items.append(rec)
        t += 20_000
    # a TETRIS step: variable lengths per request, only the sum known -> left out of the fit
    items.append({"tid": "Step:x", "type": "Step", "start_us": t, "end_us": t + 1, "is_prompt_run": False,
                  "batched_requests": ["Request:0", "Request:1"], "proposed_len": 6, "verify_len": 7,
                  "accepted_num": 3, "generated_num": 5, "match_count": 2})
    items.append({"tid": "Request:0", "type": "Request", "start_us": 1_000_000, "end_us": t, "prompt_len": 300,
                  "gen_len": 256})
    path.write_text(json.dumps({"metadata": {}, "traces": items}) + "\n")


@pytest.mark.parametrize("fit", ["geometric", "mean-length"])
def test_published_trace_fits_say_which_model(tmp_path, capsys, fit):
    path = tmp_path / "pub.jsonl"
    published_trace(path, 0.68, seed=9)
    code, out, err = run(["acceptance", "--trace", str(path), "--fit", fit, "--out", "-"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == fit and data["fit"]["model"] == fit
    assert data["provenance"]["run"]["steps_skipped_variable_length"] == 1
    assert any("TETRIS" in w for w in data["warnings"])
    if fit == "geometric":
        lo, hi = data["fit"]["alpha_ci"]
        assert lo <= 0.68 <= hi and "per-step totals" in data["fit"]["estimator"]
    else:
        lo, hi = data["fit"]["mean_length_ci"]
        assert lo <= AcceptanceCurve.geometric(0.68, 5).expected_tokens(5) <= hi


def test_published_trace_has_no_empirical_curve(tmp_path, capsys):
    path = tmp_path / "pub.jsonl"
    published_trace(path, 0.5, seed=10, steps=20)
    code, _, err = run(["acceptance", "--trace", str(path), "--fit", "empirical"], capsys)
    assert_one_line_error(code, err, "--fit")
    assert "per-step totals only" in err


# ============================================================================ bad input (CLI)
def _prom(tmp_path, text, name="m.prom"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_METRICS = {
    "negative": PROM.replace("} 850.0", "} -850.0"),
    "accepted > drafts": PROM.replace("} 1000.0", "} 100.0"),
    "increasing": PROM.replace("} 280.0", "} 500.0"),
    "missing drafts": "\n".join(ln for ln in PROM.splitlines() if "num_drafts" not in ln),
    "missing per-pos": "\n".join(ln for ln in PROM.splitlines() if "per_pos" not in ln),
    "missing position": "\n".join(ln for ln in PROM.splitlines() if 'position="1"' not in ln),
    "sum mismatch": PROM.replace("} 1950.0", "} 1951.0"),
    "zero drafts": PROM.replace("} 1000.0", "} 0.0").replace("} 600.0", "} 0.0").replace("} 850.0", "} 0.0")
    .replace("} 650.0", "} 0.0").replace("} 450.0", "} 0.0").replace("} 510.0", "} 0.0").replace("} 400.0", "} 0.0")
    .replace("} 280.0", "} 0.0"),
    "nan": PROM.replace("} 650.0", "} NaN"),
    "garbage": "this is not prometheus text {\n",
    "not vllm": "# TYPE foo counter\nfoo_total 3\n",
    "bad json": "[{\"name\": \"vllm:spec_decode_num_drafts\", ",
    "json not list": '{"name": 3}',
}


@pytest.mark.parametrize("case", sorted(BAD_METRICS))
def test_bad_metric_dumps_are_one_line(tmp_path, capsys, case):
    code, _, err = run(["acceptance", "--vllm-metrics", _prom(tmp_path, BAD_METRICS[case])], capsys)
    assert_one_line_error(code, err, "--vllm-metrics")


@pytest.mark.parametrize("args,flag", [
    ([], "source"),
    (["--vllm-metrics", "x.prom", "--trace", "t.jsonl"], "source"),
    (["--vllm-metrics", "/nonexistent/metrics.prom"], "--vllm-metrics"),
    (["--trace", "/nonexistent/t.jsonl"], "--trace"),
    (["--vllm-metrics", "EMPTY"], "--vllm-metrics"),
    (["--vllm-metrics", "PROM", "--ci", "bayes"], "--ci"),
    (["--vllm-metrics", "PROM", "--confidence", "1.5"], "--confidence"),
    (["--vllm-metrics", "PROM", "--confidence", "1"], "--confidence"),
    (["--vllm-metrics", "PROM", "--fit", "spline"], "--fit"),
    (["--vllm-metrics", "PROM", "--positions", "9"], "--positions"),
    (["--vllm-metrics", "PROM", "--out", "/nonexistent/dir/c.json"], "--out"),
    (["--pair", "--num-prompts", "0"], "--num-prompts"),
    (["--pair", "--temperature", "-1"], "--temperature"),
    (["--pair", "-k", "0"], "--num-speculative-tokens"),
    (["--target", "/tmp"], "--target"),
    (["--pair", "--prompts", "EMPTY"], "--prompts"),
    (["--vllm-metrics", "PROM", "--model-name", "nope"], "--vllm-metrics"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, args, flag):
    files = {"PROM": _prom(tmp_path, PROM), "EMPTY": _prom(tmp_path, "", "empty.txt")}
    args = [files.get(a, a) for a in args]
    code, _, err = run(["acceptance", *args], capsys)
    assert_one_line_error(code, err, flag)


def test_missing_subcommand_is_one_line(capsys):
    code, _, err = run([], capsys)
    assert_one_line_error(code, err, "command")


def test_inconsistent_traces_are_one_line(tmp_path, capsys):
    header = {"type": "header", "schema": "minedraft.trace/1", "policy": "sd", "num_gpus": 1, "config": {}}
    op = {"type": "op", "policy": "sd", "op": "verify", "resource": "target", "batch_id": 0, "k": 3,
          "request_ids": [0, 1], "accepted": [1, 4], "t_start": 0.0, "t_end": 1.0, "size": 2}
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (header, op)) + "\n")
    code, _, err = run(["acceptance", "--trace", str(path)], capsys)
    assert_one_line_error(code, err, "--trace")
    assert "accepted must be in [0, drafted]" in err
    path.write_text(json.dumps(header) + "\n")
    code, _, err = run(["acceptance", "--trace", str(path)], capsys)
    assert_one_line_error(code, err, "--trace")
    assert "no verify ops" in err
    two = [header, op | {"accepted": [1, 2]}, op | {"policy": "psd", "accepted": [0, 0]}]
    path.write_text("\n".join(json.dumps(r) for r in two) + "\n")
    code, _, err = run(["acceptance", "--trace", str(path)], capsys)
    assert_one_line_error(code, err, "--trace")
    assert "--policy" in err
    code, out, err = run(["acceptance", "--trace", str(path), "--policy", "psd", "--out", "-"], capsys)
    assert code == 0 and json.loads(out)["counts"]["accepted_per_pos"] == [0, 0, 0]


# ============================================================================ the trained pair
@pytest.fixture(scope="module")
def pair():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from minedraft.calibration import speculative

    target = speculative.load_model(PAIR_DIR / "target", "--target")
    draft = speculative.load_model(PAIR_DIR / "draft", "--draft")
    tok = speculative.load_tokenizer(PAIR_DIR / "target", "--target")
    return target, draft, tok


def shipped(name: str) -> CurveEstimate:
    return CurveEstimate.load(CURVES_DIR / name)


def test_shipped_pair_files_and_sizes():
    log = json.loads((PAIR_DIR / "train_log.json").read_text())
    total = 0
    for name in ("target", "draft"):
        d = PAIR_DIR / name
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
        for f in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            assert (d / f).is_file(), f
        total += (d / "model.safetensors").stat().st_size
        assert (d / "model.safetensors").stat().st_size == log["models"][name]["safetensors_bytes"]
    assert total < 12e6
    assert (PAIR_DIR / "target" / "tokenizer.json").read_bytes() == (PAIR_DIR / "draft" / "tokenizer.json").read_bytes()
    assert log["models"]["target"]["parameters"] > 3 * log["models"]["draft"]["parameters"]


@pytest.mark.parametrize("name", ["trained_pair_greedy.json", "trained_pair_t1.json",
                                  "trained_pair_t1_greedy_drafts.json"])
def test_shipped_curves_have_partial_acceptance_and_provenance(name):
    est = shipped(name)
    assert est.method == "empirical" and est.curve.positions == 8
    assert 0.1 < est.rates[0] < 0.95 and est.rates[-1] > 0.0  # neither 0 nor 1
    run_ = est.provenance["run"]
    if est.provenance["inputs"]["temperature"] > 0:  # the sum-of-min(p, q) diagnostic lies in the interval
        assert est.lower[0] <= run_["position1_expected"] <= est.upper[0]
    assert all(lo <= r <= hi for lo, r, hi in zip(est.lower, est.rates, est.upper))
    p = est.provenance
    assert p["command"].startswith("minedraft-calibrate acceptance --pair") and p["inputs"]["k"] == 8
    assert p["inputs"]["target_sha256"] == hashlib.sha256(
        (PAIR_DIR / "target" / "model.safetensors").read_bytes()).hexdigest()
    assert sum(pp["steps"] for pp in est.extra["per_prompt"]) == est.counts.num_drafts


def test_pair_loads_and_speculative_greedy_equals_target_greedy(pair):
    import torch
    from minedraft.calibration.speculative import speculative_generate

    from minedraft.cli.calibrate import load_prompts

    target, draft, tok = pair
    assert 3.5e6 < sum(p.numel() for p in target.parameters()) < 10e6
    assert 0.5e6 < sum(p.numel() for p in draft.parameters()) < 2e6
    for text in load_prompts(PAIR_DIR / "prompts.jsonl", "prompts")[:2]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out, acc, _ = speculative_generate(target, draft, ids, 4, 40, 0.0, None)
        ref = target.generate(torch.tensor([ids]), max_new_tokens=len(out), do_sample=False, eos_token_id=None,
                              pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        assert out == ref  # speculation must not change greedy output
        assert 0 < sum(acc) < 4 * len(acc)


_RUNS: dict = {}


def fresh_run(name: str, n: int = 4):
    """A shipped curve's settings on its first ``n`` prompts (cached per module run)."""
    from minedraft.calibration.speculative import measure_pair

    from minedraft.cli.calibrate import load_prompts

    if name not in _RUNS:
        inp = shipped(name).provenance["inputs"]
        prompts = load_prompts(PAIR_DIR / "prompts.jsonl", "prompts")[:n]
        _RUNS[name] = measure_pair(PAIR_DIR / "target", PAIR_DIR / "draft", prompts, inp["k"], inp["temperature"],
                                   inp["max_tokens"], seed=inp["seed"], draft_sampling=inp["draft_sampling"])
    return _RUNS[name]


def test_sampled_first_position_acceptance_is_sum_of_min_p_q(pair):
    """Rejection sampling accepts the first draft with probability sum_x min(p(x), q(x)) given the context;
    the sum over steps of (accepted - that probability) is a martingale, so its z-score is ~N(0, 1)."""
    run_ = fresh_run("trained_pair_t1.json")
    hit = np.concatenate([a >= 1 for a in run_.accepted]).astype(float)
    e = np.concatenate(run_.first_accept_prob)
    assert len(hit) > 100 and 0.05 < e.mean() < 0.95
    z = (hit.sum() - e.sum()) / np.sqrt(np.sum(e * (1 - e)))
    assert abs(z) < 4, z


@pytest.mark.parametrize("name", ["trained_pair_greedy.json", "trained_pair_t1.json",
                                  "trained_pair_t1_greedy_drafts.json"])
def test_pair_measurement_reproduces_the_shipped_curve(pair, name):
    """A fresh run on a few prompts: the shipped rates lie in its interval, and its per-prompt counts
    equal the shipped run's (deterministic on this software stack: one generator per prompt)."""
    est = shipped(name)
    run_ = fresh_run(name)
    fresh = estimate(Observations.from_rows("fresh", run_.all_accepted(), run_.k), level=0.99)
    for r, lo, hi in zip(est.rates, fresh.lower, fresh.upper):
        assert lo <= r <= hi
    assert run_.per_prompt() == est.extra["per_prompt"][: len(run_.accepted)]


@pytest.mark.vllm
def test_vllm_agrees_with_the_torch_loop_greedy(tmp_path):
    """vLLM's draft_model speculative decoding of the pair accepts what our loop accepts (greedy)."""
    pytest.importorskip("vllm")
    from minedraft.calibration import vllm_pair
    from minedraft.calibration.acceptance import (
        counters_from_samples,
        samples_from_get_metrics,
    )
    from minedraft.calibration.speculative import measure_pair

    from minedraft.cli.calibrate import load_prompts

    prompts = load_prompts(PAIR_DIR / "prompts.jsonl", "prompts")[:4]
    dump, _, _ = vllm_pair.run(PAIR_DIR / "target", PAIR_DIR / "draft", prompts, 4, 0.0, 48, 0, None, 1)
    c = counters_from_samples(samples_from_get_metrics(dump))
    ours = measure_pair(PAIR_DIR / "target", PAIR_DIR / "draft", prompts, 4, 0.0, 48)
    mine = PositionCounts.from_rows(ours.all_accepted(), 4)
    assert (c.num_drafts, c.accepted_per_pos) == (mine.num_drafts, list(mine.accepted))

"""benchmarks/split_sweep.py --quick on one pair and placement: the output's structure, and its numbers against
direct ``minedraft-sim`` runs of the same points (a separate process each)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIR, PLACEMENT = ("qwen3-8b", "qwen3-0.6b"), "own"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("split_sweep", ROOT / "benchmarks/split_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path_factory.mktemp("sweep") / "rows.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = mod.main(["--quick", "--pairs", ":".join(PAIR), "--placements", PLACEMENT, "--json", str(path)])
    return mod, code, buf.getvalue(), json.loads(path.read_text())


def direct(args: list[str]) -> list[dict]:
    """A minedraft-sim run in its own process; its results."""
    out = subprocess.run([sys.executable, "-m", "minedraft.cli.sim", *args, "--json", "-", "--quiet"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)["results"]


def test_output_structure(sweep):
    mod, code, stdout, data = sweep
    assert code == 0
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert not any(line.startswith('{"kind"') for line in lines[:-1])  # one JSON line, the last
    assert summary["kind"] == "summary"
    assert summary["goal"]["e2e_max_ratio"] == mod.E2E_MAX and summary["goal"]["throughput_min_ratio"] == mod.TPUT_MIN
    assert summary["fractions"] == list(mod.QUICK_FRACTIONS) and summary["num_prompts"] == mod.QUICK_PROMPTS
    assert summary["plugin_costs"] == "h200"
    (g,) = summary["groups"]
    assert (g["target"], g["draft"], g["placement"], g["k"]) == (*PAIR, PLACEMENT, 3)
    assert isinstance(summary["goal_met"], bool) and summary["goal_met"] == g["goal_met"] == (not g["misses"])
    assert summary == data["summary"]
    (rows_group,) = data["groups"]
    rows = rows_group["rows"]
    assert [r["fraction"] for r in rows] == list(mod.QUICK_FRACTIONS)
    # the worst ratios are the extremes over the rows, the misses exactly the rows outside the goal
    assert g["worst_mean_e2e_ratio"] == pytest.approx(max(r["ratios"]["mean_e2e"] for r in rows), abs=1e-4)
    assert g["worst_p99_e2e_ratio"] == pytest.approx(max(r["ratios"]["p99_e2e"] for r in rows), abs=1e-4)
    assert g["worst_throughput_ratio"] == pytest.approx(min(r["ratios"]["throughput"] for r in rows), abs=1e-4)
    missed = [r["fraction"] for r in rows
              if r["ratios"]["mean_e2e"] > mod.E2E_MAX or r["ratios"]["p99_e2e"] > mod.E2E_MAX
              or r["ratios"]["throughput"] < mod.TPUT_MIN]
    assert [m["fraction"] for m in g["misses"]] == missed
    # the table: its title and one line per rate, marked where the goal is missed
    assert f"{PAIR[0]} + {PAIR[1]}, PSD drafter {PLACEMENT}" in stdout
    table = "\n".join(line for line in lines if not line.startswith("goal:"))  # that line explains the mark
    assert table.count("✗") == sum(not v for r in rows for v in r["ratios"]["ok"].values())
    for r in rows:
        assert f"{r['fraction']:.0%}" in stdout and f"{r['request_rate']:.2f}" in stdout
        assert r["auto"]["split_fraction"] is not None and 0.0 <= r["auto"]["split_fraction"] <= 1.0
        assert r["sd"]["split_fraction"] is None


def test_numbers_match_minedraft_sim(sweep):
    mod, _, _, data = sweep
    (g,) = data["groups"]
    base = ["--gpu", "h200", "-tp", "1", "--target", PAIR[0], "--draft", PAIR[1], "-k", "3", "--max-num-seqs", "32",
            "--plugin-costs", "h200", "--psd-drafter", PLACEMENT, "--num-prompts", str(mod.QUICK_PROMPTS),
            "--input-len", "1024", "--output-len", "128", "--seed", "0"]
    (cap,) = direct([*base, "--policy", "sd", "--request-rate", "inf"])
    assert g["capacity_req_s"] == pytest.approx(cap["request_throughput"], rel=1e-12)
    row = g["rows"][1]
    assert row["request_rate"] == pytest.approx(row["fraction"] * cap["request_throughput"], rel=1e-12)
    rate = repr(row["request_rate"])
    sd, auto = direct([*base, "--policy", "sd,psd", "--psd-split", "auto", "--request-rate", rate])
    (always,) = direct([*base, "--policy", "psd", "--psd-split", "always", "--request-rate", rate])
    for name, res in (("sd", sd), ("auto", auto), ("always", always)):
        for key in ("output_throughput", "mean_e2el_ms", "p99_e2el_ms", "completed", "split_fraction"):
            want = res[key]
            assert row[name][key] == (None if want is None else pytest.approx(want, rel=1e-9)), (name, key)
    best_mean = min(sd["mean_e2el_ms"], always["mean_e2el_ms"])
    best_tput = max(sd["output_throughput"], always["output_throughput"])
    assert row["ratios"]["mean_e2e"] == pytest.approx(auto["mean_e2el_ms"] / best_mean, rel=1e-9)
    assert row["ratios"]["throughput"] == pytest.approx(auto["output_throughput"] / best_tput, rel=1e-9)

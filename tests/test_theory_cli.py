"""minedraft-theory end to end, and bad input: one line, exit status 2, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minedraft.theory.constant import E, M, X, Y, ks, o, symbolic_forms, tau
from minedraft.theory.optimal_k import optimal_k
from minedraft.theory.serving import Setup, offline

from minedraft.acceptance import AcceptanceCurve
from minedraft.cli.theory import build_parser, main
from minedraft.costs import StepCosts
from minedraft.latency import Constant

REQUIRED = ("expected_tokens_per_step", "sd_speedup_over_ar", "psd_throughput_ratio_over_sd",
            "psd_makespan_reduction_vs_sd", "optimal_k_sd", "optimal_k_psd", "basis")


def run(args, capsys):
    return invoke(main, args, capsys)


def test_constant_mode_json_holds_the_closed_forms(capsys):
    code, out, err = run(["--draft-ms", "2", "--verify-ms", "10", "-k", "5", "--accept-curve", "0.8",
                          "--output-len", "129", "--num-prompts", "3200", "--json", "-"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert all(key in res for key in REQUIRED)
    assert res["basis"] == "same_max_num_seqs" and res["k"] == 5 and res["k_given"]
    curve = AcceptanceCurve.geometric(0.8)
    e = curve.expected_tokens(5)
    assert res["expected_tokens_per_step"] == e
    f = symbolic_forms()
    subs = {X: 0.002, Y: 0.010, o: 0, tau: 0, M: 16, E: e, ks: 5}
    sd, psd, ar = (float(f[p]["throughput"].subs(subs)) for p in ("sd", "psd", "ar"))
    assert res["sd_speedup_over_ar"] == pytest.approx(sd / ar, rel=1e-12)
    assert res["psd_throughput_ratio_over_sd"] == pytest.approx(psd / sd, rel=1e-12)
    setup = Setup(curve, StepCosts(Constant(0.010), Constant(0.002)), 16)
    red = 1 - offline("psd", setup, 5, 3200, 129).makespan_s / offline("sd", setup, 5, 3200, 129).makespan_s
    assert res["psd_makespan_reduction_vs_sd"] == pytest.approx(red, rel=1e-12)
    assert res["psd_makespan_reduction_vs_sd"] == pytest.approx(0.5)  # k X = Y: the best case, 50%
    assert res["optimal_k_sd"] == optimal_k("sd", setup) and res["optimal_k_psd"] == optimal_k("psd", setup)
    assert res["claim_37"]["reading_a"]["holds"] and res["claim_37"]["reading_a"]["rho"] == pytest.approx(1.0)
    assert set(res["comparisons"]) == {"same_max_num_seqs", "same_concurrency", "same_gpus"}


def test_k_omitted_reports_each_policy_at_its_optimum(capsys):
    code, out, err = run(["--draft-ms", "1", "--verify-ms", "10", "--accept-curve", "0.85", "--json", "-"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert not res["k_given"]
    setup = Setup(AcceptanceCurve.geometric(0.85), StepCosts(Constant(0.010), Constant(0.001)), 16)
    assert res["k_by_policy"]["sd"] == optimal_k("sd", setup, 10) == res["optimal_k_sd"] == res["k"]
    assert res["k_by_policy"]["psd"] == optimal_k("psd", setup, 10) == res["optimal_k_psd"]
    assert res["policies"]["psd"]["k"] == res["optimal_k_psd"]
    assert len(res["k_sweep"]) == 10 and res["k_schedule"]["sd"] == [[1, 16, res["optimal_k_sd"]]]


def test_roofline_affine_bases_and_table(tmp_path, capsys):
    path = tmp_path / "t.json"
    code, out, err = run(["--json", str(path), "--request-rate", "4", "--basis", "same-slo", "--slo-tpot-ms", "8"],
                         capsys)
    assert code == 0, err
    res = json.loads(path.read_text())
    assert res["basis"] == "same_slo" and "same_slo" in res["comparisons"]
    assert res["config"]["timing"]["latency_model"].startswith("roofline")
    assert res["under_load"]["mean_e2e_ms"]["sd"] > 0
    assert "minedraft-theory" in out and "reading A" in out and "Under Poisson load" in out
    code, out, err = run(["--verify-ms", "5", "--draft-ms", "0.5", "--verify-us-per-token", "20",
                          "--draft-us-per-token", "2", "--basis", "same-concurrency", "--json", "-"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["config"]["timing"]["latency_model"] == "affine" and res["basis"] == "same_concurrency"
    assert res["policies"]["psd"]["in_flight"] == 16


def test_rates_list_shorter_than_max_k(capsys):
    code, out, err = run(["--accept-curve", "0.9,0.7,0.5", "--draft-ms", "1", "--verify-ms", "8", "--json", "-"],
                         capsys)
    assert code == 0, err
    assert json.loads(out)["optimal_k_sd"] <= 3


def test_console_script_is_registered():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    data = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["minedraft-theory"] == "minedraft.cli.theory:cli"


# --------------------------------------------------------------------------- bad input
NUMBER_FLAGS = {
    "--max-num-seqs": ["0", "-1", "1.5", "x", "nan", "1e12"],
    "--num-speculative-tokens": ["0", "65", "-2", "2.5", "k"],
    "--max-k": ["0", "65", "x", "1.5"],
    "--num-prompts": ["0", "-5", "1e9", "ten"],
    "--request-rate": ["0", "-1", "nan", "fast"],
    "--tensor-parallel-size": ["0", "3", "-4", "x"],
    "--draft-ms": ["-1", "nan", "inf", "x"],
    "--verify-ms": ["0", "-1", "nan", "x"],
    "--step-overhead-ms": ["-1", "nan", "x"],
    "--transfer-ms": ["-0.5", "inf"],
    "--slo-tpot-ms": ["0", "-3", "x", "nan"],
    "--verify-us-per-token": ["-1", "x", "nan"],
    "--draft-us-per-token": ["-2", "y", "inf"],
    "--tetris-extra-proposals": ["-1", "17", "x", "2"],
    "--accept-concentration": ["0", "-1", "x", "nan"],
}
TEXT_FLAGS = {
    "--accept-curve": ["1.5", "-0.1", "0.5,0.9", "0.9,x", "", "nan"],
    "--psd-capacity": ["triple", ""],
    "--sd-drafter": ["cpu"],
    "--target": ["gpt-5", ""],
    "--draft": ["nope"],
    "--gpu": ["tpu-v5", ""],
    "--basis": ["same", "same_gpus", "", "same-slo"],
    "--input-len": ["0", "uniform:5:1", "lognormal:1:99", "x", "uniform:1:999999"],
    "--output-len": ["-3", "uniform:a:b", "dataset", "0"],
    "--num-speculative-tokens-per-batch-size": ["[[1,4,3]]", "1-4:3"],
}
FILE_FLAGS = ["--accept-curve", "--latency-profile", "--draft-latency-profile", "--json"]
OPTIONS = [o for a in build_parser()._actions for o in a.option_strings]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    files = []
    for name, content in [("empty.json", b""), ("trunc.json", b'{"rates": [0.9, 0.'), ("list.json", b"[1, 2]"),
                          ("bin.json", b"\x00\xff\x13\x37"), ("obj.json", b'{"a": 1}')]:
        (tmp / name).write_bytes(content)
        files.append(str(tmp / name))
    return files + [str(tmp), "/no/such/file.json", "/no/such/dir/out.json"]


@st.composite
def bad_invocation(draw, files):
    kind = draw(st.sampled_from(["number", "text", "file", "junk"]))
    if kind == "number":
        flag = draw(st.sampled_from(sorted(NUMBER_FLAGS)))
        args = [flag, draw(st.sampled_from(NUMBER_FLAGS[flag]))]
        if flag in ("--draft-ms", "--verify-us-per-token", "--draft-us-per-token"):
            args += ["--verify-ms", "10", "--draft-ms", "1"] if flag != "--draft-ms" else ["--verify-ms", "10"]
    elif kind == "text":
        flag = draw(st.sampled_from(sorted(TEXT_FLAGS)))
        args = [flag, draw(st.sampled_from(TEXT_FLAGS[flag]))]
    elif kind == "file":
        flag = draw(st.sampled_from(FILE_FLAGS))
        choices = files if flag != "--json" else [files[-3], files[-1]]  # a directory, a missing folder
        args = [flag, draw(st.sampled_from(choices))]
    else:
        junk = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
        arg = draw(st.sampled_from(["--" + junk, "-" + junk, junk]))
        # argparse takes unambiguous abbreviations ("--he" is --help) and "-h..." as help: those are not bad input
        assume(not arg.startswith("-h") and not (arg.startswith("--") and any(o.startswith(arg) for o in OPTIONS)))
        args = [arg]
    extras = draw(st.lists(st.sampled_from([["--quiet"], ["--max-num-seqs", "8"], ["-k", "3"]]), max_size=2))
    for e in extras:
        # a companion must not repeat the bad flag in any spelling ("-k0", "--max-num-seqs=0"): the last wins
        clash = any(x.startswith(e[0]) for x in args) or (e[0] == "-k" and any(
            x.startswith("--num-speculative-tokens") for x in args))
        if not clash:
            args = e + args if draw(st.booleans()) else args + e
    return args


def test_fuzz_bad_invocations(bad_files, capsys):
    seen = []

    @settings(max_examples=400, database=None, deadline=None)
    @given(bad_invocation(bad_files))
    def check(args):
        code, out, err = run(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2, (args, code, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert "Traceback" not in err + out
        seen.append(args)

    check()
    assert len(seen) >= 300


@pytest.mark.parametrize("args,line", [
    (["--accept-curve", "0.5,0.9"], "error: --accept-curve: rates must be non-increasing in [0, 1]; got 0.5,0.9"),
    (["--basis", "fair"], None), (["--max-k", "0"], None), (["--nope"], None)])
def test_bad_input_in_a_real_process(args, line):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "minedraft.cli.theory", *args], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
    if line:
        assert p.stderr.strip() == line

"""minedraft-sim end to end, and bad input: one line, exit status 2, never a traceback."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import invoke
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minedraft.theory import offline_makespan

from minedraft.acceptance import AcceptanceCurve
from minedraft.cli.sim import main
from minedraft.costs import StepCosts
from minedraft.latency import Constant
from minedraft.metrics import RESULT_KEYS


def run(args, capsys):
    return invoke(main, args, capsys)


def test_default_job_runs_all_policies(tmp_path, capsys):
    path = tmp_path / "r.json"
    code, out, err = run(["--json", str(path)], capsys)
    assert code == 0, err
    data = json.loads(path.read_text())
    assert [r["policy"] for r in data["results"]] == ["ar", "sd", "psd", "pearl"]
    for r in data["results"]:
        assert list(r)[: len(RESULT_KEYS)] == list(RESULT_KEYS)
        assert r["completed"] == 1000
    cfg = data["config"]
    assert cfg["policy_config"]["max_num_seqs"] == 16 and cfg["policy_config"]["num_speculative_tokens"] == 5
    assert cfg["timing"]["target"] == "qwen3-32b" and cfg["timing"]["tensor_parallel_size"] == 4
    assert "Basis: same max_num_seqs=16" in out and "psd" in out


def test_constant_mode_matches_the_closed_form(capsys):
    code, out, err = run(["--policy", "sd,psd", "--draft-ms", "2", "--verify-ms", "10", "--input-len", "32",
                          "--output-len", "129", "--num-prompts", "2000", "-k", "5", "--accept-curve", "0.8",
                          "--json", "-"], capsys)
    assert code == 0, err
    res = {r["policy"]: r for r in json.loads(out)["results"]}
    costs = StepCosts(Constant(0.010), Constant(0.002))
    for p in ("sd", "psd"):
        want = offline_makespan(p, AcceptanceCurve.geometric(0.8), 5, 16, costs, 2000, 129)
        assert res[p]["makespan_s"] == pytest.approx(want, rel=0.02)


def test_trace_file(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    code, _, err = run(["--policy", "psd", "--num-prompts", "30", "--input-len", "20", "--output-len", "10",
                        "--trace", str(path), "--quiet"], capsys)
    assert code == 0, err
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert recs[0]["type"] == "header" and recs[0]["config"]["policies"] == ["psd"]
    assert sum(r["type"] == "request" for r in recs) == 30
    assert all("request_ids" in r for r in recs if r["type"] == "op")


# --------------------------------------------------------------------------- bad input
def _bad_file(tmp, name, content):
    p = tmp / name
    if content == "HUGE":
        with open(p, "wb") as fh:
            fh.truncate(600 * 1024 * 1024)  # sparse: costs no disk
    else:
        p.write_bytes(content)
    return str(p)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    return [_bad_file(tmp, n, c) for n, c in [
        ("empty.json", b""), ("trunc.json", b'{"rates": [0.9, 0.'), ("list.json", b"[1, 2, 3]"),
        ("bin.json", b"\x00\xff\x13\x37"), ("deep.json", b"[" * 100_000), ("huge.json", "HUGE"),
        ("obj.json", b'{"a": 1}'), ("rates.json", b'{"rates": [0.1, 0.5]}'), ("nan.json", b'{"rates": [NaN]}'),
    ]] + [str(tmp), "/no/such/file.json"]


NUMBER_FLAGS = {  # flag -> values that must be refused
    "--max-num-seqs": ["0", "-1", "1.5", "x", "nan", "1e12", "inf"],
    "--num-speculative-tokens": ["0", "65", "-2", "2.5", "k"],
    "--num-prompts": ["0", "-5", "1e9", "ten"],
    "--request-rate": ["0", "-1", "nan", "fast"],
    "--burstiness": ["0", "-1", "inf", "nan"],
    "--seed": ["-1", "1.5", "seed"],
    "--tensor-parallel-size": ["0", "3", "-4", "x"],
    "--draft-ms": ["-1", "nan", "inf", "x"],
    "--verify-ms": ["0", "-1", "nan", "x"],
    "--step-overhead-ms": ["-1", "nan", "x"],
    "--transfer-ms": ["-0.5", "inf"],
    "--tetris-extra-proposals": ["-1", "17", "x"],
    "--max-num-batched-tokens": ["0", "-1", "x"],
    "--kv-cache-tokens": ["0", "10", "x"],
    "--accept-concentration": ["0", "-1", "x", "nan"],
}
TEXT_FLAGS = {
    "--policy": ["", "foo", "ar,ar", "sd,,x", ","],
    "--accept-curve": ["1.5", "-0.1", "0.5,0.9", "0.9,x", "", "nan", "0.9,0.8"],
    "--psd-capacity": ["triple", ""],
    "--sd-drafter": ["cpu"],
    "--target": ["gpt-5", ""],
    "--draft": ["nope"],
    "--gpu": ["tpu-v5", ""],
    "--input-len": ["0", "uniform:5:1", "lognormal:1:99", "x"],
    "--output-len": ["-3", "uniform:a:b"],
    "--num-speculative-tokens-per-batch-size": ["[[2,4,3]]", "1-4", "[[1,4,0]]", "[", "1-4:3,3-8:2"],
}
FILE_FLAGS = ["--accept-curve", "--dataset", "--latency-profile", "--draft-latency-profile", "--arrival-times"]


@st.composite
def bad_invocation(draw, files):
    kind = draw(st.sampled_from(["number", "text", "file", "junk"]))
    if kind == "number":
        flag = draw(st.sampled_from(sorted(NUMBER_FLAGS)))
        args = [flag, draw(st.sampled_from(NUMBER_FLAGS[flag]))]
        if flag == "--draft-ms":
            args += ["--verify-ms", "10"]
    elif kind == "text":
        flag = draw(st.sampled_from(sorted(TEXT_FLAGS)))
        args = [flag, draw(st.sampled_from(TEXT_FLAGS[flag]))]
        if flag == "--accept-curve" and args[1] == "0.9,0.8":
            args += ["-k", "5"]
    elif kind == "file":
        args = [draw(st.sampled_from(FILE_FLAGS)), draw(st.sampled_from(files))]
    else:
        junk = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
        arg = draw(st.sampled_from(["--" + junk, "-" + junk, junk]))
        # a short option glued to a valid value ("-k5", "-tp1") is a valid invocation, not junk
        assume(not re.fullmatch(r"-(k|tp)\s*\+?0*[1-9]\d*(\.0*)?", arg.strip()) and not arg.startswith("-h"))
        args = [arg]
    # valid companions, in any order, make sure validation does not depend on position
    extras = draw(st.lists(st.sampled_from([["--quiet"], ["--num-prompts", "5"], ["--policy", "sd,psd"]]),
                           max_size=2))
    for e in extras:
        if not any(x.startswith(e[0]) for x in args):  # never repeat the bad flag ("--num-prompts=0"): last wins
            args = e + args if draw(st.booleans()) else args + e
    return args


def test_fuzz_bad_invocations(bad_files, capsys):
    seen = []

    @settings(max_examples=1200, database=None)
    @given(bad_invocation(bad_files))
    def check(args):
        code, out, err = run(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2, (args, code, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert "Traceback" not in err + out
        seen.append(args)

    check()
    assert len(seen) >= 1000


@pytest.mark.parametrize("args", [["--accept-curve", "0.5,0.9"], ["--max-num-seqs", "0"], ["--nope"],
                                  ["--latency-profile", "/no/such.json"]])
def test_bad_input_in_a_real_process(args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "minedraft.cli.sim", *args], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
    if args[0] == "--accept-curve":
        assert p.stderr.strip() == "error: --accept-curve: rates must be non-increasing in [0, 1]; got 0.5,0.9"


def _parsers(p):
    yield p
    for action in p._actions:
        if isinstance(action, __import__("argparse")._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("name", ["sim", "theory", "exec", "calibrate", "validate", "plan", "dash"])
def test_help_shows_each_default_once(name):
    """--help of every CLI (and subcommand): no flag names its default twice ("(default 16) (default: 16)"), and
    no flag shows a default of None."""
    import importlib

    parser = importlib.import_module(f"minedraft.cli.{name}").build_parser()
    for p in _parsers(parser):
        fmt = p._get_formatter()
        for action in p._actions:
            if not action.option_strings or action.help in (None, __import__("argparse").SUPPRESS):
                continue
            text = fmt._expand_help(action)
            assert text.lower().count("default") <= 1, (p.prog, action.option_strings, text)
            assert "default: None" not in text, (p.prog, action.option_strings, text)
        assert "--version" in p.format_help()

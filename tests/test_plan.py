"""minedraft-plan: the search, its numbers against minedraft-sim, the report, bad input, and resuming after kill -9."""

import html
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import invoke
from minedraft.planner import SLO, PlanInputs, plan, report
from minedraft.planner.estimate import Context, Estimate, estimate
from minedraft.planner.search import Evaluated, slo_capacity
from minedraft.planner.space import (
    Candidate,
    enumerate_candidates,
    memory_check,
    sim_argv,
)
from minedraft.planner.sweep import (
    POINT_SCHEMA,
    Checkpoint,
    LocalPool,
    Progress,
    evaluate_point,
    point_key,
    run_points,
)
from minedraft.theory.serving import steady

from minedraft.cli.plan import main as plan_main
from minedraft.cli.sim import main as sim_main
from minedraft.presets import model_shape

SMALL = dict(targets=("qwen3-32b",), drafts=("qwen3-0.6b",), gpus=("h200",), budget=5, request_rate=6.0,
             slo=SLO(tpot_ms=30.0, ttft_ms=3000.0), tps=(1,), ks=(3, 5), max_num_seqs=(16, 32),
             psd_capacity=("double",), sd_drafter=("shared",), survivors=1, accept_sweep=(0.8,),
             workload=(("--num-prompts", "120"), ("--output-len", "128"), ("--seed", "0")))


@pytest.fixture(scope="module")
def small_plan():
    return plan(PlanInputs(**SMALL))


def test_best_of_each_policy_is_confirmed_and_reproduced_by_minedraft_sim(small_plan, capsys):
    best = small_plan["best"]
    assert set(best) == {"ar", "sd", "psd", "pearl"}
    for p, b in best.items():
        assert b is not None, p
        assert b["meets_slo"]
        assert b["metrics"]["p99_tpot_ms"] <= 30.0 and b["metrics"]["p99_ttft_ms"] <= 3000.0
        assert b["gpus"] == b["replicas"] * b["gpus_per_replica"] <= 5
        assert b["total_rate_req_s"] == pytest.approx(6.0, rel=1e-3)
        # the quoted numbers are exactly what the quoted minedraft-sim command prints
        argv = b["command"].split()[1:]
        code, out, err = invoke(sim_main, argv + ["--json", "-"], capsys)
        assert code == 0, err
        r = json.loads(out)["results"][0]
        for k in ("output_throughput", "p99_tpot_ms", "p99_ttft_ms", "p99_e2el_ms", "mean_acceptance_length"):
            want = b["metrics"][k]
            assert r[k] == (None if want is None else pytest.approx(want, rel=1e-12, abs=1e-12)), (p, k)
    # GPUs per replica: the drafter of PSD and PEARL has its own GPU
    assert best["psd"]["gpus_per_replica"] == 2 and best["sd"]["gpus_per_replica"] == 1
    json.dumps(small_plan, allow_nan=False)


def test_recommendation_is_the_cheapest_confirmed_deployment(small_plan):
    best = small_plan["best"]
    rec = small_plan["recommendation"]
    gpus = {p: b["gpus"] for p, b in best.items()}
    assert gpus[rec] == min(gpus.values())
    # headroom breaks ties: among the cheapest, the recommended one carries the most per GPU
    tied = [p for p in gpus if gpus[p] == gpus[rec]]
    cap = {p: best[p]["slo_capacity_per_replica_req_s"] / best[p]["gpus_per_replica"] for p in tied}
    assert cap[rec] == max(cap.values())


def test_slo_capacity_sits_between_a_point_that_meets_and_one_that_misses(small_plan):
    slo = SMALL["slo"]
    checked = 0
    for c in small_plan["configs"]:
        pts = sorted(c["points"], key=lambda p: p["rate_req_s"])
        ok = [p["rate_req_s"] for p in pts if p["meets_slo"]]
        bad = [p["rate_req_s"] for p in pts if not p["meets_slo"]]
        for p in pts:
            assert p["meets_slo"] == (slo.met(p) and p["request_throughput"] >= 0.5 * p["rate_req_s"])
        if ok and bad and max(ok) < min(bad):
            assert max(ok) <= c["slo_capacity_req_s"] <= min(bad)
            checked += 1
    assert checked >= 2  # the grid around the theory's estimate does bracket the capacity


def test_slo_capacity_interpolates_the_worst_ratio():
    c = Candidate("sd", "h200", "qwen3-32b", "qwen3-0.6b", 1, 3, 16)
    ev = Evaluated(c, Estimate(c, 10.0, 5.0))
    m = lambda tpot, thr: {"p99_tpot_ms": tpot, "p99_ttft_ms": 100.0, "p99_e2el_ms": 1.0, "request_throughput": thr}
    ev.points = [(2.0, m(20.0, 2.0), []), (4.0, m(30.0, 4.0), []), (6.0, m(50.0, 6.0), []), (8.0, m(80.0, 8.0), [])]
    slo_capacity(ev, SLO(tpot_ms=40.0))
    assert ev.capacity == pytest.approx(4.0 + (1.0 - 0.75) / (1.25 - 0.75) * 2.0)
    # a replica that falls behind its traffic does not count, whatever its p99s
    ev.points = [(2.0, m(20.0, 2.0), []), (4.0, m(30.0, 1.5), [])]
    slo_capacity(ev, SLO(tpot_ms=40.0))
    assert ev.capacity == 2.0
    ev.points = [(2.0, m(45.0, 2.0), [])]
    slo_capacity(ev, SLO(tpot_ms=40.0))
    assert ev.capacity == 0.0 and "misses" in ev.capacity_note


def test_memory_check_by_hand():
    # Qwen3-32B in bf16 on one H100 (80 GB): weights alone take 65.5 GB of 0.9 x 80 - 2 = 70 GB usable
    c = Candidate("ar", "h100-sxm", "qwen3-32b", None, 1, 0, 8)
    shape = model_shape("qwen3-32b")
    tokens = 1000.0
    mem = memory_check(c, tokens)
    want = shape.num_params * 2 + 8 * tokens * shape.kv_bytes_per_token
    assert mem.need_bytes == pytest.approx(want)
    assert mem.usable_bytes == pytest.approx(0.9 * 80e9 - 2e9)
    assert mem.fits  # 65.5 + 2.1 GB
    assert not memory_check(Candidate("ar", "h100-sxm", "qwen3-32b", None, 1, 0, 32), tokens).fits
    assert memory_check(Candidate("ar", "h200", "qwen3-32b", None, 1, 0, 128), tokens).fits
    # TP 4 splits weights and KV heads four ways; PSD double holds 2 x max_num_seqs
    psd = Candidate("psd", "h100-sxm", "qwen3-32b", "qwen3-0.6b", 4, 5, 64, "double")
    m4 = memory_check(psd, tokens)
    assert m4.fits and psd.in_flight == 128 and psd.gpus == 5
    want4 = shape.num_params * 2 / 4 + 128 * tokens * shape.kv_bytes_per_token / 4
    assert m4.need_bytes == pytest.approx(want4)


def test_pruning_reasons_are_real():
    inp = PlanInputs(**{**SMALL, "gpus": ("h100",), "tps": (1, 2, 8), "max_num_seqs": (8, 64), "budget": 4})
    ctx = Context(inp)
    cands, pruned = enumerate_candidates(inp, ctx.tokens_per_request)
    assert pruned.counts["needs more GPUs than the budget"] > 0  # tp 8
    assert pruned.counts["weights + KV cache exceed GPU memory"] > 0  # 32B on one H100 with 64 in flight
    assert all(c.gpus <= 4 for c in cands)
    assert all(memory_check(c, ctx.tokens_per_request + c.k).fits for c in cands)
    assert pruned.enumerated == len(cands) + sum(pruned.counts.values())


def test_theory_prunes_what_cannot_meet_the_slo():
    # p99 TPOT <= 1 ms: Qwen3-32B steps take tens of ms, so the theory drops everything before simulating
    inp = PlanInputs(**{**SMALL, "slo": SLO(tpot_ms=1.0)})
    res = plan(inp)
    assert all(b is None for b in res["best"].values())
    assert res["counts"]["simulated_configs"] == 0 and res["counts"].get("simulated", 0) == 0
    assert res["counts"]["pruned"]["misses the SLO even at no load (theory means)"] > 0
    assert "No configuration meets the SLO" in report.headline(res)


def test_a_policy_over_budget_says_how_far_it_gets(small_plan):
    res = plan(PlanInputs(**{**SMALL, "budget": 2, "request_rate": 30.0, "accept_sweep": ()}))
    assert res["best"]["psd"] is None and res["best"]["pearl"] is None  # 2 GPUs: one replica, far below 30 req/s
    sf = res["shortfall"]["psd"]
    assert sf["max_replicas"] == 1 and sf["gpus_per_replica"] == 2
    assert 0 < sf["in_budget_req_s"] < 30.0
    # the same configuration carries the same per-replica capacity as in the 5-GPU plan
    same = [c for c in small_plan["configs"] if c["id"] == sf["config"]]
    assert same and same[0]["slo_capacity_req_s"] == pytest.approx(sf["slo_capacity_per_replica_req_s"])
    row = [r for r in report.best_rows(res)[1] if r[0] == "psd"][0]
    assert row[1].startswith(f"over budget: at most {sf['in_budget_req_s']:.3g} req/s of the 30 needed")


def test_theory_estimate_is_the_serving_formula():
    inp = PlanInputs(**SMALL)
    ctx = Context(inp)
    c = Candidate("psd", "h200", "qwen3-32b", "qwen3-0.6b", 1, 5, 16, "double")
    e = estimate(c, ctx)
    st = steady("psd", ctx.setup(c), 5, 2)
    assert e.light["tpot_ms"] == pytest.approx(st.tpot_s * 1e3)  # one request per half at no load
    assert 0 < e.slo_rate <= e.max_rate


def test_report_files(small_plan, tmp_path):
    paths = report.write(small_plan, tmp_path)
    html = paths["html"].read_text()
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs() in html  # plotly.js is inlined, and nothing else is loaded: it opens offline
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", html.replace(get_plotlyjs(), ""))
    for fig in ("pareto", "capacity", "cost", "load", "acceptance"):
        assert f'id="fig-{fig}"' in html
    md = paths["markdown"].read_text()
    assert md.startswith("# minedraft-plan report")
    rec = small_plan["recommendation"]
    assert f"Recommended: {rec.upper()}" in md
    b = small_plan["best"][rec]
    assert f"| {rec} ★ | {b['config']} |" in md
    assert f"{b['metrics']['p99_tpot_ms']:.1f}" in md
    assert json.loads(paths["json"].read_text())["best"][rec]["config"] == b["config"]


def test_checkpoint_survives_a_torn_line(tmp_path):
    path = tmp_path / "points.jsonl"
    ck = Checkpoint(path)
    ck.add(["--a", "1"], {"metrics": {"x": 1}})
    ck.add(["--a", "2"], {"metrics": {"x": 2}})
    ck.close()
    with open(path, "a") as fh:
        fh.write('{"schema": "' + POINT_SCHEMA + '", "key": "abc", "res')  # a kill in the middle of a write
    ck = Checkpoint(path)
    assert ck.loaded == 2 and ck.get(["--a", "2"]) == {"metrics": {"x": 2}}
    ck.add(["--a", "3"], {"metrics": {"x": 3}})
    ck.close()
    again = Checkpoint(path)
    assert again.loaded == 3 and again.get(["--a", "3"])["metrics"]["x"] == 3


def _square(argv):  # a module-level function: process pools pickle it by name
    return {"metrics": {"x": int(argv[1]) ** 2}, "pid": os.getpid()}


def test_local_pool_runs_in_parallel_processes_and_checkpoints_each_point(tmp_path):
    ck = Checkpoint(tmp_path / "p.jsonl")
    pool = LocalPool(2)
    try:
        argvs = [["--n", str(i)] for i in range(8)]
        res, n = run_points(argvs, pool, ck, Progress(False), "test", fn=_square)
    finally:
        pool.close()
        ck.close()
    assert n == {"points": 8, "resumed": 0, "simulated": 8, "reused": 0}
    assert {res[point_key(a)]["metrics"]["x"] for a in argvs} == {i * i for i in range(8)}
    assert os.getpid() not in {r["pid"] for r in res.values()}
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 8
    ck2 = Checkpoint(tmp_path / "p.jsonl")
    res2, n2 = run_points(argvs + [["--n", "9"]], pool_inline(), ck2, Progress(False), "test", fn=_square)
    assert n2["resumed"] == 8 and n2["simulated"] == 1


def pool_inline():
    from minedraft.planner.sweep import InlinePool

    return InlinePool()


BAD = [
    (["--num-gpus", "0"], "--num-gpus"),
    (["--num-gpus", "x"], "--num-gpus"),
    (["--gpu", "h900"], "--gpu"),
    (["--target", "nonsense"], "--target"),
    (["--draft", "qwen3-0.6b,qwen3-0.6b"], "--draft"),
    (["--policy", "ar,foo"], "--policy"),
    (["-k", "0-3"], "--num-speculative-tokens"),
    (["-k", "5-2"], "--num-speculative-tokens"),
    (["--max-num-seqs", "8,abc"], "--max-num-seqs"),
    (["--psd-capacity", "triple"], "--psd-capacity"),
    (["--psd-split", "sometimes"], "--psd-split"),
    (["--psd-split", "auto,auto"], "--psd-split"),
    (["--slo-tpot-ms", "-5"], "--slo-tpot-ms"),
    (["--slo-e2e-ms", "nan"], "--slo-e2e-ms"),
    (["--request-rate", "-1"], "--request-rate"),
    (["--accept-curve", "0.5,0.9"], "--accept-curve"),
    (["--accept-sweep", "0.5,1"], "--accept-sweep"),
    (["--gpu-hour-cost", "h100=2"], "--gpu-hour-cost"),
    (["--gpu-hour-cost", "-1"], "--gpu-hour-cost"),
    (["--output-len", "uniform:9:3"], "--output-len"),
    (["--dataset", "/nonexistent.json"], "--dataset"),
    (["--tensor-parallel-size", "16"], "--tensor-parallel-size"),
    (["--workers", "0"], "--workers"),
    (["--ray-address", "127.0.0.1:1"], "--ray-address"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("args,flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_naming_the_flag(args, flag, capsys, tmp_path):
    code, out, err = invoke(plan_main, args + ["--out", str(tmp_path / "o")], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), err
    assert "Traceback" not in err


def test_bad_input_in_a_real_process(tmp_path):
    p = subprocess.run([sys.executable, "-m", "minedraft.cli.plan", "--num-gpus", "-3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: --num-gpus:") and "Traceback" not in p.stderr


KILL_ARGS = ["--gpu", "h200", "--target", "qwen3-32b", "--draft", "qwen3-0.6b", "-tp", "1", "-k", "3,5",
             "--max-num-seqs", "16,32", "--psd-capacity", "double", "--sd-drafter", "shared", "--survivors", "1",
             "--accept-sweep", "0.6,0.8", "--num-prompts", "100", "--output-len", "128", "--request-rate", "6",
             "--slo-tpot-ms", "40", "--workers", "2", "--quiet"]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_kill_9_then_resume_loses_no_finished_point(tmp_path):
    out = tmp_path / "plan"
    ckpt = out / "points.jsonl"
    args = [sys.executable, "-m", "minedraft.cli.plan", *KILL_ARGS, "--out", str(out)]
    proc = subprocess.Popen(args + ["--json", str(tmp_path / "first.json")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while len(_lines(ckpt)) < 6:
        assert proc.poll() is None, f"the plan ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() - t0 < 90, "no points were checkpointed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes, at once
    proc.wait()
    assert not (tmp_path / "first.json").exists()
    before = {}
    for line in _lines(ckpt):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut short by the kill
        before[rec["key"]] = rec["result"]
    assert len(before) >= 6
    with open(ckpt, "a") as fh:  # and a write torn by the kill, as it can happen
        fh.write('{"schema": "' + POINT_SCHEMA + '", "key": "torn", "result": {"metr')

    second = subprocess.run(args + ["--json", str(tmp_path / "second.json")], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    res = json.loads((tmp_path / "second.json").read_text())
    c = res["counts"]
    assert c["resumed"] == len(before)  # every finished point was used again, none re-simulated
    assert c["simulated"] > 0  # and the kill did interrupt work that was left
    assert c["simulated"] == c["points"] - c["resumed"] - c["reused"]
    after = {}
    for line in _lines(ckpt):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        assert rec["key"] not in after or rec["key"] in before, "a point was simulated twice"
        after[rec["key"]] = rec["result"]
    assert set(before) <= set(after)
    for k, v in before.items():
        assert after[k] == v

    third = subprocess.run(args + ["--json", str(tmp_path / "third.json")], capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    res3 = json.loads((tmp_path / "third.json").read_text())
    assert res3["counts"]["simulated"] == 0
    assert res3["best"] == res["best"] and res3["recommendation"] == res["recommendation"]


def test_point_argv_is_a_minedraft_sim_command():
    inp = PlanInputs(**SMALL)
    c = Candidate("psd", "h200", "qwen3-32b", "qwen3-0.6b", 1, 5, 16, "split",
                  k_schedule=((1, 8, 5), (9, 16, 3)))
    argv = sim_argv(c, 3.14159, inp)
    assert argv[argv.index("--request-rate") + 1] == "3.142"
    assert argv[argv.index("--num-speculative-tokens-per-batch-size") + 1] == "1-8:5,9-16:3"
    assert argv[argv.index("--psd-capacity") + 1] == "split"
    assert math.isclose(float(argv[argv.index("--request-rate") + 1]), 3.142)


# ------------------------------------------------------------------------------------------ PSD's schedule
def _sim_json(argv, capsys):
    code, out, err = invoke(sim_main, argv + ["--json", "-", "--quiet"], capsys)
    assert code == 0, err
    return json.loads(out)


def _set(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def test_a_psd_point_takes_minedraft_sims_split_threshold(capsys):
    """A PSD point runs --psd-split auto with the threshold minedraft-sim takes (common.with_split_rows), not the
    policy's fallback (max_num_seqs + 1): at max_num_seqs 64 the two differ, and so do the runs."""
    inp = PlanInputs(**SMALL)
    c = Candidate("psd", "h200", "qwen3-32b", "qwen3-0.6b", 1, 5, 64, "double")
    argv = sim_argv(c, 12.0, inp)
    assert argv[argv.index("--psd-split") + 1] == "auto"
    res = evaluate_point(argv)
    sim = _sim_json(argv, capsys)
    rows = sim["config"]["policy_config"]["psd_split_rows"]
    assert rows is not None and rows < 64  # the step model splits below one full batch here
    assert res["psd_split"] == sim["config"]["psd_split"] and res["psd_split"].startswith(
        f"PSD auto: two halves from {rows} requests in flight")
    r = sim["results"][0]
    for k in ("split_fraction", "p99_tpot_ms", "output_throughput"):
        assert res["metrics"][k] == r[k], k
    # the fallback threshold would have run another schedule: the check above can tell them apart
    fallback = _sim_json(argv + ["--psd-split-rows", "65"], capsys)["results"][0]
    assert abs(fallback["split_fraction"] - r["split_fraction"]) > 0.1


def test_default_plan_runs_psd_auto_and_says_when_it_splits(small_plan, tmp_path, capsys):
    b = small_plan["best"]["psd"]
    assert small_plan["inputs"]["psd_split"] == ["auto"]
    assert b["candidate"]["psd_split"] == "auto" and "split=auto" in b["config"]
    argv = b["command"].split()[1:]
    assert argv[argv.index("--psd-split") + 1] == "auto"
    sim = _sim_json(argv, capsys)
    s = b["psd_split"]
    assert s["mode"] == "auto"
    assert s["line"] == sim["config"]["psd_split"] and s["line"].startswith("PSD auto: ")
    assert s["split_fraction"] == sim["results"][0]["split_fraction"] and 0.0 <= s["split_fraction"] <= 1.0
    assert all(small_plan["best"][p]["psd_split"] is None for p in ("ar", "sd", "pearl"))
    for c in small_plan["configs"]:  # each simulated configuration carries its line (the same at every rate)
        assert (c["psd_split_line"] or "").startswith("PSD auto: ") == (c["policy"] == "psd"), c["id"]
        assert all((p["split_fraction"] is None) == (c["policy"] != "psd") for p in c["points"]), c["id"]
    paths = report.write(small_plan, tmp_path)
    md = paths["markdown"].read_text()
    want = f"PSD's schedule: {b['config']}: {s['line']}; the confirming run split {s['split_fraction']:.0%} of its " \
           "decode steps."
    assert [x for x in md.splitlines() if x.startswith("PSD's schedule:")] == [want]
    assert "psd_split auto;" in md
    assert html.escape(want) in paths["html"].read_text()
    assert json.loads(paths["json"].read_text())["best"]["psd"]["psd_split"] == s


PSD_ARGS = ["--policy", "psd", "--gpu", "h200", "--target", "qwen3-32b", "--draft", "qwen3-0.6b", "-tp", "1", "-k", "3",
            "--no-k-schedule", "--max-num-seqs", "16", "--psd-capacity", "split", "--survivors", "1",
            "--accept-sweep", "none", "--num-prompts", "80", "--output-len", "64", "--request-rate", "4",
            "--slo-tpot-ms", "40", "--workers", "1"]


def test_psd_split_always_is_the_published_schedule(tmp_path, capsys):
    """--psd-split always: the plan says so, and its PSD command runs two halves (offline with a full batch: nearly
    every decode step); auto at the same point never splits (capacity split: one batch holds every request)."""
    code, out, err = invoke(plan_main, PSD_ARGS + ["--psd-split", "always", "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "a" / "plan.json").read_text())
    b = res["best"]["psd"]
    assert b["psd_split"]["mode"] == "always" and b["psd_split"]["line"] is None
    assert "split=always" in b["config"] and "--psd-split always" in b["command"]
    assert b["psd_split"]["split_fraction"] > 0.5
    line = [x for x in out.splitlines() if x.startswith("PSD's schedule:")]
    assert len(line) == 1 and "PSD always: two halves whenever two can be formed (the published schedule)" in line[0]
    assert f"split {b['psd_split']['split_fraction']:.0%} of its decode steps" in line[0]
    assert "PSD always: two halves" in (tmp_path / "a" / "plan.md").read_text()
    offline = _set(_set(b["command"].split()[1:], "--request-rate", "inf"), "--num-prompts", "64")
    always = _sim_json(offline, capsys)["results"][0]["split_fraction"]
    auto = _sim_json(_set(offline, "--psd-split", "auto"), capsys)
    assert always > 0.95
    assert auto["results"][0]["split_fraction"] == 0.0 and auto["config"]["psd_split"].startswith("PSD auto: ")


def test_plan_weighs_both_psd_schedules_when_asked(tmp_path, capsys):
    code, out, err = invoke(plan_main, PSD_ARGS + ["--psd-split", "auto,always", "--out", str(tmp_path / "b"),
                                                   "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "b" / "plan.json").read_text())
    assert res["inputs"]["psd_split"] == ["auto", "always"]
    modes = {c["psd_split"]: c for c in res["configs"]}
    assert set(modes) == {"auto", "always"}  # the theory cannot tell them apart: each keeps its own survivor
    assert modes["always"]["psd_split_line"] is None and modes["auto"]["psd_split_line"].startswith("PSD auto: ")
    fr = {m: [p["split_fraction"] for p in c["points"]] for m, c in modes.items()}
    assert max(fr["auto"]) == 0.0 and min(fr["always"]) > 0.5
    b = res["best"]["psd"]
    assert b["psd_split"]["mode"] == b["candidate"]["psd_split"]
    assert b["slo_capacity_per_replica_req_s"] == max(c["slo_capacity_req_s"] for c in res["configs"])

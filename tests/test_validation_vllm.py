"""CPU regression check of the whole validation loop on real vLLM (the CPU build; marker ``vllm``).

Calibrate step models on some runs of a tiny model pair, then predict a *different* run (another
max_num_seqs) and compare with what it measured. CPU timings here are noisy (2 shared cores, Python-bound
steps of a few ms), so the check compares *ratios within one session*: SD's output throughput over
AR's, predicted vs measured, at the held-out batch. Both runs of a ratio see the same machine state, so
common slow-downs cancel, and every run is repeated and its fastest repeat kept (a run lasts ~0.1 s, so
one busy moment can slow a single run by a third: CI once failed that way with single runs). Seen on an otherwise idle 2-core machine: predicted and measured ratios within
2-5% of each other in four sessions (absolute throughputs 7-20% apart). The bound, 25%, leaves room
for a busier machine and still catches a broken composition of step times: here the drafter is as large
as the target, so its k = 2 forwards are about two thirds of an SD step, and charging them once instead
of k times moves the predicted ratio by roughly 30%. With the repeats, the check also held with a busy
loop on one of the two cores (ratios 1-5% apart in three tries).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minedraft.calibration.steps import fit_steps, step_rows  # noqa: E402
from minedraft.costs import StepCosts  # noqa: E402
from minedraft.metrics import compute_metrics  # noqa: E402
from minedraft.workload import Requests  # noqa: E402

pytestmark = pytest.mark.vllm
K = 2
ROUNDS = 7  # repeats of every run, in rounds; the fastest one is kept (see _fastest_interleaved)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from minedraft.executor.engine import Engine, EngineSpec
    from minedraft.executor.models import resolve_model, tiny_qwen3_config

    root = tmp_path_factory.mktemp("models")
    cfg = tiny_qwen3_config()
    t = resolve_model(cfg, "--target", root)
    d = resolve_model(dict(cfg), "--draft", root)
    common = dict(max_num_seqs=8, max_model_len=256, kv_cache_memory_bytes=32 << 20)
    with Engine(EngineSpec(t, None, 0, **common)) as ar, Engine(EngineSpec(t, d, K, **common)) as sd:
        ar.warmup(2, 32, 8)
        sd.warmup(2, 32, 8)
        yield ar, sd


def _run(engine, policy, mns):
    from minedraft.executor.run import run_policy

    engine.set_max_num_seqs(mns)
    n = 3 * mns
    req = Requests(arrival=np.zeros(n), prompt_len=np.full(n, 32, dtype=np.int64),
                   output_len=np.full(n, 48, dtype=np.int64))
    records: list[dict] = []
    run_policy(engine, policy, req, records.append, online=False, seed=1,
               header_config={"policy": policy, "target": "tiny", "draft": "tiny-draft" if policy == "sd" else None,
                              "k": K if policy == "sd" else 0, "max_num_seqs": mns})
    return records


def _fastest_interleaved(engines, batches):
    """Each (policy, max_num_seqs) run's least disturbed of ROUNDS repeats (highest output throughput).

    A run takes ~0.1 s here, so one busy moment of the machine can slow a single run by a third; the fastest
    repeat is the usual remedy. The repeats are spread over time: every round runs each configuration once,
    so a slow spell of a few seconds costs every configuration the same rounds instead of all the repeats of
    one of them (CI once failed with the repeats of each run back to back: the held-out SD runs all fell in
    one slow spell and measured 0.70 of AR where the fit predicted 1.16)."""
    runs: dict = {}
    for _ in range(ROUNDS):
        for mns in batches:
            for policy, engine in engines.items():
                recs = _run(engine, policy, mns)
                if (policy, mns) not in runs or _throughput(recs) > _throughput(runs[policy, mns]):
                    runs[policy, mns] = recs
    return runs


def _throughput(recs):
    from minedraft.simulator.replay import measured_run

    return compute_metrics(measured_run(recs, "x").trace)["output_throughput"]


def test_calibrate_on_cpu_then_predict_a_different_run(engines):
    from minedraft.simulator.replay import measured_run, replay

    ar, sd = engines
    eng = {"ar": ar, "sd": sd}
    best = _fastest_interleaved(eng, (1, 8, 4))
    calib = {f"{p}-{m}": best[p, m] for m in (1, 8) for p in eng}
    held = {p: best[p, 4] for p in eng}
    fit = fit_steps([row for n, recs in calib.items() for row in step_rows(recs, n)], "cpu")
    measured, predicted = {}, {}
    for p, recs in held.items():
        run = measured_run(recs, p)
        costs = StepCosts(fit.models["tiny"], fit.models.get("tiny+tiny-draft"))
        measured[p] = compute_metrics(run.trace)["output_throughput"]
        predicted[p] = compute_metrics(replay(run, costs))["output_throughput"]
    ratio_m = measured["sd"] / measured["ar"]
    ratio_p = predicted["sd"] / predicted["ar"]
    assert ratio_p == pytest.approx(ratio_m, rel=0.25), (ratio_p, ratio_m, measured, predicted)

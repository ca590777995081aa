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
ROUNDS = 5  # repeats of every run; the fastest one is kept (see _fastest)


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


def _fastest(engine, policy, mns):
    """The least disturbed of ROUNDS repeats (highest output throughput): a run takes ~0.1 s here, so one
    busy moment of the machine can slow a single run by a third; the fastest repeat is the usual remedy."""
    runs = [_run(engine, policy, mns) for _ in range(ROUNDS)]
    return max(runs, key=lambda recs: _throughput(recs))


def _throughput(recs):
    from minedraft.simulator.replay import measured_run

    return compute_metrics(measured_run(recs, "x").trace)["output_throughput"]


def test_calibrate_on_cpu_then_predict_a_different_run(engines):
    from minedraft.simulator.replay import measured_run, replay

    ar, sd = engines
    eng = {"ar": ar, "sd": sd}
    calib = {f"{p}-{m}": _fastest(eng[p], p, m) for m in (1, 8) for p in eng}  # interleaved: AR, SD, AR, SD
    held = {p: _fastest(eng[p], p, 4) for p in eng}
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

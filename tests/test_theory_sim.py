"""Theory against the simulator: offline makespans within 1% (constant mode), affine and prefill, E2E under load."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minedraft.simulator import simulate
from minedraft.theory.load import e2e_under_load, max_rate
from minedraft.theory.serving import Setup, offline
from minedraft.theory.steps import steps_cv2

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.latency import Affine, Constant
from minedraft.metrics import compute_metrics
from minedraft.policies import PolicyConfig
from minedraft.workload import LengthDist, Workload

# Long offline runs, for two reasons. (1) The closed form ignores the drain at the end (the last requests
# of each slot finish at different times): with SLOT_REQUESTS requests per slot that is ~1/600 of the
# makespan. (2) The simulator samples acceptance, so its total work has a relative standard deviation of
# about cv / sqrt(N), cv the coefficient of variation of one request's step count (theory.steps): N is
# chosen so that it stays below 0.3%, a third of the tolerance.
SLOT_REQUESTS = 300
NOISE_SD = 0.003


def _num_requests(policy, setup, k, out_len):
    cv2 = steps_cv2(policy, setup.curve, k, out_len - 1)
    return max(SLOT_REQUESTS * setup.capacity(policy), math.ceil(cv2 / NOISE_SD**2))


def _sim(policy, setup, k, n, out_len, prompt=32, seed=0, rate=None):
    wl = Workload(num_prompts=n, request_rate=rate if rate else float("inf"), input_len=LengthDist("fixed", prompt),
                  output_len=LengthDist("fixed", out_len), seed=seed)
    cfg = PolicyConfig(max_num_seqs=setup.max_num_seqs, num_speculative_tokens=k, psd_capacity=setup.psd_capacity,
                       sd_drafter=setup.sd_drafter, psd_drafter=setup.psd_drafter, max_num_batched_tokens=None)
    return compute_metrics(simulate(policy, wl.generate(), cfg, setup.costs, setup.curve, seed=seed))


@st.composite
def offline_cases(draw):
    policy = draw(st.sampled_from(["ar", "sd", "sd-own", "psd", "psd-split", "pearl", "psd-shared", "pearl-shared"]))
    a = draw(st.floats(0.3, 0.95))
    k = draw(st.integers(1, 6))
    y = draw(st.floats(5.0, 30.0)) / 1e3
    x = draw(st.floats(0.3, 6.0)) / 1e3
    o = draw(st.sampled_from([0.0, 0.5e-3]))
    tau = draw(st.sampled_from([0.0, 0.2e-3]))
    m = draw(st.sampled_from([2, 4, 8, 16]))
    out_len = draw(st.integers(17, 49))
    seed = draw(st.integers(0, 1000))
    # the plugin's measured costs (drafter op, half swap, drafter slowdown and verify stretch on a shared GPU), on or off
    plugin = draw(st.sampled_from([(0.0, 0.0, 0.0, 0.0, 0.0), (1e-3, 0.5e-3, 20e-6, 0.3, 0.8)]))
    base = policy.split("-")[0]
    costs = StepCosts(Constant(y), Constant(x), o, tau, *plugin)
    setup = Setup(AcceptanceCurve.geometric(a), costs, m, "split" if policy == "psd-split" else "double",
                  "own" if policy == "sd-own" else "shared",
                  psd_drafter="shared" if policy.endswith("-shared") else "own")
    return base, setup, k, out_len, seed


@settings(max_examples=24, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(offline_cases())
def test_offline_makespan_within_one_percent(case):
    policy, setup, k, out_len, seed = case
    n = _num_requests(policy, setup, k, out_len)
    sim = _sim(policy, setup, k, n, out_len, seed=seed)
    theory = offline(policy, setup, k, n, out_len, prompt_len=32)
    assert sim["completed"] == n
    assert sim["makespan_s"] == pytest.approx(theory.makespan_s, rel=0.01)
    assert sim["output_throughput"] == pytest.approx(theory.throughput, rel=0.01)


@pytest.mark.parametrize("policy,capacity", [("sd", "double"), ("psd", "split"), ("psd", "double")])
def test_affine_step_times_within_one_percent(policy, capacity):
    costs = StepCosts(Affine(0.005, 0.0002), Affine(0.001, 0.00005))
    setup = Setup(AcceptanceCurve.geometric(0.75), costs, 16, capacity)
    n = 250 * setup.capacity(policy)
    sim = _sim(policy, setup, 3, n, 49, seed=2)
    assert sim["makespan_s"] == pytest.approx(offline(policy, setup, 3, n, 49, prompt_len=32).makespan_s, rel=0.01)


@pytest.mark.parametrize("policy", ["ar", "sd", "psd", "pearl"])
def test_prefill_approximation_within_two_percent(policy):
    setup = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Constant(0.010, 0.02), Constant(0.002, 0.02)), 8)
    n = 200 * setup.capacity(policy)
    sim = _sim(policy, setup, 4, n, 60)
    assert sim["makespan_s"] == pytest.approx(offline(policy, setup, 4, n, 60, prompt_len=32).makespan_s, rel=0.02)


# Under Poisson load the queue approximation is checked at three loads per policy. Measured errors are
# within 4% (constant times) up to 90% of the maximum rate; we allow 8% with these shorter runs.
@pytest.mark.parametrize("policy,capacity", [("sd", "double"), ("psd", "double"), ("psd", "split")])
def test_e2e_under_poisson_load(policy, capacity):
    setup = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Constant(0.010), Constant(0.0015)), 8, capacity)
    top = max_rate(policy, setup, 4, 65)
    for frac in (0.3, 0.6, 0.85):
        rate = frac * top
        sim = _sim(policy, setup, 4, 1200, 65, seed=5, rate=rate)
        want = e2e_under_load(policy, setup, 4, rate, 65).e2e_s * 1e3
        assert sim["mean_e2el_ms"] == pytest.approx(want, rel=0.08), (frac, sim["mean_e2el_ms"], want)


@pytest.mark.parametrize("policy,drafter", [("psd", "own"), ("psd", "shared"), ("pearl", "shared"), ("sd", "own")])
def test_plugin_costs_and_gpu_sharing_agree_with_the_simulator(policy, drafter):
    """The plugin's measured costs (drafter op, half swap per row, shared-GPU slowdown) enter both the same way."""
    costs = StepCosts(Constant(0.02), Constant(0.004), 0.5e-3, 0.0, drafter_op_s=2e-3, verify_swap_s=1e-3,
                      verify_swap_row_s=50e-6, shared_gpu_slowdown=0.25, shared_verify_stretch=0.8)
    setup = Setup(AcceptanceCurve.geometric(0.7), costs, 8, "double", "own" if policy == "sd" else "shared",
                  psd_drafter=drafter if policy != "sd" else "own")
    n = 300 * setup.capacity(policy)
    sim = _sim(policy, setup, 3, n, 33, seed=4)
    theory = offline(policy, setup, 3, n, 33, prompt_len=32)
    assert sim["makespan_s"] == pytest.approx(theory.makespan_s, rel=0.01)
    assert sim["num_gpus"] == setup.gpus(policy)


@pytest.mark.parametrize("longer", ["drafter", "verify"])
@pytest.mark.parametrize("policy,capacity,m", [("psd", "split", 7), ("psd", "double", 5), ("pearl", "double", 6)])
def test_shared_gpu_terms_agree_with_the_simulator(policy, capacity, m, longer):
    """Batch-dependent (affine) step times and odd halves on a shared GPU. With the drafter's op the longer one its
    slowdown decides the step; with the verify the longer one its stretch by the drafter's later passes (over the
    rows of the *other* half) does."""
    if longer == "drafter":
        target, drafter = Affine(2e-3, 20e-6, prefill_token_s=1e-6), Affine(1.5e-3, 40e-6, prefill_token_s=1e-6)
    else:
        target, drafter = Affine(10e-3, 50e-6, prefill_token_s=1e-6), Affine(0.5e-3, 150e-6, prefill_token_s=1e-6)
    costs = StepCosts(target, drafter, 0.3e-3, 0.0, drafter_op_s=1e-3, verify_swap_s=0.5e-3, verify_swap_row_s=30e-6,
                      shared_gpu_slowdown=0.3, shared_verify_stretch=0.9)
    setup = Setup(AcceptanceCurve.geometric(0.75), costs, m, capacity, "shared", psd_drafter="shared")
    n = 300 * setup.capacity(policy)
    sim = _sim(policy, setup, 4, n, 33, seed=2)
    theory = offline(policy, setup, 4, n, 33, prompt_len=32)
    assert sim["makespan_s"] == pytest.approx(theory.makespan_s, rel=0.01)

"""The simulator against closed forms (constant mode) and its invariants."""

import numpy as np
import pytest

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.latency import Constant, Roofline
from minedraft.metrics import compute_metrics
from minedraft.ops import DRAFT, OP_KINDS, RESOURCES, VERIFY
from minedraft.policies import PolicyConfig
from minedraft.presets import gpu_spec, model_shape
from minedraft.simulator import simulate
from minedraft.theory import offline_makespan, steady_throughput
from minedraft.workload import LengthDist, Workload

COSTS = StepCosts(Constant(0.010), Constant(0.002))  # verify 10 ms, 2 ms per drafter forward
CURVE = AcceptanceCurve.geometric(0.8)


def offline(n, prompt=64, output=129, seed=0):
    return Workload(num_prompts=n, input_len=LengthDist("fixed", prompt), output_len=LengthDist("fixed", output),
                    seed=seed).generate()


# Tolerance: the closed form ignores only the drain at the end (the last requests of each slot finish at
# different times). For N = 4000 requests over M = 16 slots of ~250 requests, the slowest slot exceeds the
# mean by about 2 standard deviations of a sum of 250 step counts: ~0.5% here. We allow 1.5%.
@pytest.mark.parametrize("policy,capacity", [("ar", "double"), ("sd", "double"), ("psd", "double"),
                                             ("psd", "split"), ("pearl", "double")])
@pytest.mark.parametrize("draft_ms,k", [(2.0, 5), (4.0, 3)])
def test_offline_makespan_matches_closed_form(policy, capacity, draft_ms, k):
    costs = StepCosts(Constant(0.010), Constant(draft_ms / 1e3))
    n, m, out = 4000, 16, 129
    cfg = PolicyConfig(max_num_seqs=m, num_speculative_tokens=k, psd_capacity=capacity)
    sim = compute_metrics(simulate(policy, offline(n, output=out), cfg, costs, CURVE, seed=3))
    theory = offline_makespan(policy, CURVE, k, m, costs, n, out, capacity)
    assert sim["completed"] == n
    assert sim["makespan_s"] == pytest.approx(theory, rel=0.015)
    assert sim["output_throughput"] == pytest.approx(n * out / theory, rel=0.015)


def test_ar_is_exact_with_prefill():
    # waves of M requests: each takes one prefill Z plus (L - 1) decodes of Y
    costs = StepCosts(Constant(0.010, prefill_s=0.05))
    cfg = PolicyConfig(max_num_seqs=8, max_num_batched_tokens=None)
    m = compute_metrics(simulate("ar", offline(40, output=33), cfg, costs))
    assert m["makespan_s"] == pytest.approx(5 * (0.05 + 32 * 0.010))
    assert m["mean_tpot_ms"] == pytest.approx(10.0)


def test_steady_throughput_psd_over_sd_is_the_published_ratio():
    # with k X = Y, PSD (double) doubles SD's throughput: period max(Y, kX) = Y vs kX + Y = 2Y
    sd = steady_throughput("sd", CURVE, 5, 16, COSTS)
    psd = steady_throughput("psd", CURVE, 5, 16, COSTS)
    assert psd / sd == pytest.approx(2.0)
    # split keeps concurrency: with batch-independent step times it can never beat SD
    assert steady_throughput("psd", CURVE, 5, 16, COSTS, "split") / sd == pytest.approx(1.0)


def _mixed_workload(seed=0):
    return Workload(num_prompts=300, request_rate=40.0, input_len=LengthDist("uniform", 16, 200),
                    output_len=LengthDist("lognormal", 60, 0.7), seed=seed).generate()


CONFIGS = [("ar", {}), ("sd", {}), ("sd", {"sd_drafter": "own", "tetris_extra": 2}), ("psd", {}),
           ("psd", {"psd_capacity": "split"}), ("psd", {"tetris_extra": 1}), ("pearl", {}),
           ("ar", {"prefill_mode": "chunked", "max_num_batched_tokens": 300}),
           ("sd", {"prefill_mode": "chunked", "max_num_batched_tokens": 300})]


@pytest.mark.parametrize("policy,extra", CONFIGS)
def test_conservation_and_no_overlap(policy, extra):
    req = _mixed_workload()
    cfg = PolicyConfig(max_num_seqs=8, num_speculative_tokens=4, **extra)
    curve = AcceptanceCurve.beta_mixture(0.7, 6.0, 8)
    costs = StepCosts(Roofline(model_shape("qwen3-8b"), gpu_spec("h100")),
                      Roofline(model_shape("qwen3-0.6b"), gpu_spec("h100")), step_overhead_s=2e-4, transfer_s=5e-5)
    tr = simulate(policy, req, cfg, costs, curve, seed=1, details=True)
    # every request gets exactly its output length, first token from the prefill
    assert np.all(~np.isnan(tr.finish))
    assert [sum(t) for t in tr.tokens_per_step] == req.output_len.tolist()
    assert np.all(tr.first_token >= req.arrival) and np.all(tr.finish >= tr.first_token)
    # no two ops overlap on one resource
    for r in range(len(RESOURCES)):
        sel = tr.op_resource == r
        s, e = tr.op_t_start[sel], tr.op_t_end[sel]
        order = np.argsort(s, kind="stable")
        assert np.all(s[order][1:] >= e[order][:-1] - 1e-12)
    # accepted <= what was verified <= what was drafted
    for kind, reqs, acc, lens, k in zip(tr.op_kind, tr.op_reqs, tr.op_row_accepted, tr.op_row_lengths, tr.op_k):
        if OP_KINDS[kind] == VERIFY:
            lengths = lens if lens is not None else np.full(len(reqs), k)
            assert np.all(acc >= 0) and np.all(acc <= np.maximum(lengths, 1))
            assert np.all(lengths <= cfg.num_speculative_tokens + cfg.tetris_extra)
    # in-flight limit
    limit = 2 * cfg.max_num_seqs if policy == "psd" and cfg.psd_capacity == "double" else cfg.max_num_seqs
    assert tr.op_size.max() <= limit


@pytest.mark.parametrize("capacity", ["double", "split"])
def test_psd_alternates_draft_and_verify_per_request(capacity):
    tr = simulate("psd", offline(200, output=40), PolicyConfig(max_num_seqs=8, psd_capacity=capacity), COSTS,
                  CURVE, details=True)
    last = {}
    for kind, reqs in zip(tr.op_kind, tr.op_reqs):
        kind = OP_KINDS[kind]
        if kind not in (DRAFT, VERIFY):
            continue
        for r in reqs.tolist():
            # never verified twice without a draft in between, never drafted twice without a verify
            assert last.get(r, VERIFY) != kind, (r, kind)
            last[r] = kind
    # the target verifies the two halves in turn, while the drafter drafts the other one
    verify_halves = tr.op_batch_id[tr.op_kind == OP_KINDS.index(VERIFY)]
    assert np.mean(verify_halves[1:] != verify_halves[:-1]) > 0.9
    v = tr.op_kind == OP_KINDS.index(VERIFY)
    d = tr.op_kind == OP_KINDS.index(DRAFT)
    overlapped = np.intersect1d(tr.op_t_start[v], tr.op_t_start[d])
    assert len(overlapped) > 0.8 * v.sum()


def test_psd_with_one_half_empty_is_sd():
    # one request in flight: PSD's second half stays empty, so it runs draft, verify, draft, ... like SD
    req = offline(30, output=50)
    psd = simulate("psd", req, PolicyConfig(max_num_seqs=1, psd_capacity="split"), COSTS, CURVE, seed=5)
    sd = simulate("sd", req, PolicyConfig(max_num_seqs=1, sd_drafter="own"), COSTS, CURVE, seed=5)
    np.testing.assert_allclose(psd.finish, sd.finish)
    assert psd.num_ops == sd.num_ops


def test_determinism_by_seed():
    req = _mixed_workload(seed=2)
    cfg = PolicyConfig(max_num_seqs=8)
    curve = AcceptanceCurve.beta_mixture(0.7, 6.0, 8)
    a = simulate("psd", req, cfg, COSTS, curve, seed=9)
    b = simulate("psd", req, cfg, COSTS, curve, seed=9)
    c = simulate("psd", req, cfg, COSTS, curve, seed=10)
    np.testing.assert_array_equal(a.finish, b.finish)
    np.testing.assert_array_equal(a.op_t_end, b.op_t_end)
    assert not np.array_equal(a.finish, c.finish)


def test_same_time_events_complete_in_issue_order():
    # k X == Y: the verify and the draft of a PSD step end at the same instant. SimPy processes them in the
    # order they were scheduled (verify, then draft); the trace records that order.
    tr = simulate("psd", offline(40, output=20), PolicyConfig(max_num_seqs=4), COSTS, CURVE, details=True)
    kinds = [OP_KINDS[k] for k in tr.op_kind]
    ties = 0
    for i in range(1, len(kinds)):
        if tr.op_t_end[i] == tr.op_t_end[i - 1] and {kinds[i], kinds[i - 1]} == {DRAFT, VERIFY}:
            assert (kinds[i - 1], kinds[i]) == (VERIFY, DRAFT)
            ties += 1
    assert ties > 10


def test_acceptance_extremes():
    req = offline(64, output=61)
    cfg = PolicyConfig(max_num_seqs=16, num_speculative_tokens=4)
    none = compute_metrics(simulate("sd", req, cfg, COSTS, AcceptanceCurve.geometric(0.0)))
    full = compute_metrics(simulate("sd", req, cfg, COSTS, AcceptanceCurve.geometric(1.0)))
    assert none["mean_acceptance_length"] == pytest.approx(1.0)
    assert full["mean_acceptance_length"] == pytest.approx(5.0)
    # alpha = 1: 60 tokens after the prefill in 12 steps of (4 x 2 + 10) ms, four waves of 16
    assert full["makespan_s"] == pytest.approx(4 * 12 * 0.018)


def test_kv_capacity_limits_admission_and_shows_psd_memory_cost():
    req = offline(64, prompt=100, output=41)
    reserve = 100 + 41 + 5  # prompt + output + k lookahead slots
    cfg = PolicyConfig(max_num_seqs=16, kv_capacity_tokens=10 * reserve)
    sd = simulate("sd", req, cfg, COSTS, CURVE)
    psd = simulate("psd", req, cfg, COSTS, CURVE)
    assert sd.op_size[sd.op_kind == OP_KINDS.index(VERIFY)].max() == 10
    running = psd.op_size[psd.op_kind == OP_KINDS.index(VERIFY)]
    assert running.max() <= 10  # both halves together share the ten sequences' worth of KV
    unlimited = simulate("psd", req, PolicyConfig(max_num_seqs=16), COSTS, CURVE)
    assert compute_metrics(psd)["makespan_s"] > compute_metrics(unlimited)["makespan_s"]


def test_poisson_low_load_latency_is_the_isolated_request():
    # one request at a time: AR's E2E is the prefill plus (L - 1) decodes
    wl = Workload(num_prompts=20, arrival_times=tuple(0.5 * i for i in range(20)),
                  input_len=LengthDist("fixed", 10), output_len=LengthDist("fixed", 11), seed=4)
    m = compute_metrics(simulate("ar", wl.generate(), PolicyConfig(max_num_seqs=4),
                                 StepCosts(Constant(0.010, prefill_s=0.02))))
    assert m["mean_e2el_ms"] == pytest.approx(20 + 10 * 10)
    assert m["mean_ttft_ms"] == pytest.approx(20)
    assert m["makespan_s"] == pytest.approx(9.5 + 0.12)
    # under Poisson load, latency only grows
    busy = Workload(num_prompts=200, request_rate=20.0, input_len=LengthDist("fixed", 10),
                    output_len=LengthDist("fixed", 11), seed=4)
    mb = compute_metrics(simulate("ar", busy.generate(), PolicyConfig(max_num_seqs=4),
                                  StepCosts(Constant(0.010, prefill_s=0.02))))
    assert mb["mean_e2el_ms"] > 120


def test_heterogeneity_weights_steps_toward_hard_requests():
    # Each request's acceptance follows its own alpha; averaged over *requests* that is the population curve.
    # Averaged over *steps* (vLLM's mean acceptance length), hard requests count more, since they need more
    # steps: for long outputs the step average is the harmonic mean of the per-request E[1 + A].
    req = offline(400, output=257)
    cfg = PolicyConfig(max_num_seqs=16, num_speculative_tokens=4)
    het = AcceptanceCurve.beta_mixture(0.7, 4.0, 8)
    m = compute_metrics(simulate("sd", req, cfg, COSTS, het, seed=1))
    alpha = np.random.default_rng(0).beta(0.7 * 4, 0.3 * 4, 400_000)
    per_request = (1 - alpha**5) / (1 - alpha)
    harmonic = 1 / np.mean(1 / per_request)
    assert m["mean_acceptance_length"] == pytest.approx(harmonic, rel=0.03)
    assert m["mean_acceptance_length"] < het.expected_tokens(4) - 0.2
    homo = compute_metrics(simulate("sd", req, cfg, COSTS, AcceptanceCurve.geometric(0.7), seed=1))
    assert homo["mean_acceptance_length"] == pytest.approx(AcceptanceCurve.geometric(0.7).expected_tokens(4),
                                                           rel=0.01)


def test_chunked_prefill_splits_prompts_over_steps():
    # vLLM V1: a 150-token prompt with a 100-token budget takes two steps; its first token comes with the second
    req = Workload(num_prompts=1, input_len=LengthDist("fixed", 150), output_len=LengthDist("fixed", 3)).generate()
    costs = StepCosts(Constant(0.010, prefill_s=0.05))
    cfg = PolicyConfig(max_num_seqs=4, prefill_mode="chunked", max_num_batched_tokens=100)
    m = compute_metrics(simulate("ar", req, cfg, costs))
    assert m["mean_ttft_ms"] == pytest.approx(100.0)
    assert m["makespan_s"] == pytest.approx(0.12)


def test_chunked_sd_shows_tokens_after_the_drafting():
    # vLLM's draft_model SD: the step that completes a prompt also drafts for it; its output (the first
    # token) is visible only when the step, drafting included, is over
    req = Workload(num_prompts=1, input_len=LengthDist("fixed", 10), output_len=LengthDist("fixed", 7)).generate()
    costs = StepCosts(Constant(0.010, prefill_s=0.05), Constant(0.002))
    cfg = PolicyConfig(max_num_seqs=4, num_speculative_tokens=2, prefill_mode="chunked")
    m = compute_metrics(simulate("sd", req, cfg, costs, AcceptanceCurve.geometric(1.0)))
    assert m["mean_ttft_ms"] == pytest.approx(50 + 4)  # prefill, then two drafter forwards
    assert m["makespan_s"] == pytest.approx(0.054 + 2 * 0.014)  # two steps of 3 tokens: verify + draft


def test_chunked_mode_mixes_newcomers_into_decode_steps():
    req = offline(40, prompt=64, output=33)
    cfg = PolicyConfig(max_num_seqs=8, prefill_mode="chunked", max_num_batched_tokens=2048)
    tr = simulate("sd", req, cfg, COSTS, CURVE, details=True)
    mixed = (tr.op_kind == OP_KINDS.index(VERIFY)) & (tr.op_chunk_tokens > 0)
    assert mixed.sum() > 0  # refills ride in verify steps
    assert tr.op_kind.tolist().count(OP_KINDS.index("draft_prefill")) == 0  # no separate drafter prefill
    with pytest.raises(Exception):
        PolicyConfig(prefill_mode="chunky")

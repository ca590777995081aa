"""The theory: symbolic forms against brute-force enumeration, properties, the 37% readings, load, optimal k."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from minedraft.theory import tokens as T
from minedraft.theory.compare import compare
from minedraft.theory.constant import E, M, X, Y, ks, o, symbolic_forms, tau
from minedraft.theory.load import crossover_rate, e2e_under_load, max_rate
from minedraft.theory.optimal_k import free_k, k_schedule, optimal_k
from minedraft.theory.reduction import (
    CERTIFIED_BOXES,
    certify_tuned,
    prove_published,
    prove_same_concurrency,
    prove_unified,
    published_reduction,
    reduction_grid,
    reduction_window,
    same_gpus_window,
    tuned_reduction,
    unified_reduction,
)
from minedraft.theory.serving import Setup, cycle_time, offline, steady
from minedraft.theory.split import (
    affine_coefficients,
    affine_split_threshold,
    prove_split_threshold,
    split_cycles,
    split_pays,
    split_threshold,
    split_threshold_expr,
    swap_coefficients,
)
from minedraft.theory.steps import (
    accepted_pmf,
    expected_steps,
    mean_steps,
    pearl_expected_steps,
    pearl_tokens_per_step,
    steps_second_moment,
    tokens_per_step,
    wald_bounds,
)

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.latency import Affine, Constant, Roofline
from minedraft.ops import DECODE, DRAFT, VERIFY
from minedraft.policies.base import normalize_k_schedule
from minedraft.presets import gpu_spec, model_shape

alphas = st.floats(0.0, 0.99)
k_st = st.integers(1, 8)


@st.composite
def curves(draw, min_len=1, max_len=8):
    cond = draw(st.lists(st.floats(0.0, 1.0), min_size=min_len, max_size=max_len))
    return AcceptanceCurve.from_conditional(cond), cond


# ------------------------------------------------------------------------------- tokens per step
def test_iid_form_is_proven_for_symbolic_k():
    assert T.prove_iid_form()


@pytest.mark.parametrize("kk", range(7))
def test_pmf_mean_equals_the_geometric_closed_form(kk):
    assert sp.simplify(T.pmf_mean_form(kk) - T.iid_form().subs(T.k, kk)) == 0
    assert sp.simplify(sum(T.pmf_form(kk)) - 1) == 0


@given(alphas, k_st)
def test_closed_form_brute_force_and_the_library_agree(a, kk):
    brute = T.brute_force_expected_tokens([a] * kk, kk)
    closed = float(T.iid_form().subs({T.alpha: a, T.k: kk})) if a != 1 else kk + 1
    lib = AcceptanceCurve.geometric(a).expected_tokens(kk)
    assert brute == pytest.approx(closed, rel=1e-12, abs=1e-12)
    assert lib == pytest.approx(closed, rel=1e-12, abs=1e-12)


@given(curves())
def test_per_position_curves_brute_force(curve_cond):
    curve, cond = curve_cond
    for kk in range(curve.positions + 1):
        assert curve.expected_tokens(kk) == pytest.approx(T.brute_force_expected_tokens(cond, kk), abs=1e-12)
    form, r = T.curve_form(curve.positions)
    assert float(form.subs(dict(zip(r, curve.rates)))) == pytest.approx(curve.expected_tokens(curve.positions))


def test_beta_moments_symbolic_and_library():
    # by integration for the first moment, and for every power p via the Beta function:
    # E[alpha^p] = B(a + p, b) / B(a, b) = (a)_p / (a + b)_p
    assert sp.simplify(T.beta_moment_integral(1) - T.beta_moment_form(1)) == 0
    p = sp.Symbol("p", positive=True, integer=True)
    a, b = T.a_beta, T.b_beta
    via_beta = sp.gamma(a + p) * sp.gamma(a + b) / (sp.gamma(a) * sp.gamma(a + b + p))
    assert sp.gammasimp(via_beta - (sp.rf(a, p) / sp.rf(a + b, p)).rewrite(sp.gamma)) == 0
    curve = AcceptanceCurve.beta_mixture(0.7, 5.0, 4)
    for power in (1, 2, 3, 4):
        val = float(T.beta_moment_form(power).subs({a: 3.5, b: 1.5}))
        assert curve.rates[power - 1] == pytest.approx(val, rel=1e-12)


@given(alphas, k_st)
def test_expected_tokens_properties(a, kk):
    c = AcceptanceCurve.geometric(a, 10)
    e = c.expected_tokens(kk)
    assert 1 <= e <= kk + 1 + 1e-12
    assert c.expected_tokens(kk + 1) >= e - 1e-12  # more drafts never lose tokens
    assert AcceptanceCurve.geometric(min(1.0, a + 0.01), 10).expected_tokens(kk) >= e - 1e-12  # monotone in alpha


# ------------------------------------------------------------------------------- steps for finite L
def _enumerate_steps(pmf, n, power=1):
    """E[N^power] by walking every acceptance path (no memo, no recursion formula)."""
    total = 0.0
    stack = [(n, 1.0, 0)]
    while stack:
        left, p, steps = stack.pop()
        if left <= 0:
            total += p * steps**power
            continue
        for a, q in enumerate(pmf):
            if q > 0:
                stack.append((left - 1 - a, p * q, steps + 1))
    return total


@given(curves(max_len=4), st.integers(0, 7))
@settings(max_examples=40)
def test_expected_steps_equals_path_enumeration(curve_cond, n):
    curve, _ = curve_cond
    kk = curve.positions
    pmf = accepted_pmf(curve, kk)
    assert expected_steps(curve, kk, n) == pytest.approx(_enumerate_steps(pmf, n), abs=1e-9)
    assert steps_second_moment(curve, kk, n) == pytest.approx(_enumerate_steps(pmf, n, 2), abs=1e-8)


def _enumerate_pearl(curve, kk, n):
    """PEARL by walking both states' paths: I (probe: +1, valid next iff the guess is right, w.p. r0),
    V (+1+A; valid next iff A = k and the guess of the bonus token is right, w.p. r[k] / r[k-1])."""
    pmf = accepted_pmf(curve, kk)
    p = curve.rates[0]
    guess = curve.rates[kk] / curve.rates[kk - 1] if curve.rates[kk - 1] > 0 else 0.0
    total, stack = 0.0, [(n, 1.0, 0, False)]
    while stack:
        left, pr, steps, valid = stack.pop()
        if left <= 0:
            total += pr * steps
            continue
        if not valid:
            stack += [(left - 1, pr * p, steps + 1, True), (left - 1, pr * (1 - p), steps + 1, False)]
        else:
            for a, q in enumerate(pmf):
                if q > 0 and a < kk:
                    stack.append((left - 1 - a, pr * q, steps + 1, False))
                elif q > 0:
                    stack += [(left - 1 - a, pr * q * guess, steps + 1, True),
                              (left - 1 - a, pr * q * (1 - guess), steps + 1, False)]
    return total


@given(curves(max_len=4), st.integers(0, 7))
@settings(max_examples=40)
def test_pearl_steps_equal_path_enumeration(curve_cond, n):
    curve, _ = curve_cond
    assume(curve.positions >= 2)
    kk = curve.positions - 1  # the guess needs one position beyond the drafts
    assert pearl_expected_steps(curve, kk, n) == pytest.approx(_enumerate_pearl(curve, kk, n), abs=1e-9)


@given(alphas, k_st, st.integers(0, 300))
def test_wald_bounds(a, kk, n):
    c = AcceptanceCurve.geometric(a, 10)
    lo, hi = wald_bounds(c, kk, n)
    m = expected_steps(c, kk, n)
    assert lo - 1e-9 <= m <= hi + 1e-9
    assert expected_steps(AcceptanceCurve.geometric(min(1.0, a + 0.05), 10), kk, n) <= m + 1e-9  # monotone


def test_heterogeneous_steps_average_over_requests():
    het = AcceptanceCurve.beta_mixture(0.7, 4.0, 8)
    draws = np.random.default_rng(0).beta(2.8, 1.2, 4000)
    mc = np.mean([expected_steps(AcceptanceCurve.geometric(float(a), 8), 4, 64) for a in draws[:800]])
    assert mean_steps("sd", het, 4, 64) == pytest.approx(mc, rel=0.03)
    # slots are held longer by hard requests: long-run tokens per step is below the population E[1 + A]
    assert tokens_per_step("sd", het, 4) < het.expected_tokens(4) - 0.1
    homo = AcceptanceCurve.geometric(0.7)
    assert tokens_per_step("sd", homo, 4) == homo.expected_tokens(4)
    assert tokens_per_step("pearl", homo, 4) == pearl_tokens_per_step(homo, 4)


# ------------------------------------------------------------------------------- serving forms
@st.composite
def constant_setups(draw):
    a = draw(st.floats(0.05, 0.95))
    y = draw(st.floats(1.0, 50.0)) / 1e3
    x = draw(st.floats(0.05, 20.0)) / 1e3
    oo = draw(st.sampled_from([0.0, 0.3e-3]))
    tt = draw(st.sampled_from([0.0, 0.1e-3]))
    m = draw(st.integers(1, 64))
    return Setup(AcceptanceCurve.geometric(a), StepCosts(Constant(y), Constant(x), oo, tt), m), x, y, oo, tt


@given(constant_setups(), k_st)
def test_steady_state_equals_the_sympy_closed_forms(s, kk):
    setup, x, y, oo, tt = s
    forms = symbolic_forms()
    e = setup.curve.expected_tokens(kk)
    subs = {X: x, Y: y, o: oo, tau: tt, M: setup.max_num_seqs, E: e, ks: kk}
    for name, policy, su in (("ar", "ar", setup), ("sd", "sd", setup), ("sd_own", "sd", setup.with_(sd_drafter="own")),
                             ("psd_split", "psd", setup.with_(psd_capacity="split")), ("psd", "psd", setup)):
        if name == "psd_split" and setup.max_num_seqs % 2:
            continue  # odd max_num_seqs: unequal halves, not the closed form's
        want = float(forms[name]["throughput"].subs(subs))
        assert steady(policy, su, kk).throughput == pytest.approx(want, rel=1e-12), name
    pe = steady("pearl", setup, kk)
    want = float(forms["pearl"]["throughput"].subs(subs | {E: pearl_tokens_per_step(setup.curve, kk)}))
    assert pe.throughput == pytest.approx(want, rel=1e-12)


@given(constant_setups(), k_st)
def test_psd_ratios_on_each_basis_follow_the_unified_form(s, kk):
    setup, x, y, _, _ = s
    setup = setup.with_(costs=StepCosts(Constant(y), Constant(x)), max_num_seqs=2 * setup.max_num_seqs)
    rho = kk * x / y
    n, out = 4 * setup.max_num_seqs, 65
    pub = compare("sd", "psd", setup, kk, kk, "same_max_num_seqs", n, out)
    assert pub.makespan_reduction == pytest.approx(published_reduction(rho), rel=1e-9, abs=1e-12)
    assert 1 <= pub.throughput_ratio <= 2 + 1e-12
    conc = compare("sd", "psd", setup, kk, kk, "same_concurrency", n, out)  # constant times: phi = 1
    assert conc.makespan_reduction == pytest.approx(unified_reduction(rho, 2.0), rel=1e-9, abs=1e-12)
    assert conc.throughput_ratio <= 1 + 1e-12  # PSD never wins at equal concurrency with constant step times
    gpus = compare("sd", "psd", setup.with_(target_gpus=4), kk, kk, "same_gpus", n, out)
    assert gpus.makespan_reduction == pytest.approx(unified_reduction(rho, 5 / 4), rel=1e-9, abs=1e-12)


@given(st.floats(0.3, 0.95), st.floats(0.0, 30.0), st.floats(0.0, 5.0), st.floats(0.5, 5.0), st.floats(0.0, 0.5),
       st.integers(1, 6), st.integers(1, 32))
def test_same_concurrency_affine_matches_gamma_one_plus_phi(a, at_ms, ad_ms, bt_us, bd_us, kk, half):
    costs = StepCosts(Affine(at_ms / 1e3, bt_us / 1e6), Affine(ad_ms / 1e3, bd_us / 1e6))
    m = 2 * half
    setup = Setup(AcceptanceCurve.geometric(a), costs, m)
    v = compare("sd", "psd", setup, kk, kk, "same_concurrency")
    vh, dh = costs.op_time(VERIFY, half, k=kk), costs.op_time(DRAFT, half, k=kk)
    full = costs.op_time(VERIFY, m, k=kk) + costs.op_time(DRAFT, m, k=kk)
    phi = (at_ms / 1e3 + kk * ad_ms / 1e3) / full
    assert 1 - 1 / v.throughput_ratio == pytest.approx(float(unified_reduction(dh / vh, 1 + phi)), abs=1e-9)
    assert 1 - 1 / v.throughput_ratio <= (1 - phi) / 2 + 1e-9  # reading C's bound


@given(constant_setups(), k_st)
def test_throughput_monotone_in_alpha(s, kk):
    setup = s[0]
    a = setup.curve.rates[0]
    better = setup.with_(curve=AcceptanceCurve.geometric(min(1.0, a + 0.04)))
    for p in ("sd", "psd", "pearl"):
        assert steady(p, better, kk).throughput >= steady(p, setup, kk).throughput * (1 - 1e-12)


def test_offline_makespan_is_exact_steps_times_cycle():
    s = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Constant(0.010), Constant(0.002)), 16)
    off = offline("psd", s, 5, 3200, 129)
    assert off.steps_per_request == expected_steps(s.curve, 5, 128)
    assert off.makespan_s == pytest.approx(3200 / 32 * off.steps_per_request * 2 * 0.010)
    assert off.latency_per_request_s == pytest.approx(off.makespan_s / 3200)


def test_affine_with_no_slope_is_constant():
    a, c = Affine(0.004, 0.0), Constant(0.004)
    for b, n in ((1, 1), (7, 3), (64, 6)):
        assert a.forward_time(b, n, 100.0) == c.forward_time(b, n, 100.0)
    assert Affine(0.001, 1e-5).forward_time(8, 4, 0.0) == pytest.approx(0.001 + 1e-5 * 32)


# ------------------------------------------------------------------------------- the 37% readings
def test_published_reading_is_proven():
    pr = prove_published()
    assert pr["proven"] and pr["window"] == (sp.Rational(37, 63), sp.Rational(63, 37)) and pr["max"] == sp.Rational(1, 2)
    lo, hi = 37 / 63, 63 / 37
    assert published_reduction(lo) == pytest.approx(0.37) and published_reduction(hi) == pytest.approx(0.37)
    assert published_reduction(1.0) == 0.5 and published_reduction(0.5) < 0.37 < published_reduction(0.6)


def test_same_concurrency_and_unified_readings_are_proven():
    assert prove_same_concurrency()["proven"]
    u = prove_unified()
    assert u["proven"] and u["gamma_max"] == sp.Rational(63, 50)
    assert same_gpus_window(4) == sp.Interval(sp.Rational(62, 63), sp.Rational(63, 62))
    assert same_gpus_window(3) == sp.EmptySet
    assert reduction_window(1.27) is None and reduction_window(1.26) is not None


def test_tuned_reading_is_certified_on_the_stated_box_and_fails_outside():
    for a, c, km in CERTIFIED_BOXES:
        cert = certify_tuned(a, c, km)
        assert cert["certified"] and cert["worst_bound"] >= 0.37
    bad = certify_tuned((0.6, 0.95), (0.02, 0.3), 10, max_depth=6)
    assert not bad["certified"]
    assert any(f["centre"] < 0.37 for f in bad["failed"])  # a genuine counterexample, not a loose bound
    assert tuned_reduction(0.8, 0.02)[0] < 0.2  # cheap drafters: little to hide


@given(st.floats(0.6, 0.97), st.floats(0.15, 1.6))
def test_tuned_reading_pointwise_and_against_the_serving_model(a, c):
    red, ksd, kpsd = tuned_reduction(a, c, 10)
    assert red >= 0.37 - 1e-12
    s = Setup(AcceptanceCurve.geometric(a, 10), StepCosts(Constant(0.01), Constant(0.01 * c)), 8)
    assert optimal_k("sd", s) == ksd and optimal_k("psd", s) == kpsd
    ratio = steady("psd", s, kpsd).throughput / steady("sd", s, ksd).throughput
    assert 1 - 1 / ratio == pytest.approx(red, rel=1e-9)


def test_reduction_grid_readings_order():
    rhos, al = np.geomspace(0.05, 5, 12), np.linspace(0.3, 0.95, 6)
    same = reduction_grid(rhos, al, 3, "same_k")
    re = reduction_grid(rhos, al, 3, "psd_tuned")
    assert np.all(re >= same - 1e-12)  # PSD re-tuning k can only help against a fixed SD
    assert np.all(same <= 0.5 + 1e-12)


# ------------------------------------------------------------------------------- optimal k
@given(constant_setups())
@settings(max_examples=60)
def test_psd_optimal_k_is_at_least_the_free_k(s):
    setup = s[0]
    kp, kf = optimal_k("psd", setup), free_k(setup)
    # hidden drafting is free: throughput does not fall up to the free k (ties go to the smaller k)
    thr_p = [steady("psd", setup, k).throughput for k in range(1, 11)]
    assert kp >= kf or thr_p[kp - 1] >= thr_p[kf - 1] * (1 - 1e-9)
    assert all(b >= a * (1 - 1e-12) for a, b in zip(thr_p[:kf], thr_p[1:kf]))
    thr = [steady("sd", setup, k).throughput for k in range(1, 11)]
    assert optimal_k("sd", setup) == int(np.argmax(thr)) + 1


def test_k_schedule_is_valid_and_constant_mode_is_flat():
    s = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Constant(0.01), Constant(0.001)), 32)
    for p in ("sd", "psd", "pearl"):
        sched = k_schedule(p, s)
        assert sched == ((1, 32, optimal_k(p, s)),) or p == "psd"
        assert normalize_k_schedule(sched) == sched
    gpu = gpu_spec("h100")
    roof = StepCosts(Roofline(model_shape("qwen3-32b"), gpu, 4), Roofline(model_shape("qwen3-0.6b"), gpu, 1))
    rs = Setup(AcceptanceCurve.geometric(0.7), roof, 64, target_gpus=4, context_len=384)
    for p in ("sd", "psd"):
        sched = k_schedule(p, rs)
        assert sched[0][0] == 1 and sched[-1][1] == 64
        assert all(a[1] + 1 == b[0] for a, b in zip(sched, sched[1:]))
        ks_ = [k for *_, k in sched]
        assert ks_ == sorted(ks_, reverse=True)  # larger batches: verification costs more, k shrinks
    assert max(k for *_, k in k_schedule("psd", rs)) > max(k for *_, k in k_schedule("sd", rs))


# ------------------------------------------------------------------------------- under load
def test_load_approximation_limits():
    s = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Constant(0.010), Constant(0.0015)), 8)
    m = expected_steps(s.curve, 4, 64)
    low = e2e_under_load("sd", s, 4, 1e-3, 65)
    assert low.e2e_s == pytest.approx(m * 0.016 + 0.008, rel=1e-3)  # alone: m cycles + half a step waiting
    top = max_rate("sd", s, 4, 65)
    assert top == pytest.approx(8 / (m * 0.016))
    es = [e2e_under_load("psd", s, 4, r, 65).e2e_s for r in np.linspace(0.1, 0.95, 8) * max_rate("psd", s, 4, 65)]
    assert all(b >= a - 1e-12 for a, b in zip(es, es[1:]))
    assert not e2e_under_load("sd", s, 4, top * 1.01, 65).stable
    cross = crossover_rate("sd", "psd", s, s, 4, 4, 65)
    assert cross["rate"] is not None and 0 < cross["rate"] < top and not cross["b_better_below"]


def test_roofline_forms_use_the_step_costs():
    gpu = gpu_spec("h100")
    costs = StepCosts(Roofline(model_shape("qwen3-8b"), gpu, 1), Roofline(model_shape("qwen3-0.6b"), gpu, 1))
    s = Setup(AcceptanceCurve.geometric(0.7), costs, 16, context_len=300.0)
    st_ = steady("sd", s, 4)
    want = costs.op_time(DRAFT, 16, k=4, context_len=300.0) + costs.op_time(VERIFY, 16, k=4, context_len=300.0)
    assert st_.cycle_s == pytest.approx(want)
    assert steady("ar", s, 0).cycle_s == pytest.approx(costs.op_time(DECODE, 16, context_len=300.0))
    assert math.isfinite(offline("pearl", s, 4, 100, 64, 256).makespan_s)


def test_enumeration_helper_is_exhaustive():
    # sanity check of the brute-force walker itself on a deterministic case: alpha = 1, k = 2 -> 3 tokens a step
    pmf = accepted_pmf(AcceptanceCurve.geometric(1.0, 2), 2)
    assert _enumerate_steps(pmf, 7) == 3


# ------------------------------------------------------------------------------- when PSD splits (auto)
H200_SHARING = {"shared_gpu_slowdown": 0.313, "shared_verify_stretch": 1.94}  # calibration/data/profiles/h200


def _psd_cycle_through_op_time(setup, k, n, split=True):
    """PSD's cycle spelled out with op_time: halves (split) or one batch, the drafter in its own process."""
    c, ctx, cross = setup.costs, setup.context_len, setup.cross("psd")

    def op(kind, b, swap=False):
        return c.op_time(kind, b, k=k, context_len=ctx, cross_device=cross, own_process=kind == DRAFT, swap=swap)

    h1, h2 = (math.ceil(n / 2), n // 2) if split else (n, 0)
    if h2 == 0:
        return c.step_overhead_s + op(DRAFT, h1) + op(VERIFY, h1)
    pair = lambda a, b: setup.overlapped("psd", op(VERIFY, a, True), op(DRAFT, b), b, k)  # noqa: E731
    return 2 * c.step_overhead_s + pair(h1, h2) + pair(h2, h1)


def _split_setups():
    gpu = gpu_spec("h100")
    affine = StepCosts(Affine(2e-3, 2e-5, 2e-8), Affine(3e-4, 3e-6), 1e-3, 1e-4, 2e-3, 1.8e-5, 1e-7, **H200_SHARING)
    knee = StepCosts(Affine(1.3e-2, 5.7e-5, knee_tokens=128), Affine(1.8e-3, 1.6e-5), 5e-4, 0.0, 2e-3, 1.8e-5)
    roof = StepCosts(Roofline(model_shape("qwen3-8b"), gpu, 1), Roofline(model_shape("qwen3-0.6b"), gpu, 1), 3e-4)
    for costs, ctx in ((affine, 300.0), (knee, 0.0), (roof, 300.0)):
        for drafter in ("own", "shared"):
            yield Setup(AcceptanceCurve.geometric(0.8), costs, 64, context_len=ctx, psd_drafter=drafter)


def test_split_threshold_is_proven():
    proof = prove_split_threshold()
    assert proof["proven"] and all(proof.values())
    o_, v0, v1, d0, d1 = sp.symbols("o v0 v1 d0 d1", positive=True)
    assert split_threshold_expr().free_symbols == {o_, v0, v1, d0, d1}
    assert sp.simplify(split_threshold_expr() - sp.Max((o_ + v0 - d0) / d1, (o_ + d0 - v0) / v1)) == 0


def test_psd_cycle_split_and_one_batch_through_op_time():
    for s in _split_setups():
        for k in (1, 4):
            for n in range(1, 40):
                want = _psd_cycle_through_op_time(s, k, n)
                assert cycle_time("psd", s, k, n) == (want, 1 if n == 1 else 2)  # unchanged, bit for bit
                assert cycle_time("psd", s, k, n, split=True) == cycle_time("psd", s, k, n)
                assert cycle_time("psd", s, k, n, split=False) == (_psd_cycle_through_op_time(s, k, n, False), 1)
            assert cycle_time("sd", s, k, 9, split=False) == cycle_time("sd", s, k, 9)  # psd only


def test_split_cycles_and_threshold_follow_cycle_time():
    for s in _split_setups():
        for k in (1, 4):
            n_max = 129
            split, one = split_cycles(s, k, n_max)
            for n in range(2, n_max + 1):  # the vectorized cycles are cycle_time's, bit for bit
                assert split[n - 2] == cycle_time("psd", s, k, n)[0]
                assert one[n - 2] == cycle_time("psd", s, k, n, split=False)[0]
            pays = [split_pays(s, k, n) for n in range(2, n_max + 1)]
            fails = [n for n, p in zip(range(2, n_max + 1), pays) if not p]
            want = None if not pays[-1] else (fails[-1] + 1 if fails else 2)
            assert split_threshold(s, k, n_max) == want
    s = next(_split_setups())
    assert split_threshold(s, 4) == split_threshold(s, 4, s.capacity("psd"))
    with pytest.raises(Exception, match="must be >= 2"):
        split_pays(s, 4, 1)


def _integer_threshold(n_star, n_cross, n_max):
    """The closed form in integers: even n pays iff n > n*; odd n also needs n > n_cross (its halves are one row
    apart), which is at most n* + 1 without a per-row swap cost, so it can only push an odd first n to the next."""
    first = math.floor(n_star) + 1  # the smallest integer above n*
    if first % 2 and first <= n_cross:
        first += 1
    first = max(first, 2)
    return first if first <= n_max else None


@st.composite
def affine_own_setups(draw, per_row_swap=False):
    target = Affine(draw(st.floats(0.5, 20)) / 1e3, draw(st.floats(0.5, 60)) / 1e6, draw(st.sampled_from([0, 2e-8])))
    drafter = Affine(draw(st.floats(0.02, 3)) / 1e3, draw(st.floats(0.05, 10)) / 1e6)
    costs = StepCosts(target, drafter, draw(st.floats(0, 3)) / 1e3, draw(st.sampled_from([0, 1e-4])),
                      draw(st.sampled_from([0, 2e-3])), draw(st.sampled_from([0, 1.8e-5])),
                      draw(st.floats(0, 0.3)) / 1e6 if per_row_swap else 0.0)
    return Setup(AcceptanceCurve.geometric(0.8), costs, 512, context_len=draw(st.sampled_from([0.0, 400.0]))), \
        draw(st.integers(1, 6))


@given(affine_own_setups())
@settings(max_examples=80)
def test_closed_form_equals_the_numeric_threshold(sk):
    s, k = sk
    o_, a0, a1, b0, b1 = affine_coefficients(s, k)
    w0, w1 = swap_coefficients(s, k)
    n_star = affine_split_threshold(o_, a0, a1, b0, b1, w0, w1)
    assert w1 == pytest.approx(0, abs=1e-15) and w0 == pytest.approx(s.costs.verify_swap_s, abs=1e-15)
    n_cross = 1 + 2 * (o_ + w0) / (a1 + b1)  # odd n: verify the larger half while drafting it again
    assume(all(abs(x - round(x)) > 1e-6 * max(1.0, x) for x in (n_star, n_cross)))  # no float ties
    numeric, want = split_threshold(s, k, 1024), _integer_threshold(n_star, n_cross, 1024)
    if want is None:  # only the bound can differ: 1024 itself (even) may pay while 1023 does not
        assert numeric is None or (numeric == 1024 and n_star < 1024)
    else:
        assert numeric == want
    # the expression is the single source: sympy's value equals the numeric one
    subs = dict(zip(sp.symbols("o v0 v1 d0 d1", positive=True), (o_, a0, a1, b0, b1)))
    if w0 == 0:
        assert float(split_threshold_expr().subs(subs)) == pytest.approx(n_star, rel=1e-9)


def test_balanced_halves_need_one_more_row_at_odd_n():
    # V = D for every b (k = 1, same lines) and o = 10.5 d1: n* = 10.5 on both branches; n = 11 has halves 6 and 5,
    # whose cross term (verify 6 while drafting 6) still loses, so the first n from which splitting pays is 12
    s = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Affine(1e-3, 1e-5), Affine(1e-3, 1e-5), 2.1e-4), 64)
    assert affine_split_threshold(*affine_coefficients(s, 1)) == pytest.approx(10.5)
    assert [split_pays(s, 1, n) for n in (10, 11, 12, 13)] == [False, False, True, True]
    assert split_threshold(s, 1) == 12 == _integer_threshold(10.5, 1 + 10.5, 128)


@given(affine_own_setups(per_row_swap=True))
@settings(max_examples=40)
def test_closed_form_with_a_per_row_swap_cost_decides_even_n(sk):
    s, k = sk
    n_star = affine_split_threshold(*affine_coefficients(s, k), *swap_coefficients(s, k))
    assume(abs(n_star - round(n_star)) > 1e-6 * max(1.0, n_star) if math.isfinite(n_star) else True)
    assert all(split_pays(s, k, n) == (n > n_star) for n in range(2, 400, 2))


def test_affine_coefficients_come_from_op_time():
    costs = StepCosts(Affine(2e-3, 2e-5, 2e-8), Affine(3e-4, 3e-6), 1e-3, 1e-4, 2e-3, 1.8e-5, 1e-7)
    s = Setup(AcceptanceCurve.geometric(0.8), costs, 64, context_len=300.0)
    o_, a0, a1, b0, b1 = affine_coefficients(s, 4)
    w0, w1 = swap_coefficients(s, 4)
    assert o_ == costs.step_overhead_s and w0 == pytest.approx(1.8e-5) and w1 == pytest.approx(1e-7)
    for b in (1, 5, 64, 300):
        assert a0 + a1 * b == pytest.approx(costs.op_time(VERIFY, b, k=4, context_len=300.0, cross_device=True))
        assert b0 + b1 * b == pytest.approx(costs.op_time(DRAFT, b, k=4, context_len=300.0, cross_device=True,
                                                          own_process=True))
    # the transfer lands in v0 and d0 alike (and cancels in n*), the drafter's own process in d0 only
    base = affine_coefficients(s.with_(costs=StepCosts(costs.target, costs.draft, 1e-3)), 4)
    assert a0 - base[1] == pytest.approx(1e-4) and b0 - base[3] == pytest.approx(1e-4 + 2e-3)
    assert affine_split_threshold(*base) == pytest.approx(affine_split_threshold(base[0], base[1] + 1e-4, base[2],
                                                                                 base[3] + 1e-4, base[4]))
    for bad in (s.with_(psd_drafter="shared"),
                s.with_(costs=StepCosts(Affine(2e-3, 2e-5, knee_tokens=64), Affine(3e-4, 3e-6))),
                next(x for x in _split_setups() if isinstance(x.costs.target, Roofline))):
        with pytest.raises(Exception, match="closed form"):
            affine_coefficients(bad, 4)


def test_split_never_pays_without_a_drafter_to_hide_or_with_constant_times():
    curve = AcceptanceCurve.geometric(0.8)
    # a free drafter (nothing to hide behind the verify): the split only adds a step overhead and a fixed verify
    for draft in (Constant(0.0), Affine(0.0, 1e-12)):
        s = Setup(curve, StepCosts(Affine(2e-3, 2e-5), draft, 5e-4), 512)
        assert split_threshold(s, 4, 1024) is None and affine_split_threshold(*affine_coefficients(s, 4)) > 1e6
    # constant step times (the same-concurrency reading with phi = 1): two halves never beat one batch
    for o_, y, x in ((0.0, 0.01, 0.002), (0.0, 0.01, 0.0025), (3e-4, 0.01, 0.01), (0.0, 0.01, 0.05)):
        s = Setup(curve, StepCosts(Constant(y), Constant(x), o_), 512)
        assert split_threshold(s, 4, 1024) is None
        assert affine_split_threshold(*affine_coefficients(s, 4)) == math.inf
    # a drafter as slow as the verify's batch-dependent part: splitting pays from a modest n
    s = Setup(curve, StepCosts(Affine(2e-3, 2e-5), Affine(1e-4, 5e-6), 5e-4), 512)
    n_star = affine_split_threshold(*affine_coefficients(s, 4))
    assert 2 < n_star < 200 and split_threshold(s, 4, 1024) in (math.floor(n_star) + 1, math.floor(n_star) + 2)


@pytest.mark.parametrize("sharing", [H200_SHARING, {"shared_gpu_slowdown": 0.05, "shared_verify_stretch": 0.1}])
def test_a_shared_gpu_never_lowers_the_threshold(sharing):
    for target, drafter in ((Affine(2e-3, 2e-5), Affine(1e-4, 5e-6)), (Affine(1.2e-2, 5.7e-5), Affine(1.8e-3, 1.6e-5)),
                            (Affine(2e-3, 2e-5, 2e-8), Affine(3e-4, 3e-6))):
        costs = StepCosts(target, drafter, 5e-4, 1e-4, 2e-3, 1.8e-5, **sharing)
        own = Setup(AcceptanceCurve.geometric(0.8), costs, 512, context_len=300.0)
        shared = own.with_(psd_drafter="shared")
        for k in (1, 3, 6):
            t_own, t_shared = split_threshold(own, k, 1024), split_threshold(shared, k, 1024)
            assert t_shared is None or (t_own is not None and t_shared >= t_own)
            # pointwise: where two halves pay on one GPU they pay on two (the slowed overlap only hurts)
            s_own, one_own = split_cycles(own, k, 1024)
            s_sh, one_sh = split_cycles(shared, k, 1024)
            assert np.all(~(s_sh < one_sh) | (s_own < one_own))


def test_split_threshold_is_fast():
    import time

    s = Setup(AcceptanceCurve.geometric(0.8), StepCosts(Affine(2e-3, 2e-5), Affine(3e-4, 3e-6), 1e-3, 1e-4, 2e-3), 512)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        split_threshold(s, 4, 1024)
        best = min(best, time.perf_counter() - t0)
    assert best < 0.05  # about 2-3 ms here; generous for a loaded CI machine



def test_auto_split_rows_is_the_threshold_within_one_batch_else_the_full_batch_comparison():
    """PSD auto's threshold: split_threshold up to max_num_seqs where it exists; otherwise two halves beyond one
    batch only if the halves at PSD's capacity outrun one full batch (max_num_seqs + 1), else never (capacity + 1)."""
    from minedraft.theory import auto_split_rows
    from minedraft.theory.serving import cycle_time

    curve = AcceptanceCurve.geometric(0.8)
    cheap = StepCosts(Affine(2e-3, 2e-5), Affine(1e-3, 2e-5), 0.0, 0.0, 2e-3)  # a drafter worth hiding
    s = Setup(curve, cheap, 64)
    assert auto_split_rows(s, 3) == split_threshold(s, 3, n_max=64) is not None
    free = StepCosts(Affine(2e-3, 2e-5), Affine(1e-7, 1e-9), 0.0, 0.0, 0.0)  # nothing to hide: one batch wins
    for m in (8, 64):
        s = Setup(curve, free, m)
        assert split_threshold(s, 3, n_max=m) is None
        halves = 2 * m / cycle_time("psd", s, 3, 2 * m)[0]
        one = m / cycle_time("psd", s, 3, m, split=False)[0]
        assert auto_split_rows(s, 3) == (m + 1 if halves > one else 2 * m + 1)
        assert auto_split_rows(s.with_(psd_capacity="split"), 3) == m + 1  # capacity m: never beyond one batch

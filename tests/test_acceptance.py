"""AcceptanceCurve: conventions shared with vLLM, constructors, sampling, I/O."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minedraft.acceptance import AcceptanceCurve
from minedraft.errors import InputError


def test_geometric_expected_tokens_matches_closed_form():
    for alpha in (0.0, 0.3, 0.8, 0.95):
        c = AcceptanceCurve.geometric(alpha, 8)
        for k in range(0, 9):
            want = (1 - alpha ** (k + 1)) / (1 - alpha)
            assert c.expected_tokens(k) == pytest.approx(want, rel=1e-12)


def test_conditional_is_vllms_unconditional_to_conditional():
    # vLLM: c_i = p_i / p_{i-1}, with 0 when the previous rate is 0.
    c = AcceptanceCurve((0.9, 0.72, 0.36, 0.0, 0.0))
    assert c.conditional == pytest.approx((0.9, 0.8, 0.5, 0.0, 0.0))
    assert AcceptanceCurve.from_conditional(c.conditional[:3]).rates == pytest.approx(c.rates[:3])


def test_mean_length_is_vllms_minimum_variance_schedule():
    # vLLM's _acceptance_length_to_rates(3.5, 5) == [1, 1, 0.5, 0, 0]
    assert AcceptanceCurve.from_mean_length(3.5, 5).rates == (1.0, 1.0, 0.5, 0.0, 0.0)
    assert AcceptanceCurve.from_mean_length(1.0, 3).rates == (0.0, 0.0, 0.0)
    assert AcceptanceCurve.from_mean_length(4.0, 3).rates == (1.0, 1.0, 1.0)
    for length in (1.0, 2.2, 3.7, 6.0):
        assert AcceptanceCurve.from_mean_length(length, 5).expected_tokens(5) == pytest.approx(length)
    with pytest.raises(InputError):
        AcceptanceCurve.from_mean_length(7.0, 5)


def test_from_counts_matches_vllm_metric_definition():
    # vllm:spec_decode_num_accepted_tokens_per_pos[i] / num_drafts is the unconditional rate of position i
    c = AcceptanceCurve.from_counts(200, [180, 144, 90])
    assert c.rates == pytest.approx((0.9, 0.72, 0.45))
    # vLLM's mean acceptance length: 1 + accepted / drafts
    assert c.expected_tokens(3) == pytest.approx(1 + (180 + 144 + 90) / 200)
    with pytest.raises(InputError):
        AcceptanceCurve.from_counts(10, [11])


def test_from_accepted_recovers_rates():
    rng = np.random.default_rng(0)
    c = AcceptanceCurve((0.9, 0.7, 0.5, 0.3))
    a = c.sample(rng, 4, size=200_000)
    est = AcceptanceCurve.from_accepted(a, 4)
    assert est.rates == pytest.approx(c.rates, abs=0.005)


@pytest.mark.parametrize("rates", [(0.9, 0.76, 0.62, 0.5, 0.39), (1.0, 1.0, 0.0), (0.3,)])
def test_sampling_frequencies_follow_rates(rates):
    c = AcceptanceCurve(rates)
    k = len(rates)
    a = c.sample(np.random.default_rng(1), k, size=100_000)
    assert a.min() >= 0 and a.max() <= k
    for j in range(k):  # P(A >= j + 1) = r_j
        assert np.mean(a >= j + 1) == pytest.approx(rates[j], abs=0.006)


def test_sampling_respects_per_request_k():
    c = AcceptanceCurve.geometric(1.0, 6)
    k = np.array([0, 1, 3, 6])
    assert c.sample(np.random.default_rng(0), k).tolist() == [0, 1, 3, 6]


def test_beta_mixture_moments_and_per_request_draws():
    c = AcceptanceCurve.beta_mixture(0.7, 8.0, 6)
    a, b = 0.7 * 8, 0.3 * 8
    assert c.rates[0] == pytest.approx(0.7)
    assert c.rates[1] == pytest.approx(a * (a + 1) / ((a + b) * (a + b + 1)))
    rng = np.random.default_rng(3)
    alphas = c.request_alphas(rng, 200_000)
    assert alphas.mean() == pytest.approx(0.7, abs=0.003)
    acc = c.sample(rng, 6, alphas)
    for j in range(6):  # the population curve is the mixture's
        assert np.mean(acc >= j + 1) == pytest.approx(c.rates[j], abs=0.006)
    # mixing raises mean acceptance over the geometric curve of the same mean (Jensen)
    assert c.expected_tokens(5) > AcceptanceCurve.geometric(0.7).expected_tokens(5)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_json_round_trip(values):
    rates = tuple(sorted(values, reverse=True))
    c = AcceptanceCurve(rates, source="x")
    back = AcceptanceCurve.from_json(json.loads(json.dumps(c.to_json())))
    assert back == c
    het = AcceptanceCurve.beta_mixture(0.6, 5.0, 4)
    assert AcceptanceCurve.from_json(het.to_json()) == het


def test_vllm_rates_round_trip_through_counts():
    c = AcceptanceCurve((0.9, 0.76, 0.62, 0.5, 0.39))
    rates = c.vllm_rates(5)  # what we hand vLLM as synthetic_acceptance_rates
    counts = [round(r * 1000) for r in rates]  # what its per-position counters then report
    assert AcceptanceCurve.from_counts(1000, counts) == c


def test_cli_forms(tmp_path):
    assert AcceptanceCurve.parse("0.8", positions=4).rates == pytest.approx((0.8, 0.64, 0.512, 0.4096))
    assert AcceptanceCurve.parse("0.9, 0.5,0.1").rates == (0.9, 0.5, 0.1)
    p = tmp_path / "c.json"
    AcceptanceCurve((0.9, 0.8)).save(p)
    assert AcceptanceCurve.parse(str(p)).rates == (0.9, 0.8)


@pytest.mark.parametrize("text,needle", [
    ("0.5,0.9", "non-increasing"), ("1.5", "[0, 1]"), ("nan", "[0, 1]"), ("0.5,x", "numbers"),
    ("", "give a number"), ("/no/such.json", "existing file"), ("-0.1", "[0, 1]"),
])
def test_bad_curves_say_why(text, needle):
    with pytest.raises(InputError) as e:
        AcceptanceCurve.parse(text)
    assert needle in str(e.value)


def test_bad_json_files(tmp_path):
    cases = {"empty.json": "", "trunc.json": '{"rates": [0.9, 0.', "list.json": "[0.9]",
             "bad.json": '{"rates": [0.2, 0.9]}', "str.json": '{"rates": ["a"]}', "bin.json": b"\xff\xfe\x00"}
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(InputError) as e:
            AcceptanceCurve.parse(str(p))
        assert "\n" not in str(e.value)


def test_monotone_expected_tokens_in_k_and_alpha():
    prev = None
    for alpha in np.linspace(0, 1, 11):
        c = AcceptanceCurve.geometric(float(alpha), 10)
        e = [c.expected_tokens(k) for k in range(11)]
        assert all(x <= y + 1e-12 for x, y in zip(e, e[1:]))
        assert all(x <= k + 1 + 1e-12 for k, x in enumerate(e))
        if prev is not None:
            assert all(p <= q + 1e-12 for p, q in zip(prev, e))
        prev = e
    assert math.isclose(AcceptanceCurve.geometric(1.0, 5).expected_tokens(5), 6)

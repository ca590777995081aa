"""Latency fits recover known parameters and report held-out error honestly."""

import numpy as np
import pytest

from minedraft.calibration.latency import Points, fit_with_holdout, predict
from minedraft.errors import InputError
from minedraft.latency import Roofline
from minedraft.presets import gpu_spec, model_shape


def _grid(model, noise, seed=0):
    b, n, c = np.meshgrid([1, 2, 4, 8, 16, 32, 64, 128, 256], [1, 2, 4, 6], [128, 512, 1024, 2048], indexing="ij")
    pts = Points(b.ravel().astype(float), n.ravel().astype(float), c.ravel().astype(float), np.ones(b.size))
    t = predict(model, pts) * np.random.default_rng(seed).lognormal(0, noise, b.size)
    return Points(pts.batch, pts.new_tokens, pts.context_len, t)


def test_fit_recovers_known_parameters():
    shape, gpu = model_shape("qwen3-8b"), gpu_spec("h100")
    truth = Roofline(shape, gpu, flop_efficiency=0.45, bandwidth_efficiency=0.7, floor_s=3e-4,
                     floor_per_layer_s=0.0, per_seq_s=4e-6)
    fit = fit_with_holdout(_grid(truth, noise=0.01), shape, gpu)
    m = fit.model
    assert m.flop_efficiency == pytest.approx(0.45, rel=0.1)
    assert m.bandwidth_efficiency == pytest.approx(0.7, rel=0.05)
    assert m.floor_s == pytest.approx(3e-4, rel=0.2)
    assert fit.holdout_median_error < 0.02  # the noise level, on points not fitted
    assert fit.n_holdout + fit.n_train == 144


def test_a_wrong_model_shows_in_the_holdout_error():
    # data from a 32B model fitted with the 0.6B shape: the fit cannot absorb it everywhere
    truth = Roofline(model_shape("qwen3-32b"), gpu_spec("h100"), floor_s=1e-3)
    fit = fit_with_holdout(_grid(truth, noise=0.0), model_shape("qwen3-0.6b"), gpu_spec("h100"))
    assert fit.holdout_max_error > 0.05


def test_bad_points_rejected():
    with pytest.raises(InputError):
        Points(np.ones(3), np.ones(3), np.ones(3), np.array([1.0, -1.0, 1.0]))
    with pytest.raises(InputError):
        fit_with_holdout(Points(np.ones(4), np.ones(4), np.ones(4), np.ones(4)), model_shape("qwen3-8b"),
                         gpu_spec("h100"))

"""Fit step-time models to measured forward times, and say how well they predict unseen points.

A measurement is ``(batch, new_tokens, context_len, seconds)`` for one model at one layout (a
:class:`~minedraft.latency.LatencyProfile` holds a grid of them). The fitted model is the roofline with
its free terms estimated: FLOP and bandwidth efficiencies, a per-forward floor and a per-sequence host
cost (:class:`~minedraft.latency.Roofline` with ``floor_per_layer_s = 0``), by least squares on relative
error. The error is reported on held-out points (a seeded random split), never on the points fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares

from minedraft.errors import require
from minedraft.latency import LatencyProfile, Roofline
from minedraft.presets import GPUSpec, ModelShape


@dataclass(frozen=True)
class Points:
    """Measured forwards: parallel arrays."""

    batch: np.ndarray
    new_tokens: np.ndarray
    context_len: np.ndarray
    seconds: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.seconds)
        require(n > 0, "points", "need at least one measurement")
        require(all(len(a) == n for a in (self.batch, self.new_tokens, self.context_len)), "points",
                "batch, new_tokens, context_len and seconds must have one entry each per measurement")
        require(bool(np.all(np.isfinite(self.seconds) & (self.seconds > 0))), "points.seconds",
                "every time must be finite and > 0")

    def __len__(self) -> int:
        return len(self.seconds)

    def subset(self, idx: np.ndarray) -> Points:
        return Points(self.batch[idx], self.new_tokens[idx], self.context_len[idx], self.seconds[idx])

    @classmethod
    def from_profile(cls, profile: LatencyProfile) -> Points:
        f = profile.forward
        b, n, c = np.meshgrid(f["batch"], f["new_tokens"], f["context_len"], indexing="ij")
        return cls(b.ravel().astype(float), n.ravel().astype(float), c.ravel().astype(float),
                   np.asarray(f["seconds"], dtype=float).ravel())


@dataclass(frozen=True)
class Fit:
    model: Roofline
    train_median_error: float
    holdout_median_error: float
    holdout_max_error: float
    n_train: int
    n_holdout: int

    def summary(self) -> dict:
        m = self.model
        return {"flop_efficiency": m.flop_efficiency, "bandwidth_efficiency": m.bandwidth_efficiency,
                "floor_s": m.floor_s, "per_seq_s": m.per_seq_s, "train_median_abs_rel_error": self.train_median_error,
                "holdout_median_abs_rel_error": self.holdout_median_error,
                "holdout_max_abs_rel_error": self.holdout_max_error, "n_train": self.n_train,
                "n_holdout": self.n_holdout}


def predict(model: Roofline, pts: Points) -> np.ndarray:
    return np.array([model.forward_time(int(b), float(n), float(c))
                     for b, n, c in zip(pts.batch, pts.new_tokens, pts.context_len)])


def _with(base: Roofline, theta: np.ndarray) -> Roofline:
    fe, be, floor, per_seq = theta
    return replace(base, flop_efficiency=float(fe), bandwidth_efficiency=float(be), floor_s=float(floor),
                   floor_per_layer_s=0.0, per_seq_s=float(per_seq))


def fit_roofline(pts: Points, shape: ModelShape, gpu: GPUSpec, tp: int = 1) -> Roofline:
    """Least-squares fit of the roofline's free terms to ``pts`` (relative error)."""
    base = Roofline(shape, gpu, tp)

    def resid(theta: np.ndarray) -> np.ndarray:
        return predict(_with(base, theta), pts) / pts.seconds - 1.0

    x0 = np.array([0.5, 0.7, float(np.min(pts.seconds)) * 0.3, 1e-6])
    lo, hi = [0.01, 0.01, 0.0, 0.0], [1.0, 1.0, float(np.max(pts.seconds)), 1e-3]
    sol = least_squares(resid, x0, bounds=(lo, hi), x_scale=[0.1, 0.1, 1e-4, 1e-6], loss="soft_l1", f_scale=0.05)
    return _with(base, sol.x)


def fit_with_holdout(pts: Points, shape: ModelShape, gpu: GPUSpec, tp: int = 1, holdout: float = 0.25,
                     seed: int = 0) -> Fit:
    """Fit on a random ``1 - holdout`` share of the points; report errors on the rest."""
    require(0 < holdout < 1, "holdout", "must be in (0, 1)", holdout)
    require(len(pts) >= 8, "points", "need at least 8 measurements to fit and hold some out", len(pts))
    idx = np.random.default_rng(seed).permutation(len(pts))
    n_hold = max(2, int(round(holdout * len(pts))))
    hold, train = idx[:n_hold], idx[n_hold:]
    model = fit_roofline(pts.subset(train), shape, gpu, tp)
    err_train = np.abs(predict(model, pts.subset(train)) / pts.seconds[train] - 1)
    err_hold = np.abs(predict(model, pts.subset(hold)) / pts.seconds[hold] - 1)
    return Fit(model, float(np.median(err_train)), float(np.median(err_hold)), float(err_hold.max()),
               len(train), len(hold))

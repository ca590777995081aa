"""Latency models, presets and measured profiles."""

import json

import numpy as np
import pytest

from minedraft.costs import StepCosts
from minedraft.errors import InputError
from minedraft.latency import Constant, LatencyProfile, Roofline, Table
from minedraft.ops import DECODE, DRAFT, DRAFT_PREFILL, PREFILL, VERIFY
from minedraft.presets import gpu_presets, gpu_spec, model_presets, model_shape

PUBLIC_PARAMS = {  # billions, from the model cards (embeddings included)
    "qwen3-0.6b": 0.6, "qwen3-1.7b": 1.7, "qwen3-4b": 4.0, "qwen3-8b": 8.2, "qwen3-14b": 14.8, "qwen3-32b": 32.8,
    "llama-3.1-8b": 8.0, "llama-3.3-70b": 70.6, "vicuna-13b": 13.0, "vicuna-33b": 32.5,
}


def test_every_preset_shape_has_its_public_size():
    assert set(model_presets()) == set(PUBLIC_PARAMS)
    for name, billions in PUBLIC_PARAMS.items():
        assert model_shape(name).num_params / 1e9 == pytest.approx(billions, rel=0.08), name


def test_gpu_presets_and_aliases():
    assert gpu_spec("H100").key == "h100-sxm"
    assert gpu_spec("h200").hbm_bytes_per_s > gpu_spec("h100").hbm_bytes_per_s
    assert {g.key for g in gpu_presets().values()} == {"h100-sxm", "h200", "a100-80gb", "l40s"}
    with pytest.raises(InputError):
        gpu_spec("tpu")


def test_roofline_decode_is_bandwidth_bound_and_scales():
    r = Roofline(model_shape("qwen3-8b"), gpu_spec("h100"))
    t1 = r.forward_time(1, 1, 512)
    weights_s = model_shape("qwen3-8b").num_params * 2 / (3.35e12 * 0.8)
    assert t1 > weights_s * 0.9  # at least the weight read
    assert r.forward_time(64, 1, 512) > t1  # more KV reads
    assert r.forward_time(16, 6, 512) >= r.forward_time(16, 1, 512)
    # large prefills become compute bound: time ~ linear in tokens
    a, b = r.prefill_time(8, 1024), r.prefill_time(16, 1024)
    assert b / a == pytest.approx(2, rel=0.15)
    # tensor parallelism cuts the time of a big model's decode, but less than linearly
    big = model_shape("qwen3-32b")
    t_tp1 = Roofline(big, gpu_spec("h100"), 1).forward_time(16, 1, 1024)
    t_tp4 = Roofline(big, gpu_spec("h100"), 4).forward_time(16, 1, 1024)
    assert t_tp1 / 4 < t_tp4 < t_tp1 / 2
    assert Roofline(big, gpu_spec("h200"), 4).forward_time(16, 1, 1024) < t_tp4
    with pytest.raises(InputError):
        Roofline(big, gpu_spec("h100"), 3)


def _profile(**over):
    d = {"kind": "minedraft.latency_profile", "model": "m", "gpu": "h100", "tensor_parallel_size": 1,
         "forward": {"batch": [1, 8], "new_tokens": [1, 6], "context_len": [0, 1000],
                     "seconds": [[[1e-3, 2e-3], [3e-3, 4e-3]], [[5e-3, 6e-3], [7e-3, 8e-3]]]},
         "prefill": {"batch": [1, 4], "prompt_len": [128, 512], "seconds": [[0.01, 0.02], [0.03, 0.05]]}}
    d.update(over)
    return d


def test_table_interpolates_and_clamps(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(_profile()))
    t = Table(LatencyProfile.load(p))
    assert t.forward_time(1, 1, 0) == pytest.approx(1e-3)
    assert t.forward_time(8, 6, 1000) == pytest.approx(8e-3)
    assert t.forward_time(4.5, 1, 0) == pytest.approx(3e-3)  # halfway in batch
    assert t.forward_time(4.5, 3.5, 500) == pytest.approx(4.5e-3)  # centre of the cube
    assert t.forward_time(100, 1, 0) == pytest.approx(5e-3)  # clamped
    assert t.prefill_time(4, 512) == pytest.approx(0.05)
    LatencyProfile.from_json(json.loads(json.dumps(LatencyProfile.from_json(_profile()).to_json())))


@pytest.mark.parametrize("over,needle", [
    ({"kind": "x"}, "kind"),
    ({"forward": {"batch": [8, 1], "new_tokens": [1], "context_len": [0], "seconds": [[[1]], [[1]]]}}, "increasing"),
    ({"forward": {"batch": [1, 8], "new_tokens": [1], "context_len": [0], "seconds": [[[1]]]}}, "shape"),
    ({"forward": {"batch": [1], "new_tokens": [1], "context_len": [0], "seconds": [[[-1]]]}}, "> 0"),
    ({"tensor_parallel_size": 0}, "integer"),
])
def test_bad_profiles_rejected(over, needle):
    with pytest.raises(InputError) as e:
        LatencyProfile.from_json(_profile(**over))
    assert needle in str(e.value)


def test_step_costs_compose_forwards():
    c = StepCosts(Constant(0.010, 0.05), Constant(0.002, 0.01), step_overhead_s=0.001, transfer_s=0.0005)
    assert c.op_time(VERIFY, 16, k=5) == pytest.approx(0.010)
    assert c.op_time(VERIFY, 16, k=5, cross_device=True) == pytest.approx(0.0105)
    assert c.op_time(DRAFT, 16, k=5) == pytest.approx(0.010)  # five forwards of 2 ms
    assert c.op_time(DRAFT, 16, k=1) == pytest.approx(0.002)
    assert c.op_time(DECODE, 16) == pytest.approx(0.010)
    assert c.op_time(PREFILL, 4, prompt_len=100) == pytest.approx(0.05)
    assert c.op_time(DRAFT_PREFILL, 4, prompt_len=100) == pytest.approx(0.01)
    r = Roofline(model_shape("qwen3-0.6b"), gpu_spec("h100"))
    rc = StepCosts(r, r)
    first, rest = r.forward_time(8, 4, 300), r.forward_time(8, 1, 300)
    assert rc.op_time(DRAFT, 8, k=3, context_len=300) == pytest.approx(first + 2 * rest)
    assert np.isfinite(rc.op_time(VERIFY, 8, k=3, context_len=300))

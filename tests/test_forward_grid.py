"""minedraft-calibrate grid: a forward-time grid measured on vLLM (LatencyProfile) and the roofline fitted to it.

The default suite checks the flags (one-line errors before vLLM is imported), the KV checks and the --from fit
on a synthetic profile. The fit's own accuracy is tests/test_calibration_latency.py's; here the point is the
path through a profile file: grid -> JSON -> shape from the profile's provenance -> the same fit.

The ``vllm`` test measures a small grid for real on vLLM's CPU build, in a fresh Python through the CLI: the
measurement shuts its engine down at the end, and closing an in-process engine tears down vLLM's distributed
state under the session engines of the other vLLM test files, so it runs where it cannot touch them.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import invoke
from minedraft.calibration.forward_grid import (
    Grid,
    check_kv_blocks,
    check_kv_bytes,
    fit_profile,
    parse_axis,
    profile_of,
    profile_shape,
)
from minedraft.cli.calibrate import main
from minedraft.errors import InputError
from minedraft.latency import LatencyProfile, Roofline, Table
from minedraft.presets import ModelShape, gpu_spec, model_shape


def _grid(**kw):
    base = {"batch": (1, 2, 4, 8, 16, 32, 64, 128, 256), "new_tokens": (1, 2, 4, 6), "context": (128, 512, 1024),
            "prompt_len": (128, 512), "prefill_batch": (1, 2, 4, 8)}
    return Grid(**(base | kw))


# ------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize("args, line", [
    (["--batch", "1,x"], "error: --batch: must be a comma list of integers in [1, 4096]; got 1,x"),
    (["--batch", "0,4"], "error: --batch: must be a comma list of integers in [1, 4096]; got 0,4"),
    (["--batch", ""], "error: --batch: must be a comma list of integers in [1, 4096]; got "),
    (["--new-tokens", "0,1"], "error: --new-tokens: must be a comma list of integers in [1, 256]; got 0,1"),
    (["--repeats", "0"], "error: --repeats: must be an integer in [1, 1000]; got 0"),
    (["--batch", "1024", "--new-tokens", "16"], ("error: --batch: the largest batch x the most new tokens (1024 x 16) "
                                                 "must fit one forward's 8192 tokens (--max-num-batched-tokens); got "
                                                 "16384")),
    (["--prefill-batch", "8", "--prompt-len", "2048"], ("error: --prompt-len: the largest prefill batch x the longest "
                                                        "prompt (8 x 2048)")),
    (["--context", "8000"], ("error: --context: context + new tokens + 1 (and prompt length + 1) must fit the "
                             "model's 4096 positions; got 8007")),
    (["--fit"], "error: --fit: needs --gpu"),
    (["--fit", "--gpu", "h100", "--batch", "1", "--new-tokens", "1"], "error: --fit: needs at least 8 forward points"),
    (["--gpu", "h1000"], "error: --gpu: must be one of"),
    (["--dtype", "fp4"], "error: --dtype: must be one of auto, bfloat16, float16, float32, half, float; got fp4"),
    (["--cudagraph-mode", "full-ish"], ("error: --cudagraph-mode: must be one of NONE, PIECEWISE, FULL, FULL_DECODE_ONLY, "
                                        "FULL_AND_PIECEWISE; got full-ish")),
])
def test_bad_flags_give_one_line_before_vllm_is_needed(tmp_path, capsys, args, line):
    code, out, err = invoke(main, ["grid", "--model", "tiny", "--out", str(tmp_path / "p.json"), *args], capsys)
    assert code == 2 and out == ""
    assert err.startswith(line) and err.count("\n") == 1, err


def test_kv_budget_is_checked_before_the_engine_starts(tmp_path, capsys):
    # Qwen3-8B: 36 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 147456 bytes per token
    code, _, err = invoke(main, ["grid", "--model", "qwen3-8b", "--kv-cache-memory-gib", "30", "--out",
                                 str(tmp_path / "p.json")], capsys)
    assert code == 2 and err == ("error: --kv-cache-memory-gib: must hold 256 rows x 1030 tokens (36.21 GiB at 147456 "
                                 "bytes per token); shrink --batch or --context, or raise it; got 30 GiB (218453 "
                                 "tokens)\n")


def test_kv_checks_count_rows_and_blocks():
    g = _grid()
    assert g.kv_rows() == [(256, 1030), (8, 512)] and g.kv_tokens() == 256 * 1030
    assert g.kv_blocks(16) == 256 * 65 and g.max_model_len == 1031 and g.max_num_seqs == 256
    check_kv_blocks(g, 256 * 65 + 1, 16, "--gpu-memory-utilization")  # block 0 is vLLM's null block
    with pytest.raises(InputError) as e:
        check_kv_blocks(g, 256 * 65, 16, "--gpu-memory-utilization")
    assert e.value.line() == ("--gpu-memory-utilization: the engine's KV cache must hold 256 rows x 1030 tokens (16640 "
                              "blocks of 16); shrink --batch or --context, or give the KV cache more memory; got 16639 "
                              "blocks")
    shape = model_shape("qwen3-8b")
    check_kv_bytes(g, 256 * 1030 * shape.kv_bytes_per_token, shape)
    with pytest.raises(InputError):
        check_kv_bytes(g, 256 * 1030 * shape.kv_bytes_per_token - 1, shape)
    # the prefill grid can be the larger one
    big = _grid(batch=(1,), new_tokens=(1,), context=(16,), prompt_len=(4096,), prefill_batch=(2,))
    assert big.kv_rows()[-1] == (2, 4096) and big.kv_blocks(128) == 64


def test_axes_parse_sorted_and_grid_rejects_bad_axes():
    assert parse_axis("4, 1,2,2", "batch", 1, 10) == (1, 2, 4)
    with pytest.raises(InputError, match="^context: must be a comma list"):
        parse_axis("-1", "context", 0, 10)
    with pytest.raises(InputError, match="^batch: must be strictly increasing"):
        Grid((4, 2), (1,), (8,))
    with pytest.raises(InputError, match="^warmup: "):
        Grid((1,), (1,), (8,), warmup=-1)


# ------------------------------------------------------------------------------- --from fit
def test_from_fits_a_profile_file_written_from_a_known_roofline(tmp_path, capsys):
    shape, gpu = model_shape("qwen3-8b"), gpu_spec("h100")
    truth = Roofline(shape, gpu, flop_efficiency=0.45, bandwidth_efficiency=0.7, floor_s=3e-4, floor_per_layer_s=0.0,
                     per_seq_s=4e-6)
    g = _grid(context=(128, 512, 1024, 2048))
    # named by the device, with the config in its provenance, as `grid` writes it
    path = tmp_path / "p.json"
    profile_of(truth, g, "qwen3-8b", "NVIDIA H100 80GB HBM3", {"model_config": {**shape_config(shape)}}).save(path)
    loaded = LatencyProfile.load(path)
    assert profile_shape(loaded) == ModelShape.from_hf_config(shape_config(shape), name="qwen3-8b")
    fit = fit_profile(loaded, profile_shape(loaded), gpu)
    assert fit.model.bandwidth_efficiency == pytest.approx(0.7, rel=0.02)
    assert fit.model.floor_s == pytest.approx(3e-4, rel=0.05) and fit.holdout_max_error < 1e-3
    assert Table(loaded).forward_time(64, 4, 1024) == pytest.approx(truth.forward_time(64, 4, 1024), rel=1e-12)

    code, out, err = invoke(main, ["grid", "--from", str(path), "--gpu", "h100"], capsys)
    assert code == 0 and err == ""
    assert "roofline fitted to the forward grid of qwen3-8b on NVIDIA H100 80GB HBM3 (TP 1) with h100-sxm's " \
           "datasheet figures" in out and "36 of 144 points held out" in out
    assert f"{fit.model.bandwidth_efficiency:.3f}" in out and "held-out |error| max" in out
    # the device's name is no preset: --gpu is needed; measuring flags are refused
    code, _, err = invoke(main, ["grid", "--from", str(path)], capsys)
    assert code == 2 and err.startswith("error: --gpu: is needed: the profile's GPU is not a GPU preset")
    code, _, err = invoke(main, ["grid", "--from", str(path), "--gpu", "h100", "--batch", "1,2"], capsys)
    assert code == 2 and err == "error: --batch: measures a grid; --from only fits an existing profile; got 1,2\n"


def test_from_without_a_model_config_uses_the_preset_and_the_profiles_gpu(tmp_path, capsys):
    truth = Roofline(model_shape("qwen3-0.6b"), gpu_spec("h200"), floor_s=2e-4, floor_per_layer_s=0.0)
    path = tmp_path / "p.json"
    profile_of(truth, _grid(prompt_len=()), "qwen3-0.6b", "h200").save(path)
    code, out, _ = invoke(main, ["grid", "--from", str(path)], capsys)
    assert code == 0 and "qwen3-0.6b on h200 (TP 1), from" in out
    profile_of(truth, _grid(prompt_len=()), "my-model", "h200").save(path)
    code, _, err = invoke(main, ["grid", "--from", str(path)], capsys)
    assert code == 2 and err.startswith("error: --from: needs provenance.model_config or a model preset name")

def test_fit_new_tokens_fits_one_graph_regime_and_rejects_unmeasured_counts(tmp_path, capsys):
    """As measured on an H200: n = 1 runs under full CUDA graphs, n > 1 under piecewise ones with a fixed host cost
    on top. Fitting every column mixes the regimes; fitting n = 1 recovers the one-token roofline."""
    shape, gpu = model_shape("qwen3-8b"), gpu_spec("h200")
    truth = Roofline(shape, gpu, flop_efficiency=0.5, bandwidth_efficiency=0.85, floor_s=3e-3, floor_per_layer_s=0.0,
                     per_seq_s=1.5e-5)
    p = profile_of(truth, _grid(prompt_len=()), "qwen3-8b", "h200")
    cols = list(p.forward["new_tokens"])
    p.forward["seconds"] = [[[t + (0.0 if cols[j] == 1 else 7e-3) for t in row] for j, row in enumerate(b)]
                            for b in p.forward["seconds"]]
    path = tmp_path / "p.json"
    p.save(path)
    loaded = LatencyProfile.load(path)
    one = fit_profile(loaded, shape, gpu, new_tokens=(1,))
    assert one.model.bandwidth_efficiency == pytest.approx(0.85, rel=0.02)
    assert one.model.floor_s == pytest.approx(3e-3, rel=0.05) and one.holdout_max_error < 1e-3
    assert one.n_train + one.n_holdout == 9 * 3
    mixed = fit_profile(loaded, shape, gpu)
    assert mixed.holdout_median_error > 10 * one.holdout_median_error + 0.01

    code, out, _ = invoke(main, ["grid", "--from", str(path), "--fit-new-tokens", "1"], capsys)
    assert code == 0 and "forward grid (new tokens 1) of qwen3-8b" in out and "7 of 27 points held out" in out
    code, _, err = invoke(main, ["grid", "--from", str(path), "--fit-new-tokens", "1,3"], capsys)
    assert code == 2 and err == ("error: --fit-new-tokens: names new-token counts the profile did not measure "
                                 "(it has 1,2,4,6); got 3\n")
    code, _, err = invoke(main, ["grid", "--model", "tiny", "--out", str(tmp_path / "x.json"),
                                 "--fit-new-tokens", "1"], capsys)
    assert code == 2 and err.startswith("error: --fit-new-tokens: selects what --fit fits")



def shape_config(shape: ModelShape) -> dict:
    return {"hidden_size": shape.hidden_size, "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_layers, "num_attention_heads": shape.num_heads,
            "num_key_value_heads": shape.num_kv_heads, "head_dim": shape.head_dim, "vocab_size": shape.vocab_size,
            "tie_word_embeddings": shape.tie_word_embeddings, "torch_dtype": "bfloat16"}


def test_the_cli_and_the_grid_module_import_without_vllm_or_torch():
    code = ("import sys, minedraft.cli.calibrate, minedraft.calibration.forward_grid; "
            "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert p.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- real vLLM (CPU)
@pytest.mark.vllm
def test_grid_measures_a_tiny_model_on_vllm(tmp_path):
    out = tmp_path / "tiny.json"
    args = ["grid", "--model", "tiny", "--gpu", "h100", "--batch", "1,2", "--new-tokens", "1,2", "--context", "32,64",
            "--prompt-len", "16", "--prefill-batch", "1,2", "--repeats", "2", "--warmup", "1", "--fit",
            "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_LOGGING_LEVEL="ERROR")
    p = subprocess.run([sys.executable, "-m", "minedraft.cli.calibrate", *args], env=env, capture_output=True,
                       text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "measured 8 forward points and 2 prefill points of tiny" in p.stdout
    assert "held-out |error| median" in p.stdout
    prof = LatencyProfile.load(out)
    f, pv = prof.forward, prof.provenance
    assert (f["batch"], f["new_tokens"], f["context_len"]) == ([1, 2], [1, 2], [32, 64])
    assert prof.prefill["batch"] == [1, 2] and prof.prefill["prompt_len"] == [16]
    secs = [s for b in f["seconds"] for n in b for s in n] + [s for b in prof.prefill["seconds"] for s in b]
    assert all(s > 0 for s in secs)
    assert (prof.model, prof.gpu, prof.tensor_parallel_size) == ("tiny", "h100-sxm", 1)
    assert pv["vllm"] == "0.32.0" and pv["device"] == "cpu" and pv["torch"] and pv["date"]
    assert pv["model_config"]["num_hidden_layers"] == 2 and pv["enforce_eager"] is True
    assert pv["command"].startswith("minedraft-calibrate grid --model tiny")
    assert len(pv["samples_s"]["forward"][1][1][1]) == 2  # every timed forward kept
    # the rolled-back forwards recompute the same positions: the same greedy tokens every time
    assert pv["rollback_token_agreement"] == 1.0
    t = Table(prof)
    assert min(secs) <= t.forward_time(2, 2, 48) <= max(secs) and t.prefill_time(1, 16) > 0
    assert profile_shape(prof).num_layers == 2
    assert json.loads(out.read_text())["kind"] == "minedraft.latency_profile"

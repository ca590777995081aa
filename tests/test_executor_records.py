"""The executor's pure parts (no vLLM needed): step rows -> op records, request timelines, the wall-clock
check, resuming a killed trace, model resolution, and minedraft-exec's flag checks before vLLM loads."""

import json

import numpy as np
import pytest

from minedraft.cli.common import run_cli
from minedraft.cli.exec import EXEC_POLICIES as CLI_POLICIES
from minedraft.cli.exec import main as exec_main
from minedraft.errors import InputError
from minedraft.executor.engine import Job, prompt_tokens
from minedraft.executor.models import check_pair, resolve_model, tiny_qwen3_config
from minedraft.executor.records import (
    RequestLog,
    Row,
    ScheduledStep,
    check_fingerprint,
    compact_for_resume,
    op_record,
    scan_trace,
    throughput_check,
)
from minedraft.executor.run import EXEC_POLICIES
from minedraft.metrics import compute_metrics
from minedraft.presets import model_config
from minedraft.trace import read_records, trace_from_records

IDS = {"a-x": 0, "b-x": 1, "c-x": 2}


def test_rows_are_decode_only_after_the_prompt_with_one_token_plus_drafts():
    assert Row("a", 4, 3, 40, 40).is_decode  # verify: last token + 3 drafts
    assert Row("a", 1, 0, 41, 40).is_decode  # AR decode
    assert not Row("a", 40, 0, 0, 40).is_decode  # whole prompt
    assert not Row("a", 16, 0, 16, 40).is_decode  # a later prompt chunk
    assert not Row("a", 1, 0, 39, 40).is_decode  # the last prompt chunk, one token long
    assert not Row("a", 50, 0, 0, 40).is_decode  # recomputation after preemption (prompt + outputs)


def test_prefill_only_step():
    step = ScheduledStep([Row("a-x", 40, 0, 0, 40), Row("b-x", 8, 0, 0, 8)], 48)
    rec = op_record("sd", step, IDS, 1.0, 1.5, 0, speculative=True)
    assert rec["op"] == "prefill" and rec["request_ids"] == [0, 1] and rec["size"] == 2
    assert rec["prefill_tokens"] == 48 and rec["scheduled_tokens"] == 48 and "accepted" not in rec
    assert "mixed" not in rec


def test_verify_step_keeps_vllm_accept_counts_and_uneven_lengths():
    step = ScheduledStep([Row("a-x", 4, 3, 50, 40), Row("b-x", 3, 2, 60, 40)], 7,
                         accepted={"a-x": (3, 3), "b-x": (2, 1)})
    rec = op_record("sd", step, IDS, 2.0, 2.1, 5, speculative=True, accepted_per_pos=[2, 1, 1])
    assert rec["op"] == "verify" and rec["k"] == 3 and rec["accepted"] == [3, 1]
    assert rec["verify_lengths"] == [3, 2] and rec["drafted_tokens"] == 5 and rec["accepted_tokens"] == 4
    assert rec["accepted_per_pos"] == [2, 1, 1] and rec["step"] == 5


def test_mixed_step_names_decode_rows_as_the_op_and_prompt_rows_beside():
    step = ScheduledStep([Row("a-x", 1, 0, 45, 40), Row("b-x", 1, 0, 41, 40), Row("c-x", 30, 0, 0, 30)], 32,
                         preempted=["zzz", "c-x"])
    rec = op_record("ar", step, IDS, 0.0, 0.01, 1, speculative=False)
    assert rec["op"] == "decode" and rec["request_ids"] == [0, 1] and rec["size"] == 2 and rec["batch_size"] == 3
    assert rec["mixed"] and rec["prefill_request_ids"] == [2] and rec["prefill_tokens"] == 30
    assert rec["preempted"] == [2]  # unknown ids (warm-up requests) are left out


def test_steps_with_none_of_our_requests_write_nothing():
    assert op_record("ar", ScheduledStep([Row("warmup-1-x", 8, 0, 0, 8)], 8), IDS, 0, 1, 0, False) is None
    assert op_record("ar", ScheduledStep([], 0), IDS, 0, 1, 0, False) is None


def test_request_log_first_token_and_tokens_per_step():
    lg = RequestLog(3, 0.5, 32, 9)
    lg.gained(0, 0.7)
    lg.gained(1, 1.0)
    lg.gained(4, 1.5)
    lg.gained(4, 2.0)
    lg.finish = 2.0
    rec = lg.record("sd")
    assert rec["first_token"] == 1.0 and rec["output_len"] == 9 and rec["tokens_per_step"] == [1, 4, 4]
    assert rec["arrival"] == 0.5 and rec["request_id"] == 3


def test_throughput_check():
    ok = throughput_check(100.0, 1000, 10.05)
    assert ok["ok"] and ok["rel_diff"] == pytest.approx(0.005, rel=1e-3)
    bad = throughput_check(100.0, 1000, 11.0)
    assert not bad["ok"] and bad["rel_diff"] > 0.01


def test_prompts_are_reproducible_and_in_vocabulary():
    a, b = prompt_tokens(7, 3, 50, 1024), prompt_tokens(7, 3, 50, 1024)
    assert a == b and len(a) == 50 and all(10 <= t < 1014 for t in a)
    assert prompt_tokens(7, 4, 50, 1024) != a


def test_job_sorts_by_arrival():
    job = Job(np.array([0, 1, 2]), np.array([0.3, 0.1, 0.2]), np.array([5, 6, 7]), np.array([1, 2, 3]))
    assert job.ids.tolist() == [1, 2, 0] and job.prompt_len.tolist() == [6, 7, 5]


# ------------------------------------------------------------------------------------ resume
def _killed_trace(path):
    lines = [
        {"type": "header", "schema": "minedraft.trace/1", "policy": "sd", "num_gpus": 1,
         "config": {"fingerprint": {"k": 3}}},
        {"type": "op", "policy": "sd", "op": "prefill", "resource": "target", "batch_id": 0,
         "request_ids": [0, 1, 2], "k": 0, "t_start": 0.0, "t_end": 0.1, "size": 3},
        {"type": "op", "policy": "sd", "op": "verify", "resource": "target", "batch_id": 0,
         "request_ids": [0, 1, 2], "k": 3, "accepted": [3, 1, 2], "t_start": 0.1, "t_end": 0.2, "size": 3},
        {"type": "request", "policy": "sd", "request_id": 1, "arrival": 0.0, "first_token": 0.1, "finish": 0.2,
         "prompt_len": 8, "output_len": 3, "tokens_per_step": [1, 2]},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"type":"op","policy":"sd","op":"ver'
    path.write_text(text)


def test_resume_drops_rows_of_unfinished_requests_and_the_torn_line(tmp_path):
    path = tmp_path / "t.jsonl"
    _killed_trace(path)
    records, progress = scan_trace(path)
    assert progress["sd"].finished == {1} and progress["sd"].t_end == pytest.approx(0.2)
    assert progress["sd"].has_header and progress["sd"].fingerprint == {"k": 3}
    assert compact_for_resume(path, records, progress) == 4
    recs = list(read_records(path))
    assert path.read_text().endswith("}\n")  # the torn line is gone
    verify = [r for r in recs if r.get("op") == "verify"][0]
    assert verify["request_ids"] == [1] and verify["accepted"] == [1] and verify["dropped_rows"] == 2
    m = compute_metrics(trace_from_records(recs)["sd"])
    assert m["completed"] == 1 and m["mean_acceptance_length"] == pytest.approx(2.0)


def test_resume_refuses_a_trace_of_other_settings(tmp_path):
    path = tmp_path / "t.jsonl"
    _killed_trace(path)
    _, progress = scan_trace(path)
    check_fingerprint(progress, {"k": 3}, str(path))
    with pytest.raises(InputError) as exc:
        check_fingerprint(progress, {"k": 5}, str(path))
    assert exc.value.field == "--resume" and "k" in exc.value.allowed


# ------------------------------------------------------------------------------------ models
def test_preset_becomes_a_dummy_directory(tmp_path):
    m = resolve_model("Qwen3-0.6B", "--target", tmp_path)
    assert m.load_format == "dummy" and m.label == "qwen3-0.6b"
    assert json.loads((tmp_path / "qwen3-0.6b" / "config.json").read_text()) == model_config("qwen3-0.6b")
    assert m.vocab_size == 151936


def test_config_dict_and_directories(tmp_path):
    cfg = tiny_qwen3_config()
    a, b = resolve_model(cfg, "--target", tmp_path), resolve_model(dict(cfg), "--draft", tmp_path)
    assert a.path == b.path and a.load_format == "dummy" and a.vocab_size == 1024
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    assert resolve_model(str(d), "--target").load_format == "dummy"
    (d / "model.safetensors").write_bytes(b"\0")
    m = resolve_model(str(d), "--target")
    assert m.load_format == "auto" and m.path == str(d.resolve())


def test_bad_models(tmp_path):
    with pytest.raises(InputError) as exc:
        resolve_model("no-such-model", "--draft", tmp_path)
    assert exc.value.field == "--draft"
    with pytest.raises(InputError) as exc:
        resolve_model({"hidden_size": 3}, "--target", tmp_path)
    assert exc.value.field == "--target"
    with pytest.raises(InputError) as exc:
        check_pair(resolve_model("qwen3-8b", "--target", tmp_path), resolve_model("llama-3.1-8b", "--draft", tmp_path))
    assert exc.value.field == "--draft" and "vocabulary" in exc.value.allowed


# --------------------------------------------------------------------------- CLI, before vLLM
def _run(args, capsys):
    try:
        code = run_cli(exec_main, args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, flag", [
    (["--policy", "tetris"], "--policy"),
    (["--policy", "ar,ar"], "--policy"),
    (["--resume"], "--resume"),
    (["--trace", "-"], "--trace"),
    (["--psd-capacity", "triple"], "--psd-capacity"),
    (["--drafter-device", "gpu7"], "--drafter-device"),
    (["--sd-drafter", "gpu"], "--sd-drafter"),
    (["--psd-drafter", "shared"], "--psd-drafter"),
    (["--shared-gpu-slowdown", "0.2"], "--shared-gpu-slowdown"),
    (["--shared-verify-stretch", "1.3"], "--shared-verify-stretch"),
    (["--policy", "sd", "--sd-drafter", "own", "--prefill-mode", "chunked"], "--prefill-mode"),
    (["--tetris-extra-proposals", "2"], "--tetris-extra-proposals"),
    (["--accept-concentration", "5"], "--accept-concentration"),
    (["--enforce-eager", "maybe"], "--enforce-eager"),
    (["--kv-cache-memory-gib", "-1"], "--kv-cache-memory-gib"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    (["--temperature", "nan"], "--temperature"),
    (["--warmup", "x"], "--warmup"),
    (["--dtype", "int3"], "--dtype"),
    (["-k", "0"], "--num-speculative-tokens"),
    (["--target", "no-such-model"], "--target"),
    (["--draft", "llama-3.1-8b"], "--draft"),
    (["--accept-curve", "1.5"], "--accept-curve"),
    (["--max-num-seqs", "0"], "--max-num-seqs"),
])
def test_bad_flags_fail_in_one_line_before_vllm_loads(args, flag, capsys):
    code, out, err = _run(args + ["--num-prompts", "2", "--input-len", "8", "--output-len", "4"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}:"), err
    assert "Traceback" not in err and out == ""


def test_cli_and_library_agree_on_policies():
    assert CLI_POLICIES == EXEC_POLICIES == ("ar", "sd", "psd", "pearl")


def test_warmup_shrinks_the_batch_to_one_row():
    """Warm-up requests of staggered lengths: the batch passes through every size down to one row (the first
    one-row step of vLLM's SD stalled 0.75-1.25 s inside timed runs when warm-up requests all finished together)."""
    from types import SimpleNamespace

    from minedraft.executor.engine import Engine

    lengths: list[int] = []
    fake = SimpleNamespace(spec=SimpleNamespace(target=SimpleNamespace(vocab_size=1000)), _n=0,
                           _add=lambda tag, tokens, max_tokens, temperature: lengths.append(max_tokens),
                           engine=SimpleNamespace(has_unfinished_requests=lambda: False), _drain=lambda: None)
    Engine.warmup(fake, 8, 16, 32)
    assert lengths == [4, 8, 12, 16, 20, 24, 28, 32]  # 8 rows, then 7, ..., then one row alone for 4 tokens
    lengths.clear()
    Engine.warmup(fake, 3, 16, 2)
    assert lengths == [1, 1, 2]  # never below one token
    lengths.clear()
    Engine.warmup(fake, 0, 16, 32)
    assert lengths == []

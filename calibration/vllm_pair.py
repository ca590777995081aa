"""Run a draft/target pair through vLLM's own speculative decoding and dump its spec-decode metrics.

This is the cross-check of :mod:`minedraft.calibration.speculative`: the same prompts (as token ids, cut to
the same length), the same k, temperature and output length, but vLLM's engine (``method="draft_model"``)
and its rejection sampler. It writes what a user of ``minedraft-calibrate acceptance --vllm-metrics``
would have: a JSON dump of ``llm.get_metrics()`` and the Prometheus text of the same registry. Both
files double as realistic examples and test fixtures (``calibration/data/examples``).

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv-vllm/bin/python -m minedraft.calibration.vllm_pair \\
        --num-prompts 64 -k 8 --max-tokens 128 --temperature 0 --out-dir calibration/data/examples

then ``minedraft-calibrate acceptance --vllm-metrics calibration/data/examples/vllm_pair_greedy_k8.json``.
vLLM runs in float32 on the CPU with one thread (``VLLM_CPU_OMP_THREADS_BIND``), as our torch loop does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # metrics live in this process
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def run(target: Path, draft: Path, prompts: list[str], k: int, temperature: float, max_tokens: int, seed: int,
        prompt_tokens: int | None, threads: int, draft_sample_method: str | None = None,
        max_num_seqs: int = 8) -> tuple[list, str, dict]:
    """Generate with vLLM; returns (get_metrics() dump, Prometheus text of spec-decode families, facts)."""
    import torch
    from minedraft.calibration.acceptance import metrics_to_json
    from prometheus_client import REGISTRY, generate_latest
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(target)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if prompt_tokens is not None:
        ids = [x[:prompt_tokens] for x in ids]
    spec = {"method": "draft_model", "model": str(draft), "num_speculative_tokens": k}
    if draft_sample_method is not None:
        spec["draft_sample_method"] = draft_sample_method
    llm = LLM(model=str(target), tokenizer=str(target), dtype="float32", seed=seed, max_model_len=512,
              max_num_seqs=max_num_seqs, enforce_eager=True, disable_log_stats=False, async_scheduling=False,
              kv_cache_memory_bytes=256 << 20,
              speculative_config=spec)
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, ignore_eos=True, seed=seed)
    t0 = time.monotonic()
    outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False)
    seconds = time.monotonic() - t0
    dump = metrics_to_json(llm.get_metrics())
    text = generate_latest(REGISTRY).decode()
    import vllm

    facts = {"vllm": vllm.__version__, "seconds": round(seconds, 1), "dtype": "float32", "device": "cpu",
             "generated_tokens": sum(len(o.outputs[0].token_ids) for o in outs), "num_prompts": len(ids),
             "k": k, "temperature": temperature, "max_tokens": max_tokens, "seed": seed, "max_num_seqs": max_num_seqs,
             "draft_sample_method": llm.llm_engine.vllm_config.speculative_config.draft_sample_method}
    return dump, text, facts


def main(argv: list[str] | None = None) -> int:
    from minedraft.calibration import PAIR_DIR

    from minedraft.cli.calibrate import load_prompts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=str(PAIR_DIR / "target"))
    p.add_argument("--draft", default=str(PAIR_DIR / "draft"))
    p.add_argument("--prompts", default=str(PAIR_DIR / "prompts.jsonl"))
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("-k", "--num-speculative-tokens", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--draft-sample-method", default=None, help="greedy (vLLM's default) | probabilistic")
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--out-dir", default=".")
    a = p.parse_args(argv)
    prompts = load_prompts(Path(a.prompts), "--prompts")[: a.num_prompts]
    dump, text, facts = run(Path(a.target), Path(a.draft), prompts, a.num_speculative_tokens, a.temperature,
                            a.max_tokens, a.seed, None, a.threads, a.draft_sample_method, a.max_num_seqs)
    mode = "greedy" if a.temperature == 0 else f"t{a.temperature:g}"
    if a.draft_sample_method is not None and a.temperature > 0:
        mode += f"_{a.draft_sample_method}"
    stem = Path(a.out_dir) / f"vllm_pair_{mode}_k{a.num_speculative_tokens}"
    command = "python -m minedraft.calibration.vllm_pair " + " ".join(argv if argv is not None else sys.argv[1:])
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "run": facts, "metrics": dump}, indent=1) + "\n")
    keep = [ln for ln in text.splitlines() if "spec_decode" in ln or "vllm:num_requests" in ln
            or "vllm:generation_tokens" in ln or "vllm:prompt_tokens" in ln]
    stem.with_suffix(".prom").write_text("\n".join(keep) + "\n")
    print(json.dumps(facts))
    print(f"wrote {stem}.json and {stem}.prom")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

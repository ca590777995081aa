"""Train the small draft/target pair shipped in ``calibration/data/pair`` (CPU, one core, seeded).

No pretrained weights can be downloaded here, so we train two Qwen3-architecture models from scratch on
text that every installation of the project's vLLM environment already holds: the docstrings of the
Python standard library, numpy, scipy and torch, plus the package descriptions (``METADATA``) of every
installed distribution. Documents are split into train / held-out by a hash of their name; the held-out
documents give the prompts on which acceptance is measured (``prompts.jsonl``).

Steps (all seeded; one thread, as the brief's machine is shared):
1. corpus: extract documents (sorted, de-duplicated), record package versions and a SHA-256 of the text;
2. tokenizer: byte-level BPE (``tokenizers``), 4096 entries incl. ``<|endoftext|>``;
3. target (~4.0 M parameters) and draft (~0.9 M) trained with AdamW on random 256-token windows;
4. write both as Hugging Face checkpoint folders (bf16 safetensors, config, tokenizer, generation
   config) that ``transformers`` and vLLM load as ordinary local models, plus ``train_log.json``.

Run it in the vLLM environment (torch, transformers, tokenizers)::

    .venv-vllm/bin/python scripts/train_pair.py            # ~20 min on one core
    .venv-vllm/bin/python scripts/train_pair.py --quick    # a 1-minute smoke run into /tmp

The measured acceptance of the result comes from ``minedraft-calibrate acceptance --pair``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import platform
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' trainer: one core
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "calibration" / "data" / "pair"
EOS = "<|endoftext|>"
#: Packages whose docstrings form the corpus (besides the standard library).
DOC_PACKAGES = ("numpy", "scipy", "torch")
HELDOUT_EVERY = 50  # ~2% of documents (by name hash) are held out
MIN_DOCSTRING = 40  # characters

#: Model shapes. Both share the tokenizer; head_dim 64 (vLLM's CPU attention supports it).
TARGET = dict(hidden_size=256, num_hidden_layers=4, intermediate_size=704, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64)
DRAFT = dict(hidden_size=128, num_hidden_layers=2, intermediate_size=384, num_attention_heads=2,
             num_key_value_heads=1, head_dim=64)
TRAIN = dict(seq_len=256, batch_size=16, lr=2e-3, min_lr_frac=0.1, warmup=30, weight_decay=0.1, clip=1.0,
             target_steps=520, draft_steps=700, eval_windows=64)

console = Console(stderr=True)


# ----------------------------------------------------------------------------------- corpus
def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_DOCSTRING:
                out.append(doc)
    return out


def _metadata_body(text: str) -> str:
    """The long description of a METADATA file (after the header block)."""
    _, sep, body = text.partition("\n\n")
    return body.strip() if sep else ""


def iter_documents(site_packages: Path, stdlib: Path):
    """(file name, [texts]) for every corpus file, in a fixed order; each text is one document.

    Texts are docstrings (one per module, class or function) or a distribution's description;
    exact duplicates are dropped.
    """
    seen: set[str] = set()

    def keep(parts: list[str]) -> list[str]:
        fresh = []
        for p in parts:
            h = hashlib.sha1(p.encode()).hexdigest()
            if h not in seen:
                seen.add(h)
                fresh.append(p)
        return fresh

    for f in sorted(stdlib.rglob("*.py")):
        rel = f.relative_to(stdlib)
        if rel.parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel.parts:
            continue
        texts = keep(_docstrings(f))
        if texts:
            yield f"stdlib/{rel.as_posix()}", texts
    for pkg in DOC_PACKAGES:
        for f in sorted((site_packages / pkg).rglob("*.py")):
            rel = f.relative_to(site_packages)
            if "tests" in rel.parts or "test" in rel.parts:
                continue
            texts = keep(_docstrings(f))
            if texts:
                yield rel.as_posix(), texts
    for f in sorted(site_packages.glob("*.dist-info/METADATA")):
        body = _metadata_body(f.read_text(encoding="utf-8", errors="replace"))
        if len(body) >= MIN_DOCSTRING:
            texts = keep([body])
            if texts:
                yield f.relative_to(site_packages).as_posix(), texts


def is_heldout(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def build_corpus(site_packages: Path, stdlib: Path) -> dict:
    """Documents as (file name, text), split into train / held-out by file."""
    train, heldout, files = [], [], [0, 0]
    for name, texts in iter_documents(site_packages, stdlib):
        held = is_heldout(name)
        files[held] += 1
        (heldout if held else train).extend((name, t) for t in texts)
    digest = hashlib.sha256()
    for name, text in train + heldout:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    versions = {p: metadata.version(p) for p in DOC_PACKAGES}
    versions["python"] = platform.python_version()
    return {"train": train, "heldout": heldout, "sha256": digest.hexdigest(), "versions": versions,
            "train_files": files[0], "heldout_files": files[1],
            "train_chars": sum(len(t) for _, t in train), "heldout_chars": sum(len(t) for _, t in heldout)}


# -------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def hf_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=512, clean_up_tokenization_spaces=False)


def encode_all(tok, docs: list[tuple[str, str]], eos_id: int) -> np.ndarray:
    """Documents -> one token stream, each document followed by ``<|endoftext|>``."""
    ids: list[int] = []
    batch = 256
    for i in range(0, len(docs), batch):
        for enc in tok.encode_batch([t for _, t in docs[i:i + batch]]):
            ids.extend(enc.ids)
            ids.append(eos_id)
    return np.asarray(ids, dtype=np.uint16)


# ----------------------------------------------------------------------------------- models
def make_model(shape: dict, vocab_size: int, eos_id: int, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=vocab_size, max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, rms_norm_eps=1e-6,
                      **shape)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg)


def lr_at(step: int, total: int, t: dict) -> float:
    if step < t["warmup"]:
        return t["lr"] * (step + 1) / t["warmup"]
    frac = (step - t["warmup"]) / max(1, total - t["warmup"])
    return t["lr"] * (t["min_lr_frac"] + (1 - t["min_lr_frac"]) * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def eval_loss(model, windows: torch.Tensor) -> float:
    model.eval()
    losses = [model(input_ids=w[None, :-1], labels=w[None, :-1]).loss.item() for w in windows]
    model.train()
    return float(np.mean(losses))


def train(name: str, model, stream: np.ndarray, eval_windows: torch.Tensor, steps: int, seed: int,
          t: dict) -> dict:
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], betas=(0.9, 0.95), weight_decay=t["weight_decay"])
    T, B = t["seq_len"], t["batch_size"]
    log = []
    t0, cpu0 = time.monotonic(), time.process_time()
    model.train()
    with Progress(TextColumn(f"training {name}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(name, total=steps, loss="-")
        for step in range(steps):
            starts = rng.integers(0, len(stream) - T - 1, size=B)
            x = torch.from_numpy(np.stack([stream[s:s + T] for s in starts]).astype(np.int64))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, t)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % 10 == 0 or step == steps - 1:
                log.append((step, round(loss.item(), 4)))
                bar.update(task, completed=step + 1, loss=f"{loss.item():.3f}")
                if not console.is_terminal and step % 50 == 0:  # a log file gets a line now and then
                    console.print(f"{name} step {step}/{steps} loss {loss.item():.3f} "
                                  f"({time.monotonic() - t0:.0f} s)")
            else:
                bar.update(task, completed=step + 1)
    seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    val = eval_loss(model, eval_windows)
    console.print(f"{name}: {steps} steps in {seconds:.0f} s ({cpu:.0f} s CPU), final train loss {log[-1][1]:.3f}, "
                  f"held-out loss {val:.3f} (perplexity {math.exp(val):.1f})")
    return {"steps": steps, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "tokens_seen": steps * B * T,
            "loss_log": log, "heldout_loss": round(val, 4), "heldout_perplexity": round(math.exp(val), 2)}


def save_model(model, tok_hf, out: Path) -> int:
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.save_pretrained(out, safe_serialization=True)
    tok_hf.save_pretrained(out)
    # The class name older transformers (4.x, e.g. under vLLM 0.26 on the GPU machines) know too.
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    eos = tok_hf.eos_token_id
    GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, do_sample=False).save_pretrained(out)
    return (out / "model.safetensors").stat().st_size


# ------------------------------------------------------------------------------------ prompts
def write_prompts(tok, heldout: list[tuple[str, str]], path: Path, n: int, prompt_tokens: int, seed: int) -> int:
    """Held-out prompts: the first ``prompt_tokens`` tokens of held-out documents, as text."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(heldout))
    rows = []
    for i in order:
        name, text = heldout[int(i)]
        ids = tok.encode(text).ids
        if len(ids) < prompt_tokens + 16:  # at least 80 tokens
            continue
        prompt = tok.decode(ids[:prompt_tokens])
        if "\ufffd" in prompt:  # cut inside a multi-byte character
            continue
        rows.append({"id": len(rows), "source": name, "text": prompt})
        if len(rows) == n:
            break
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return len(rows)


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (target/, draft/, prompts.jsonl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, output into /tmp/minedraft-pair")
    p.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
    p.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t = dict(TRAIN)
    out = Path(a.out)
    if a.quick:
        t.update(target_steps=20, draft_steps=20, eval_windows=4)
        out = Path("/tmp/minedraft-pair") if a.out == str(DEFAULT_OUT) else out
    t_start = time.monotonic()

    console.print("building the corpus ...")
    corpus = build_corpus(Path(a.site_packages), Path(a.stdlib))
    console.print(f"corpus: {corpus['train_files']} files, {len(corpus['train'])} train documents ({corpus['train_chars'] / 1e6:.2f} M chars), "
                  f"{corpus['heldout_files']} files, {len(corpus['heldout'])} documents held out ({corpus['heldout_chars'] / 1e6:.2f} M chars); "
                  f"sha256 {corpus['sha256'][:16]}")

    t0 = time.monotonic()
    tok = train_tokenizer([t_ for _, t_ in corpus["train"]], a.vocab_size)
    eos_id = tok.token_to_id(EOS)
    tok_seconds = time.monotonic() - t0
    train_stream = encode_all(tok, corpus["train"], eos_id)
    held_stream = encode_all(tok, corpus["heldout"], eos_id)
    console.print(f"tokenizer: {tok.get_vocab_size()} entries in {tok_seconds:.0f} s; train {len(train_stream) / 1e6:.2f} M "
                  f"tokens ({corpus['train_chars'] / len(train_stream):.2f} chars/token), held-out "
                  f"{len(held_stream) / 1e6:.3f} M tokens")
    rng = np.random.default_rng(a.seed + 7)
    T = t["seq_len"]
    starts = rng.integers(0, len(held_stream) - T - 2, size=t["eval_windows"])
    eval_windows = torch.from_numpy(np.stack([held_stream[s:s + T + 1] for s in starts]).astype(np.int64))

    tok_hf = hf_tokenizer(tok)
    results = {}
    sizes = {}
    for name, shape, steps, seed in (("target", TARGET, t["target_steps"], a.seed),
                                     ("draft", DRAFT, t["draft_steps"], a.seed + 1)):
        model = make_model(shape, tok.get_vocab_size(), eos_id, seed)
        n_params = sum(p_.numel() for p_ in model.parameters())
        console.print(f"{name}: {n_params / 1e6:.2f} M parameters {shape}")
        results[name] = {"parameters": n_params, "shape": shape, "seed": seed}
        results[name] |= train(name, model, train_stream, eval_windows, steps, seed, t)
        sizes[name] = save_model(model, tok_hf, out / name)
        # held-out loss of the bf16 weights as shipped
        from transformers import AutoModelForCausalLM

        shipped = AutoModelForCausalLM.from_pretrained(out / name, dtype=torch.float32)
        results[name]["heldout_loss_bf16"] = round(eval_loss(shipped, eval_windows), 4)
        results[name]["safetensors_bytes"] = sizes[name]

    n_prompts = write_prompts(tok, corpus["heldout"], out / "prompts.jsonl", 256, 64, a.seed)
    total = time.monotonic() - t_start
    log = {
        "kind": "minedraft.trained_pair",
        "command": "python scripts/train_pair.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "seed": a.seed,
        "threads": torch.get_num_threads(),
        "software": {"torch": torch.__version__, "transformers": metadata.version("transformers"),
                     "tokenizers": metadata.version("tokenizers"), "python": platform.python_version(),
                     "machine": platform.machine()},
        "corpus": {"sources": ["stdlib docstrings", *(f"{p} docstrings" for p in DOC_PACKAGES),
                               "METADATA descriptions of the installed distributions"],
                   "versions": corpus["versions"], "sha256": corpus["sha256"],
                   "train_files": corpus["train_files"], "heldout_files": corpus["heldout_files"],
                   "train_documents": len(corpus["train"]), "heldout_documents": len(corpus["heldout"]),
                   "train_chars": corpus["train_chars"], "heldout_chars": corpus["heldout_chars"],
                   "train_tokens": len(train_stream), "heldout_tokens": len(held_stream),
                   "heldout_rule": f"sha1(file name) % {HELDOUT_EVERY} == 0"},
        "tokenizer": {"kind": "byte-level BPE", "vocab_size": tok.get_vocab_size(), "seconds": round(tok_seconds, 1)},
        "training": t,
        "models": results,
        "prompts": {"file": "prompts.jsonl", "count": n_prompts, "prompt_tokens": 64,
                    "from": "held-out documents (docstrings) of at least 80 tokens, in a seeded random order"},
        "total_seconds": round(total, 1),
        "total_cpu_seconds": round(time.process_time(), 1),
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    console.print(f"wrote {out}: target {sizes['target'] / 1e6:.2f} MB, draft {sizes['draft'] / 1e6:.2f} MB, "
                  f"{n_prompts} prompts; total {total / 60:.1f} min ({time.process_time() / 60:.1f} min CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Generate the ShareGPT-format sample shipped for the default job (synthetic text, not the dataset).

Usage: python scripts/make_sharegpt_sample.py [OUT] [--n 1000] [--seed 0]

Each conversation is a human turn then a "gpt" turn of pseudo-words drawn from a Zipf law. Lengths follow
lognormal laws shaped like ShareGPT after the published filter (prompts of at least 256 tokens, prompt +
256 output tokens within a 2048-token context): prompt median ~420 tokens in [256, 1536], reply median
~260 tokens in [16, 1024], at 4 characters per token (the estimate minedraft uses without a tokenizer).
The gzip'd output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "an", "el", "or", "un", "ta", "pe", "qu", "zo"]


def vocabulary(rng: np.random.Generator, size: int = 4000) -> list[str]:
    words = set()
    while len(words) < size:
        n = int(rng.integers(1, 4))
        words.add("".join(rng.choice(SYLLABLES, n)))
    return sorted(words)


def text(rng: np.random.Generator, vocab: list[str], tokens: int) -> str:
    chars = tokens * 4
    ranks = np.minimum(rng.zipf(1.3, size=chars // 3 + 8), len(vocab)) - 1
    out, size = [], 0
    for r in ranks:
        w = vocab[r]
        out.append(w)
        size += len(w) + 1
        if size >= chars:
            break
    s = " ".join(out)
    return (s + " " + "x" * chars)[:chars] if len(s) < chars else s[:chars]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="minedraft/data/sharegpt_sample.json.gz")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    vocab = vocabulary(rng)
    prompt = np.clip(rng.lognormal(np.log(420), 0.45, args.n), 256, 1536).astype(int)
    reply = np.clip(rng.lognormal(np.log(260), 0.8, args.n), 16, 1024).astype(int)
    data = [{"id": f"synthetic-{i}", "conversations": [
        {"from": "human", "value": text(rng, vocab, int(p))}, {"from": "gpt", "value": text(rng, vocab, int(r))}]}
        for i, (p, r) in enumerate(zip(prompt, reply))]
    raw = json.dumps(data, separators=(",", ":")).encode()
    Path(args.out).write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"wrote {args.out}: {args.n} conversations, {len(raw) / 1e6:.1f} MB of JSON")


if __name__ == "__main__":
    main()

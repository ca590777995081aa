"""Summarise measured runs (JSON lines from benchmarks/gpu_ar_sd.py) as a Markdown table.

Usage: python benchmarks/measurements_table.py docs/measurements/2026-11-23-h200-ar-sd [...]

One row per configuration: output throughput, SD's speedup over AR at the same target and max_num_seqs
(both measured in the same session on the same GPU), mean acceptance length (vLLM's counters), mean TPOT
and p99 E2E latency.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(dirs: list[str]) -> tuple[list[dict], dict]:
    rows, setup = [], {}
    for d in dirs:
        for f in sorted(Path(d).glob("results_*.jsonl")):
            for line in f.read_text().splitlines():
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                if r.get("kind") == "result":
                    rows.append(r)
                elif r.get("kind") == "setup":
                    setup = r
    return rows, setup


def main() -> None:
    dirs = sys.argv[1:] or ["docs/measurements/2026-11-23-h200-ar-sd"]
    rows, setup = load(dirs)
    ar = {(r["target"], r["max_num_seqs"]): r["output_throughput"] for r in rows if r["policy"] == "ar"}
    key = lambda r: (r["target"], r["policy"], r.get("draft") or "", r["k"], r.get("alpha") or 0, r["max_num_seqs"])
    print(f"Device: {setup.get('gpu')}, torch {setup.get('torch')}, vLLM {setup.get('vllm')}; "
          f"{len(rows)} configurations, offline, 2 x max_num_seqs prompts of 256 input / 256 output tokens.\n")
    print("| target | policy | draft | k | α | max_num_seqs | out tok/s | vs AR | acc. len | TPOT ms | p99 E2E s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=key):
        base = ar.get((r["target"], r["max_num_seqs"]))
        ratio = f"{r['output_throughput'] / base:.2f}x" if base and r["policy"] != "ar" else "–"
        acc = r.get("vllm_mean_acceptance_length")
        print(f"| {r['target']} | {r['policy']} | {r.get('draft') or '–'} | {r['k'] or '–'} | "
              f"{r.get('alpha') if r.get('alpha') is not None else '–'} | {r['max_num_seqs']} | "
              f"{r['output_throughput']:,.0f} | {ratio} | {f'{acc:.2f}' if acc else '–'} | "
              f"{r['mean_tpot_ms']:.2f} | {r['p99_e2el_ms'] / 1e3:.2f} |")


if __name__ == "__main__":
    main()

"""Summarise measured runs (JSON lines from benchmarks/gpu_ar_sd.py and gpu_psd.py) as a Markdown table.

Usage: python benchmarks/measurements_table.py docs/measurements/2026-11-23-h200-ar-sd [...]

One row per configuration: output throughput, the speedup over AR at the same target and max_num_seqs
and (PSD) over SD at the same target, drafter, k, α and max_num_seqs, each only against a run of the same
folder (the same session and machine); mean acceptance length (vLLM's counters, else the trace's), mean
TPOT and p99 E2E latency. PSD's layout: drafter on its own GPU or sharing the target's, and its capacity
(double: 2 x max_num_seqs in flight; split: max_num_seqs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(dirs: list[str]) -> tuple[list[dict], dict]:
    rows, setup = [], {}
    for d in dirs:
        d = str(d)
        for f in sorted(Path(d).glob("results_*.jsonl")):
            for line in f.read_text().splitlines():
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                if r.get("kind") == "result":
                    rows.append(r | {"folder": d})
                elif r.get("kind") == "setup":
                    setup = r
    return rows, setup


def drafter_options(labels: dict) -> list[str]:
    """The non-default drafter options a PSD run was measured with (from its trace header or its result line)."""
    return [x for x in ("uniform passes" if labels.get("drafter_uniform_passes") else "",
                        f"drafter graphs {labels['drafter_cudagraph_mode']}" if labels.get("drafter_cudagraph_mode")
                        else "") if x]


def main() -> None:
    dirs = sys.argv[1:] or ["docs/measurements/2026-11-23-h200-ar-sd"]
    rows, setup = load(dirs)
    ar = {(r["folder"], r["target"], r["max_num_seqs"]): r["output_throughput"] for r in rows if r["policy"] == "ar"}
    sd = {(r["folder"], r["target"], r["draft"], r["k"], r["alpha"], r["max_num_seqs"]): r["output_throughput"]
          for r in rows if r["policy"] == "sd"}
    gpu = lambda r: "own GPU" if r.get("drafter_device") not in (None, "same") else "shared GPU"  # noqa: E731
    options = lambda r: "".join(", " + x for x in drafter_options(r))  # noqa: E731
    layout = lambda r: (f"{gpu(r)}, {r['psd_capacity']}{options(r)}" if r.get("psd_capacity")  # noqa: E731
                        else gpu(r) + options(r) if r["policy"] == "pearl" else "–")
    key = lambda r: (r["target"], r["policy"], r.get("draft") or "", r["k"], layout(r), r.get("alpha") or 0,
                     r["max_num_seqs"])
    print(f"Device: {setup.get('gpu')}, torch {setup.get('torch')}, vLLM {setup.get('vllm')}; "
          f"{len(rows)} configurations, offline, 2 waves of the requests in flight, 256 input / 256 output tokens.\n")
    print("| target | policy | draft | k | layout | α | max_num_seqs | out tok/s | vs AR | vs SD | acc. len | TPOT ms "
          "| p99 E2E s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=key):
        base = ar.get((r["folder"], r["target"], r["max_num_seqs"]))
        ratio = f"{r['output_throughput'] / base:.2f}x" if base and r["policy"] != "ar" else "–"
        s = sd.get((r["folder"], r["target"], r.get("draft"), r["k"], r.get("alpha"), r["max_num_seqs"]))
        vs_sd = f"{r['output_throughput'] / s:.2f}x" if s and r["policy"] in ("psd", "pearl") else "–"
        acc = r.get("vllm_mean_acceptance_length") or r.get("mean_acceptance_length")
        print(f"| {r['target']} | {r['policy']} | {r.get('draft') or '–'} | {r['k'] or '–'} | {layout(r)} | "
              f"{r.get('alpha') if r.get('alpha') is not None else '–'} | {r['max_num_seqs']} | "
              f"{r['output_throughput']:,.0f} | {ratio} | {vs_sd} | {f'{acc:.2f}' if acc else '–'} | "
              f"{r['mean_tpot_ms']:.2f} | {r['p99_e2el_ms'] / 1e3:.2f} |")


if __name__ == "__main__":
    main()

"""Write docs/validation.md: predicted vs measured on held-out GPU runs, from committed measurements.

Usage: python scripts/validation_report.py [--measurements docs/measurements/2026-11-23-h200-ar-sd]
                                          [--psd-measurements docs/measurements/2026-11-23-h200x2-psd]
                                          [--one-gpu-measurements FOLDER ...]  (one-GPU PSD sessions)

Two calibration / validation splits of the same runs, disjoint within each split:
- A (shipped): calibrate on AR and the synthetic alpha = 0.6 SD runs; validate on every alpha = 0.8 SD run;
- B: calibrate on max_num_seqs 8 and 64 (all alpha); validate on max_num_seqs 16 and 32 SD runs.
Also a repeatability check: engine steps with the same target, drafter, k and batch do the same GPU work
whatever the synthetic alpha, so their median times should agree; their spread is the floor below which
no model of step time can predict these measurements. Figures go to docs/figures/validation_*.{html,png}
(PNG needs kaleido: pip install kaleido==0.2.1).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from minedraft.calibration.plugin import PLUGIN_FILE, SINGLE_BATCH_FILE, op_medians, plugin_file
from minedraft.calibration.steps import fit_steps, step_rows
from minedraft.cli.validate import load_runs, summary, validate
from minedraft.metrics import compute_metrics
from minedraft.policies.psd import half_capacity
from minedraft.report import save_figure
from minedraft.simulator.replay import measured_run, resident_halves
from minedraft.validation import summary_figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from measurements_table import drafter_options  # noqa: E402 - the labels the result tables use
from measurements_table import load as load_results  # noqa: E402 - the reader of a folder's results_*.jsonl
NAME = re.compile(r"policy-(\w+)_target-([\w.-]+?)(?:_draft-([\w.-]+?)_k-(\d+)_alpha-([\d.]+))?_mns-(\d+)")


def fit_to(folder: Path, runs: dict, held: list[str]) -> None:
    train = {n: r for n, r in runs.items() if not any(h in n for h in held)}
    fit_steps([row for n, recs in train.items() for row in step_rows(recs, n)], "h200").save(folder)


def split(runs: dict, held: list[str], folder: Path) -> list[dict]:
    test = {n: r for n, r in runs.items() if any(h in n for h in held) and n.startswith("policy-sd")}
    return [validate(n, recs, folder, "--profile-dir", 0) for n, recs in test.items()]


def repeatability(runs: dict) -> list[tuple[str, float]]:
    """Median step time of alpha 0.8 over alpha 0.6, same target/drafter/k/batch (full-batch decode steps)."""
    med: dict[tuple, float] = {}
    for n, recs in runs.items():
        m = NAME.match(n)
        if not m or m.group(1) != "sd":
            continue
        mns = int(m.group(6))
        rows = [r.seconds for r in step_rows(recs, n) if r.chunk == 0 and r.batch == mns]
        med[(m.group(2), m.group(3), int(m.group(4)), mns, m.group(5))] = float(np.median(rows))
    out = []
    for (t, d, k, mns, a), v in sorted(med.items()):
        if a == "0.8" and (t, d, k, mns, "0.6") in med:
            out.append((f"{t} + {d}, k={k}, batch {mns}", v / med[(t, d, k, mns, "0.6")] - 1))
    return out


def table(results: list[dict]) -> list[str]:
    lines = ["| target | drafter | k | α | max_num_seqs | tok/s measured | predicted | error | mean E2E ms measured "
             "| predicted | error | acc. len meas / pred |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["target"], r["draft"], r["k"], r["alpha"], r["max_num_seqs"])):
        m, p = r["measured"], r["predicted"]
        et = p["output_throughput"] / m["output_throughput"] - 1
        ee = p["mean_e2el_ms"] / m["mean_e2el_ms"] - 1
        lines.append(f"| {r['target']} | {r['draft']} | {r['k']} | {r['alpha']} | {r['max_num_seqs']} | "
                     f"{m['output_throughput']:,.0f} | {p['output_throughput']:,.0f} | {et:+.1%} | "
                     f"{m['mean_e2el_ms']:,.0f} | {p['mean_e2el_ms']:,.0f} | {ee:+.1%} | "
                     f"{m['mean_acceptance_length']:.2f} / {p['mean_acceptance_length']:.2f} |")
    return lines


def psd_section(folder: str, shipped: Path) -> str:
    """PSD in vLLM (the plugin) on two H200s: measured vs predicted, without and with the plugin's fitted costs."""
    runs = load_runs([], str(ROOT / folder))
    # these runs measured the plugin before 2026-12-04 (no resident halves): minedraft-validate replays them with the
    # costs of that plugin (plugin_file), so those are the costs this section describes
    costs_name = plugin_file(shipped, any(resident_halves(header_config(r)) for r in runs.values()))
    fit = json.loads((shipped / costs_name).read_text())
    refit = json.loads((shipped / PLUGIN_FILE).read_text())
    with tempfile.TemporaryDirectory() as none:  # no plugin.json there: the step models alone
        bare = {n: validate(n, r, shipped, "--gpu", 0, plugin=Path(none)) for n, r in runs.items()
                if n.startswith("policy-psd")}
    full = {n: validate(n, r, shipped, "--gpu", 0) for n, r in runs.items()}
    psd = sorted(bare,
                 key=lambda n: (full[n]["target"], full[n]["psd_drafter"], full[n]["psd_capacity"], full[n]["alpha"],
                                full[n]["max_num_seqs"]))
    held = [full[n] for n in psd if full[n]["alpha"] == 0.8]
    base = [full[n] for n in runs if full[n]["policy"] in ("ar", "sd")]
    sd = {(r["target"], r["draft"], r["k"], r["alpha"], r["max_num_seqs"]): r for r in base if r["policy"] == "sd"}
    err = lambda r: r["predicted"]["output_throughput"] / r["measured"]["output_throughput"] - 1
    sh, sb = summary(held), summary(base)

    def vs_sd(drafter: str, cap: str, metric: str = "output_throughput") -> str:
        x = [full[n]["measured"][metric] / sd[key]["measured"][metric] for n in psd
             if full[n]["psd_drafter"] == drafter and full[n]["psd_capacity"] == cap
             and (key := (full[n]["target"], full[n]["draft"], full[n]["k"], full[n]["alpha"], full[n]["max_num_seqs"]))
             in sd]
        return f"{min(x):.2f}-{max(x):.2f}x"

    def step_ms(policy: str, mns: int) -> float:  # median full-batch decode/verify op of the 32B runs at mns
        from minedraft.simulator.replay import measured_run
        from minedraft.trace import KIND_CODE

        n = next(n for n in runs if full[n]["policy"] == policy and full[n]["max_num_seqs"] == mns
                 and full[n]["target"] == "qwen3-32b" and full[n]["alpha"] in (None, 0.6))
        t = measured_run(runs[n], n).trace
        d = (t.op_t_end - t.op_t_start)[(t.op_size == mns) & np.isin(t.op_kind, [KIND_CODE["decode"], KIND_CODE["verify"]])]
        return float(np.median(d)) * 1e3

    offs = [err(r) for r in base]
    worst_psd = max(held, key=lambda r: abs(err(r)))
    shared_ratio = [full[n]["measured"]["output_throughput"] / sd[k]["measured"]["output_throughput"] for n in psd
                    if full[n]["psd_drafter"] == "shared" and (k := (full[n]["target"], full[n]["draft"], full[n]["k"],
                                                                      full[n]["alpha"], full[n]["max_num_seqs"])) in sd]
    lines = ["| target | drafter GPU | capacity | α | max_num_seqs | tok/s measured | step models only | error | "
             "+ plugin costs | error | PSD / SD measured | predicted |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in psd:
        r, b = full[n], bare[n]
        s = sd.get((r["target"], r["draft"], r["k"], r["alpha"], r["max_num_seqs"]))
        ratio = (f"{r['measured']['output_throughput'] / s['measured']['output_throughput']:.2f}x | "
                 f"{r['predicted']['output_throughput'] / s['predicted']['output_throughput']:.2f}x") if s else "– | –"
        lines.append(f"| {r['target']} | {r['psd_drafter']} | {r['psd_capacity']} | {r['alpha']}"
                     f"{'' if r['alpha'] == 0.8 else ' (fit)'} | {r['max_num_seqs']} | "
                     f"{r['measured']['output_throughput']:,.0f} | {b['predicted']['output_throughput']:,.0f} | "
                     f"{err(b):+.1%} | {r['predicted']['output_throughput']:,.0f} | {err(r):+.1%} | {ratio} |")
    ops = ["| run (α 0.6) | verify measured / step model | draft measured / step model |", "|---|---|---|"]
    for row in fit["fit"]["own_gpu_runs"] + fit["fit"]["shared_gpu_runs"]:
        if row["run"] not in runs:  # fitted runs of other sessions (the one-GPU section)
            continue
        m, p = row["measured"], row["predicted"]
        name = row["run"].replace("policy-psd_target-", "").replace("_draft-qwen3-0.6b_k-3", "")
        ops.append(f"| {name} | {m['verify'] * 1e3:.1f} / {p['verify'] * 1e3:.1f} ms | "
                   f"{m['draft'] * 1e3:.1f} / {p['draft'] * 1e3:.1f} ms |")
    return f"""## PSD inside vLLM on two H200s (issues 8 and 10)

Measured in `{folder}` (one machine with two H200s, vLLM 0.26.0; COMMANDS.md there): minedraft's plugin
with Qwen3-32B + Qwen3-0.6B (drafter on its own GPU, and sharing the target's) and Qwen3-8B + Qwen3-0.6B
(sharing), k = 3, max_num_seqs 16 and 64, both PSD capacities, synthetic α 0.6 and 0.8; vLLM's SD and AR
of the 32B target in the same session. The replay runs the plugin's schedule (PSD policy, prefill-only
steps, a half = one vLLM batch: `PolicyConfig.psd_limit_halves`; `psd_drafter=shared` for the one-GPU
runs).

**The step models alone do not predict the plugin.** They were fitted to vLLM's own SD steps on another
H200; the plugin's ops cost more than the same work inside a vLLM SD step (median op times of the α = 0.6
runs, full halves):

{chr(10).join(ops)}

Three costs of the plugin as it was before 2026-12-04 (one persistent batch per vLLM runner, the drafter's PIECEWISE
graphs) are therefore fitted (`{fit['provenance']['command']}`,
`minedraft.calibration.plugin`: this machine's α = 0.6 runs and the one-GPU runs of 2026-12-01 at k = 1 and 5, below;
the α = 0.8 runs here and every run of 2026-12-02 are held out; kept as `calibration/data/profiles/h200/{costs_name}`,
with which `minedraft-validate` replays every run of that plugin): **{fit['verify_swap_s'] * 1e3:.1f} ms + {fit['verify_swap_row_s'] * 1e6:.0f} µs per
row for each verify of alternating halves** (vLLM's persistent batch drops one half's rows and re-adds the other's
every step, fitted on the own-GPU runs); when both processes share one GPU (time-sliced, not concurrent), **a verify
gains {fit['shared_verify_stretch']:.2f} x the drafter's passes after its first** (`(k - 1) T_d(b, 1)`: the uniform passes, which
replay full CUDA graphs; the first pass decodes a mixed batch under piecewise graphs, is host-bound and hides in the
verify's gaps: with k = 1 the verify is as long as alone, `python benchmarks/first_pass.py`) and **the drafter's op
takes {fit['shared_gpu_slowdown']:+.0%} longer**; and **{fit['drafter_op_s'] * 1e3:.1f} ms per drafter op** (its process re-enters the
requests' copies, builds a fresh input batch each op and decodes that mixed first pass; fitted with the drafter's
slowdown on the draft ops of both layouts). The drafter op is hidden behind the target's verify on its own GPU and,
at these configurations, when sharing too; what sharing costs is the verify's stretch.

These costs describe the plugin this session measured. `{PLUGIN_FILE}` now holds the refit to the 2026-12-04 plugin
(resident halves, the drafter's FULL graphs; `{refit['provenance']['command']}`):
{refit['verify_swap_s'] * 1e3:.2f} ms + {refit['verify_swap_row_s'] * 1e6:.0f} µs per row for each verify of alternating
halves, a verify stretch of {refit['shared_verify_stretch']:.2f} x the drafter's later passes, a drafter slowdown of
{refit['shared_gpu_slowdown']:+.0%} and {refit['drafter_op_s'] * 1e3:.1f} ms per drafter op. No run of the 2026-12-04 plugin was measured on two GPUs yet,
so the numbers below are all the older plugin's, predicted with its own costs.

| held out | runs | output throughput \|error\| | mean E2E \|error\| |
|---|---|---|---|
| PSD α = 0.8 (step models + plugin costs) | {sh['runs']} | median {sh['output_throughput']['median_abs_error']:.1%}, worst {sh['output_throughput']['max_abs_error']:.1%} | median {sh['mean_e2el_ms']['median_abs_error']:.1%}, worst {sh['mean_e2el_ms']['max_abs_error']:.1%} |
| same-session AR and SD (step models, none of these runs fitted) | {sb['runs']} | median {sb['output_throughput']['median_abs_error']:.1%}, worst {sb['output_throughput']['max_abs_error']:.1%} | median {sb['mean_e2el_ms']['median_abs_error']:.1%}, worst {sb['mean_e2el_ms']['max_abs_error']:.1%} |

The step models over-predict this machine's AR and SD throughput by {min(offs):.0%}-{max(offs):.0%} (they
were fitted on another H200 host): part of that offset sits in the fitted plugin costs too. The worst held-out PSD
prediction is {worst_psd['target']} ({worst_psd['psd_drafter']} GPU, {worst_psd['psd_capacity']}, batch
{worst_psd['max_num_seqs']}: {err(worst_psd):+.1%}). For the 8B at k = 5 with 16 rows the drafter's op is over-predicted
(its forwards come from the SD step fit, whose first forward is charged at k + 1 tokens a row where the plugin feeds
one or two), which puts it on the model's critical path.

{chr(10).join(lines)}

**What this says about PSD at TP 1** (measured, same session): with the drafter on its own GPU and the
published capacity (double), PSD is on par with SD ({vs_sd("own", "double")}, on 2 GPUs against 1); at equal
concurrency (split) it loses ({vs_sd("own", "split")}). Sharing one GPU, it loses in every configuration
({min(shared_ratio):.2f}-{max(shared_ratio):.2f}x). The 32B target is memory-bound at these batches: AR's
16-row decode step takes {step_ms("ar", 16):.1f} ms and SD's whole 16-row step (verify of k + 1 = 4 tokens a row
plus the drafter's three forwards) {step_ms("sd", 16):.1f} ms, so drafting is a small part of SD's step and
overlapping it buys little; the plugin's swap and drafter-op costs take the rest. This is the theory's regime of a cheap drafter (T_d/T_v small, `docs/theory.md`),
where PSD's gain is small even without overheads.

PSD over vLLM's SD (output throughput, measured in the same session, Qwen3-32B + 0.6B, k = 3), on each
comparison basis:

| basis | PSD layout | PSD / SD |
|---|---|---|
| same max_num_seqs (published: PSD holds 2x the requests) | drafter alone on GPU 1, double | {vs_sd("own", "double")} |
| same concurrency | drafter alone on GPU 1, split | {vs_sd("own", "split")} |
| same GPU count, per GPU (2 GPUs against 1) | drafter alone on GPU 1, double | {vs_sd("own", "double", "output_throughput_per_gpu")} |
| same GPU count, one GPU | drafter sharing GPU 0, double | {vs_sd("shared", "double")} |
| same GPU count and concurrency | drafter sharing GPU 0, split | {vs_sd("shared", "split")} |
"""


DISTURBED = 1.25  # p90/p10 of full-batch steps above this: the run is flagged


def decode_ops(records: list[dict]) -> list[dict]:
    """A run's target decode/verify ops that carry no prefill tokens."""
    return [r for r in records if r.get("type") == "op" and r.get("resource") == "target"
            and r.get("op") in ("decode", "verify") and not r.get("prefill_tokens")]


def step_range(records: list[dict]) -> tuple[float, float]:
    """p10 and p90 (ms) of a run's full-batch target decode/verify ops."""
    ops = decode_ops(records)
    full = max(o.get("size", 0) for o in ops)
    d = np.array([o["t_end"] - o["t_start"] for o in ops if o.get("size") == full]) * 1e3
    return float(np.percentile(d, 10)), float(np.percentile(d, 90))


STALL_S = 0.3  # a decode/verify step without prefill tokens this long is a one-time stall, not the GPU's work
STAGGERED_WARMUP = "593e4f4"  # the commit from which Engine.warmup staggers its requests' lengths


def staggered_warmup(folder: str) -> bool:
    """Whether a session ran with the staggered warm-up: the last commit its ``logs/versions.txt`` names (``git
    rev-parse HEAD``'s line; ``git status`` may follow it) descends from ``STAGGERED_WARMUP``."""
    text = (ROOT / folder / "logs/versions.txt").read_text()
    head = re.findall(r"\b[0-9a-f]{40}\b", text)[-1]
    rc = subprocess.run(["git", "merge-base", "--is-ancestor", STAGGERED_WARMUP, head], cwd=ROOT,
                        capture_output=True).returncode
    if rc not in (0, 1):  # 0: descends, 1: does not; anything else: git does not know the commit
        raise SystemExit(f"error: {folder}/logs/versions.txt: commit {head} is not in this clone's history")
    return rc == 0


def stall(records: list[dict]) -> tuple[float, int, float]:
    """A run's stalls: their seconds, the rows of the first, and their share of the run's span."""
    slow = [o for o in decode_ops(records) if o["t_end"] - o["t_start"] > STALL_S]
    ops = [r for r in records if r.get("type") == "op" and r.get("resource") == "target"]
    span = max(o["t_end"] for o in ops) - min(o["t_start"] for o in ops)
    s = sum(o["t_end"] - o["t_start"] for o in slow)
    return s, (slow[0].get("size") if slow else 0), s / span


def exec_run(records: list[dict]) -> bool:
    """A run of ``minedraft-exec`` itself (its header config carries the run's fingerprint), not of a benchmark."""
    return any(x.get("type") == "header" and "fingerprint" in (x.get("config") or {}) for x in records)


def exec_section(runs_by_folder: dict[str, dict], shipped: Path) -> str:
    """``minedraft-exec`` itself on a GPU: every policy of its traces (``runs_by_folder``: folder -> its
    ``load_runs``), measured beside predicted."""
    rows = ["| session | policy | target + drafter | k | max_num_seqs | requests | out tok/s | predicted (error) | "
            "mean E2E s | predicted (error) | acc. len |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    used = set()  # the plugin-costs files the plugin runs' predictions used
    for folder, runs in runs_by_folder.items():
        for n, r in runs.items():
            if not exec_run(r):
                continue
            v = validate(n, r, shipped, "--gpu", 0)
            if v["policy"] in ("psd", "pearl"):
                used.add(plugin_file(shipped, resident_halves(header_config(r))))
            m, p = v["measured"], v["predicted"]
            done = sum(x.get("type") == "request" and x.get("finish") is not None for x in r)
            acc = m.get("mean_acceptance_length")
            rows.append(
                f"| {Path(folder).name[:11]} | {v['policy']} | {v['target']}" + (f" + {v['draft']}" if v["draft"] else "")
                + f" | {v['k']} | {v['max_num_seqs']} | {done} | {m['output_throughput']:,.0f} | "
                f"{p['output_throughput']:,.0f} ({p['output_throughput'] / m['output_throughput'] - 1:+.1%}) | "
                f"{m['mean_e2el_ms'] / 1e3:.2f} | {p['mean_e2el_ms'] / 1e3:.2f} "
                f"({p['mean_e2el_ms'] / m['mean_e2el_ms'] - 1:+.1%}) | {'–' if acc is None else f'{acc:.2f}'} |")
    if len(rows) == 2:
        return ""
    return ("### `minedraft-exec` itself on the H200\n\nThe runs above come from the GPU benchmark scripts; these come "
            "from the CLI, two calls of one session (`--policy psd,pearl`, then `--policy ar,sd`; each policy's engine "
            "in a process of its own, the default on a GPU build with several policies), 64 prompts of 256 / 256 "
            "tokens, all in at once, synthetic α = 0.8, PSD's and PEARL's drafter sharing the GPU "
            "(`docs/measurements/2026-12-03b-h200-exec-cli/COMMANDS.md`). Predicted with the shipped profiles, as "
            "`minedraft-validate --all` does" + (f" (PSD and PEARL with {' and '.join(f'`{u}`' for u in sorted(used))}"
                                                 ", the costs of the plugin these runs measured)" if used else "")
            + ":\n\n" + "\n".join(rows) + "\n")


def plugin_fits(shipped: Path) -> dict[str, dict]:
    """Each plugin-costs file of ``shipped`` (:data:`PLUGIN_FILE`: the plugin with resident halves, from 2026-12-04;
    :data:`SINGLE_BATCH_FILE`: the plugin before) -> its JSON, with ``fitted``: the (folder, run) pairs it was fitted
    on (a run of its provenance in one of its ``--from`` folders)."""
    out = {}
    for name in (PLUGIN_FILE, SINGLE_BATCH_FILE):
        if (shipped / name).is_file():
            d = json.loads((shipped / name).read_text())
            words = d["provenance"]["command"].split()
            d["fitted"] = {(f, n) for f in (b for a, b in zip(words, words[1:]) if a == "--from")
                           for n in d["provenance"]["runs"]}
            out[name] = d
    return out


def header_config(records: list[dict]) -> dict:
    """A run's configuration, from its trace header."""
    return next((x.get("config") or {} for x in records if x.get("type") == "header"), {})


def self_check(records: list[dict]) -> bool:
    """A correctness check, not a benchmark cell: a drafter drafting for itself (``benchmarks/psd_costs.py --alpha 0``,
    the models' own acceptance). No step model describes such a pair; its runs stay out of every comparison."""
    cfg = header_config(records)
    return cfg.get("draft") is not None and cfg.get("draft") == cfg.get("target")


def tput_of(v: dict) -> float:
    """A validate result's predicted output throughput."""
    return v["predicted"]["output_throughput"]


def psd_costs_drafter(folder: str) -> list[dict]:
    """The PSD result lines of ``benchmarks/psd_costs.py`` in a session folder (its ``psd_costs_*.jsonl``; JSON
    among vLLM's log lines), self-drafting checks left out."""
    out = []
    for path in sorted((ROOT / folder).glob("psd_costs_*.jsonl")):
        for line in path.read_text().splitlines():
            if line.startswith("{") and '"kind": "result"' in line:
                r = json.loads(line)
                if r.get("policy") == "psd" and r.get("draft") != r.get("target") and r.get("drafter"):
                    out.append(r)
    return out


def one_gpu_section(runs_by_folder: dict[str, dict], shipped: Path, reference: list[str]) -> str:
    """PSD with the drafter sharing one H200 against vLLM's SD and AR of the same session (one row per PSD run);
    every AR and SD run beside the same configuration in ``reference`` (the AR / SD sessions the step models were
    fitted on). ``runs_by_folder``: each session's folder -> its ``load_runs``."""
    folders = list(runs_by_folder)
    full, spread, ranges, results, session, variant, stalls, records = {}, {}, {}, {}, {}, {}, {}, {}
    costs_file: dict[tuple, str] = {}  # a plugin run -> the plugin-costs file its prediction used
    checks: list[tuple[str, str, list[dict]]] = []  # self-drafting correctness checks (folder, run, records)
    tag: dict[str, str] = {}  # a session by its date; a second session of a day gets "b", a third "c"
    for folder in folders:
        day = Path(folder).name[:10]
        same_day = sum(x.startswith(day) for x in tag.values())
        tag[folder] = day + ("", "b", "c", "d", "e")[same_day]
    for folder, runs in runs_by_folder.items():
        for n, r in runs.items():
            if exec_run(r):
                continue  # minedraft-exec's own runs: exec_section
            if self_check(r):
                checks.append((folder, n, r))
                continue
            key = (folder, n)
            records[key] = r
            full[key] = validate(n, r, shipped, "--gpu", 0)
            cfg = header_config(r)
            if full[key]["policy"] in ("psd", "pearl"):  # the file minedraft-validate picks (plugin_file)
                costs_file[key] = plugin_file(shipped, resident_halves(cfg))
            v = full[key]  # how a PSD run differs from the section's default (shared GPU, double, default passes)
            variant[key] = ", ".join([x for x in (
                f"drafter {v['psd_drafter']}" if v["psd_drafter"] not in (None, "shared") else "",
                v["psd_capacity"] if v["psd_capacity"] not in (None, "double") else "") if x]
                + drafter_options(cfg)) if v["policy"] == "psd" else ""
            stalls[key] = stall(r)
            ranges[key] = step_range(r)  # p10, p90 of full-batch steps: the same GPU work each step, so
            spread[key] = ranges[key][1] / ranges[key][0]  # p90/p10 well above the others: disturbed
            session[key] = tag[folder]
        for j in load_results([str(ROOT / folder)])[0]:
            if j["policy"] == "psd" and j.get("psd_capacity") in (None, "double") and j.get("drafter_device") in (None, "same"):
                # the section's PSD: drafter sharing the GPU, capacity double
                results[(folder, j["target"], j["draft"], j["k"], j["max_num_seqs"], ", ".join(drafter_options(j)))] = j
    fits = plugin_fits(shipped)
    # fitted: a run the plugin costs that predicted it were fitted on
    fitted = {n for n, c in costs_file.items() if n in fits.get(c, {}).get("fitted", ())}
    by = {(f, v["target"], v["draft"] if v["policy"] != "ar" else None, v["policy"], v["k"], v["max_num_seqs"],
           variant[(f, n)]): (f, n) for (f, n), v in full.items()}
    assert len(by) == len(full), "two runs of one session share a configuration"
    tput = lambda n, w: full[n][w]["output_throughput"]  # noqa: E731
    err = lambda n: tput(n, "predicted") / tput(n, "measured") - 1  # noqa: E731
    bad = lambda n: spread[n] > DISTURBED  # noqa: E731
    flag = lambda n: f"{spread[n]:.2f}" + (" **disturbed**" if bad(n) else "")  # noqa: E731
    short = lambda m: m.replace("qwen3-", "")  # noqa: E731
    rows = ["| session | pair | k | max_num_seqs | AR tok/s | SD tok/s | PSD tok/s | PSD / SD | PSD / AR | SD / AR | "
            "PSD predicted (error) | SD predicted (error) | PSD / SD predicted | step p90/p10 SD, PSD |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios, e2e, cells = [], [], set()
    psd_keys = sorted((k for k in by if k[3] == "psd"), key=lambda k: (k[1], k[2], k[4], k[5], k[6], k[0]))
    for f, t, d, _, k, mns, var in psd_keys:
        ps, sd, ar = by[(f, t, d, "psd", k, mns, var)], by.get((f, t, d, "sd", k, mns, "")), by.get((f, t, None, "ar", 0, mns, ""))
        if not var:
            cells.add((t, d, k, mns))
        pair = f"{short(t)} + {short(d)}" + (f" ({var})" if var else "")
        if sd is not None:
            ratios.append((f"{pair} ({session[ps]})", k, mns, tput(ps, "measured") / tput(sd, "measured"),
                           bad(sd) or bad(ps), costs_file[ps]))
            if not (bad(sd) or bad(ps)):
                e2e.append((full[ps]["measured"]["mean_e2el_ms"] / full[sd]["measured"]["mean_e2el_ms"], costs_file[ps]))
        vs = lambda n, m: f"{tput(n, 'measured') / tput(m, 'measured'):.2f}x" if m else "–"  # noqa: E731
        meas = lambda n: f"{tput(n, 'measured'):,.0f}" if n else "–"  # noqa: E731
        pred = lambda n: (f"{tput(n, 'predicted'):,.0f} ({err(n):+.1%}{'*' if n in fitted else ''})"  # noqa: E731
                          if n else "–")
        ratio_pred = f"{tput(ps, 'predicted') / tput(sd, 'predicted'):.2f}x" if sd else "–"
        rows.append(f"| {session[ps]} | {pair} | {k} | {mns} | {meas(ar)} | {meas(sd)} | {meas(ps)} | {vs(ps, sd)} | "
                    f"{vs(ps, ar)} | {vs(sd, ar) if sd else '–'} | {pred(ps)} | {pred(sd)} | {ratio_pred} | "
                    f"{flag(sd) if sd else '–'}, {flag(ps)} |")
    paired = {(t, d, k, mns) for f, t, d, _, k, mns, var in psd_keys if not var and (f, t, d, "sd", k, mns, "") in by}
    no_sd = sorted(cells - paired)  # configurations no session measured beside its SD
    # SD runs with no PSD run of the same session: reruns of a configuration whose SD run was disturbed
    reruns = [(key, n) for key, n in by.items() if key[3] == "sd" and not any(
        (q[0], *q[1:3], q[4], q[5]) == (key[0], *key[1:3], key[4], key[5]) for q in psd_keys)]
    rerun_lines = []
    for (f, t, d, _, k, mns, _), n in sorted(reruns):
        earlier = lambda policy: [m for (g, *cfg), m in by.items()  # noqa: E731 - this configuration, earlier sessions
                                  if cfg == [t, d, policy, k, mns, ""] and folders.index(g) < folders.index(f)]
        before = ", ".join(f"{tput(m, 'measured'):,.0f} tok/s on {session[m]} (p90/p10 {spread[m]:.2f})"
                           for m in earlier("sd"))
        across = "".join(f"; PSD of {session[m]} / this run: {tput(m, 'measured') / tput(n, 'measured'):.2f}x "
                         "(two hosts)" for m in earlier("psd"))
        rerun_lines.append(f"- SD {short(t)} + {short(d)}, k = {k}, max_num_seqs {mns}, rerun on {session[n]}: "
                           f"{tput(n, 'measured'):,.0f} tok/s, p90/p10 {flag(n)}; before: {before or 'none'}{across}")
    ops = ["| session | pair | k | rows per half | drafter op ms | its runner passes ms | outside the passes ms |",
           "|---|---|---|---|---|---|---|"]
    excess = []
    for (f, t, d, k, mns, var), j in sorted(results.items(), key=lambda x: (x[0][1], x[0][2], x[0][3], x[0][4], x[0][5])):
        b = j["overlap"]["draft_op_breakdown"]
        ops.append(f"| {tag[f]} | {short(t)} + {short(d)}{f' ({var})' if var else ''} | {k} | {mns} | "
                   f"{b['op_ms']:.1f} | {' / '.join(f'{x:.1f}' for x in b['forward_ms'])} | {b['outside_forwards_ms']:.1f} |")
        if len(b["forward_ms"]) > 1 and not var:  # with uniform passes the first pass is a catch-up
            excess.append(b["forward_ms"][0] - float(np.median(b["forward_ms"][1:])))
    outside = max(j["overlap"]["draft_op_breakdown"]["outside_forwards_ms"] for key, j in results.items() if not key[5])
    iso_file = "docs/measurements/2026-11-24-h200-sd/drafter_op_qwen3-0.6b.jsonl"
    iso_rows = [json.loads(x) for x in (ROOT / iso_file).read_text().splitlines() if '"fused": false' in x]
    iso = ", ".join(f"first pass {r['forward_ms'][0]:.1f} ms against {np.median(r['forward_ms'][1:]):.1f} ms for the "
                    f"later ones at {r['rows']} rows" for r in iso_rows)
    clean = [n for n in full if not bad(n)]
    sp = summary([full[n] for n in clean if full[n]["policy"] == "psd" and n not in fitted])
    sa = summary([full[n] for n in clean if full[n]["policy"] != "psd"])
    gen_sessions = {c: sorted({session[n] for n in costs_file if costs_file[n] == c})
                    for c in (SINGLE_BATCH_FILE, PLUGIN_FILE)}  # the sessions each costs file predicted
    fit_of = {c: (sorted({session[n] for n in fitted if costs_file[n] == c}),
                  sorted({session[n] for n in costs_file if costs_file[n] == c and full[n]["policy"] == "psd"}
                         - {session[n] for n in fitted if costs_file[n] == c})) for c in gen_sessions}
    in_sample = {c: summary([full[n] for n in clean if n in fitted and costs_file[n] == c]) for c in gen_sessions
                 if any(costs_file[n] == c for n in fitted)}
    fit_rows = {r["run"]: r for r in fits.get(PLUGIN_FILE, {}).get("fit", {}).get("shared_gpu_runs", [])}
    k1_verify = [(fit_rows[n[1]]["half"], fit_rows[n[1]]["measured"]["verify"], fit_rows[n[1]]["predicted"]["verify"])
                 for n in sorted(fitted, key=lambda n: full[n]["max_num_seqs"])
                 if costs_file[n] == PLUGIN_FILE and full[n]["k"] == 1 and n[1] in fit_rows]
    # the older plugin's PSD runs replayed with the refit costs (plugin.json alone: plugin_file then picks it)
    old_psd = [n for n in clean if costs_file.get(n) == SINGLE_BATCH_FILE and full[n]["policy"] == "psd"]
    with tempfile.TemporaryDirectory() as only_refit:
        (Path(only_refit) / PLUGIN_FILE).write_text((shipped / PLUGIN_FILE).read_text())
        refit_err = [tput_of(validate(n[1], records[n], shipped, "--gpu", 0, plugin=Path(only_refit))) /
                     tput(n, "measured") - 1 for n in old_psd]
    by_pair_k: dict[tuple, list] = {}  # PSD prediction errors by pair and k (default passes)
    for n in full:
        if full[n]["policy"] == "psd" and not variant[n]:
            by_pair_k.setdefault((short(full[n]["target"]), short(full[n]["draft"]), full[n]["k"]), []).append(n)

    def errs(ns: list) -> str:  # one pair and k: its PSD errors, 16 rows then 64, session by session
        sessions = [f for f in folders if any(n[0] == f for n in ns)]
        return ", ".join(", ".join(f"{err(n):+.1%}{'*' if n in fitted else ''}" for n in
                                   sorted((n for n in ns if n[0] == f), key=lambda n: full[n]["max_num_seqs"]))
                         + (f" ({tag[f]})" if len(sessions) > 1 else "") for f in sessions)
    errs_by = "; ".join(f"{t} + {d}, k = {k}: {errs(ns)}" for (t, d, k), ns in sorted(by_pair_k.items()))
    flagged = sorted({f"{full[n]['policy'].upper()} {short(full[n]['target'])} + {short(full[n]['draft'] or '')} "
                      f"k = {full[n]['k']}, max_num_seqs {full[n]['max_num_seqs']} ({session[n]}: "
                      f"{ranges[n][0]:.0f}-{ranges[n][1]:.0f} ms)" for n in full if bad(n)})
    steady = [spread[n] for n in clean]
    # every AR and SD run of these sessions beside the same configuration on the hosts the step models were fitted on
    refs: dict[str, list[tuple[str, list[dict]]]] = {}  # run name -> (session, records) on the reference hosts
    for r in reference:
        for name, recs in load_runs([], str(ROOT / r)).items():
            refs.setdefault(name, []).append((Path(r).name[:10], recs))
    measured = lambda name, recs: compute_metrics(measured_run(recs, name).trace)["output_throughput"]  # noqa: E731
    host_rows = ["| session | run | tok/s | on the step models' hosts | ratio | step p90/p10 |", "|---|---|---|---|---|---|"]
    host_ratio: dict[str, list[float]] = {"ar": [], "sd": []}
    for n in sorted((n for n in full if full[n]["policy"] in ("ar", "sd")),
                    key=lambda n: (full[n]["policy"], full[n]["target"], full[n]["draft"] or "", full[n]["k"],
                                   full[n]["max_num_seqs"], n[0])):
        v = full[n]
        name = (f"policy-sd_target-{v['target']}_draft-{v['draft']}_k-{v['k']}_alpha-0.8_mns-{v['max_num_seqs']}"
                if v["policy"] == "sd" else f"policy-ar_target-{v['target']}_mns-{v['max_num_seqs']}")
        before = [(day, measured(name, recs)) for day, recs in refs.get(name, [])]  # no replay: measured only
        if not before:
            continue
        mean = float(np.mean([t for _, t in before]))
        if not bad(n):
            host_ratio[v["policy"]].append(tput(n, "measured") / mean)
        run = (f"{v['policy'].upper()} {short(v['target'])}" + (f" + {short(v['draft'])}, k = {v['k']}" if v["draft"] else "")
               + f", {v['max_num_seqs']} rows")
        host_rows.append(f"| {session[n]} | {run} | {tput(n, 'measured'):,.0f} | "
                         f"{', '.join(f'{t:,.0f} ({d})' for d, t in before)} | {tput(n, 'measured') / mean:.2f}x | {flag(n)} |")
    host_range = lambda p: f"{min(host_ratio[p]):.2f}-{max(host_ratio[p]):.2f}x" if host_ratio[p] else "–"  # noqa: E731
    good = [(p, k, m, r, c) for p, k, m, r, b, c in ratios if not b]
    stall_lines, unstalled = [], []  # one-time stalls in timed runs; PSD / SD of steady pairs without them
    smallest: dict[str, int] = {}  # per session: the smallest max_num_seqs of its SD runs (each engine's first run)
    for n in full:
        if full[n]["policy"] == "sd":
            smallest[n[0]] = min(smallest.get(n[0], full[n]["max_num_seqs"]), full[n]["max_num_seqs"])
    sd_first = {n for n in full if full[n]["policy"] == "sd" and full[n]["max_num_seqs"] == smallest[n[0]]}
    stalled = {n for n in full if stalls[n][0] > 0}
    late = {f for f in folders if staggered_warmup(f)}
    first_old, first_new = {n for n in sd_first if n[0] not in late}, {n for n in sd_first if n[0] in late}
    where = (f"in {len(stalled & first_old)} of the {len(first_old)} SD runs at the smallest max_num_seqs of their "
             f"session (the first timed run of each SD engine) before the warm-up was staggered, in "
             f"{len(stalled & first_new)} of the {len(first_new)} after it ({', '.join(tag[f] for f in folders if f in late) or 'none yet'}), "
             f"and in {len(stalled - sd_first)} other runs")
    for n in sorted(stalled, key=lambda n: (session[n], n[1])):
        v, (sec, alone, share) = full[n], stalls[n]
        ps = by.get((n[0], v["target"], v["draft"], "psd", v["k"], v["max_num_seqs"], ""))
        adj = ""
        if ps and v["policy"] == "sd":
            r = tput(ps, "measured") / tput(n, "measured")
            adj = f"; PSD / SD {r:.2f}x, without the stall about {r * (1 - share):.2f}x"
            if not (bad(n) or bad(ps)):
                unstalled.append(f"{short(v['target'])} + {short(v['draft'])}, k = {v['k']}, {v['max_num_seqs']} "
                                 f"rows: {r * (1 - share):.2f}x")
        stall_lines.append(f"- {v['policy'].upper()} {short(v['target'])}" + (f" + {short(v['draft'])}, k = {v['k']}"
                           if v["draft"] else "") + f", {v['max_num_seqs']} rows ({session[n]}): {sec:.2f} s at a step "
                           f"of {alone} row{'s' if alone != 1 else ''}, {share:.1%} of the run{adj}")
    pearl = []  # PEARL runs beside the same session's PSD and SD
    for (f, t, d, _, k, mns, var), n in sorted((key, n) for key, n in by.items() if key[3] == "pearl"):
        beside = [f"{tput(n, 'measured') / tput(m, 'measured'):.2f}x {p.upper()}" for p in ("psd", "sd")
                  if (m := by.get((f, t, d, p, k, mns, "")))]
        pearl.append(f"{short(t)} + {short(d)}, k = {k}, {mns} rows ({session[n]}): {tput(n, 'measured'):,.0f} "
                     f"tok/s ({', '.join(beside) or 'no PSD or SD run beside it'}), predicted "
                     f"{tput(n, 'predicted'):,.0f} ({err(n):+.1%}), p90/p10 {flag(n)}")
    full_graphs = []  # PSD with the drafter's FULL graphs beside the default run of the same session and configuration
    for (f, t, d, p, k, mns, var), n in sorted((key, n) for key, n in by.items() if key[3] == "psd"):
        if var == "drafter graphs FULL" and (base := by.get((f, t, d, p, k, mns, ""))):
            draft = [op_medians(run.trace, half_capacity(run.cfg))["draft"]
                     for run in (measured_run(records[m], m[1]) for m in (n, base))]
            full_graphs.append((session[n], t, d, k, mns, tput(n, "measured") / tput(base, "measured"),
                                draft[0] / draft[1], *draft))
    want = {(t, d, k, m) for t, d in (("qwen3-32b", "qwen3-0.6b"), ("qwen3-32b", "qwen3-1.7b"), ("qwen3-8b", "qwen3-0.6b"))
            for k in (1, 3, 5) for m in (16, 64)}
    k3 = {(t, d, 3, m) for t, d, k, m in want if d == "qwen3-0.6b"}  # measured 2026-11-23 (the two-GPU machine)
    missing = sorted(want - cells - k3)
    files = lambda c, what: f"`{c}` ({what}: {', '.join(gen_sessions[c]) or 'none'})"  # noqa: E731
    fit_sessions = lambda c: (f"fitted the PSD runs of {', '.join(fit_of[c][0]) or 'none'}"  # noqa: E731
                              + (f" and none of {', '.join(fit_of[c][1])}" if fit_of[c][1] else ""))
    generations = (
        f"The plugin changed on 2026-12-04 (resident halves in the target's and the drafter's vLLM runners, the "
        f"drafter's FULL CUDA graphs by default, its prefill chunks under graphs; `docs/psd_plugin.md`): each plugin "
        f"run is predicted with the plugin costs of the plugin it measured, as `minedraft-validate` picks them from the "
        f"run's engine facts (`resident_batches`, the drafter's `resident`): "
        f"{files(SINGLE_BATCH_FILE, 'the plugin before 2026-12-04, the 2026-12-02 fit')}, which "
        f"{fit_sessions(SINGLE_BATCH_FILE)}; and {files(PLUGIN_FILE, 'the 2026-12-04 plugin')}, which "
        f"{fit_sessions(PLUGIN_FILE)}: the refit describes only the 2026-12-04 plugin, and its runs are in sample "
        f"(marked *), counted in no held-out statistic below (`calibration/data/profiles/h200/`, each file's "
        f"provenance).")
    if refit_err:
        generations += (
            f" Replayed with the refit costs instead, the {len(refit_err)} steady PSD runs of the older plugin "
            f"would be predicted at {min(refit_err):+.1%} to {max(refit_err):+.1%} (median |error| "
            f"{float(np.median(np.abs(refit_err))):.1%}): those costs describe another plugin, and are not "
            f"expected to match.")
    star = ("\n\n\\* in sample: the run is one the plugin costs that predicted it were fitted on." if fitted else "")
    check_lines = []
    for f, n, r in sorted(checks, key=lambda x: (x[0], header_config(x[2]).get("max_num_seqs") or 0)):
        cfg = header_config(r)
        acc = compute_metrics(measured_run(r, n).trace)["mean_acceptance_length"]
        check_lines.append(f"{short(cfg['target'])} drafting for itself, k = {cfg['k']}, {cfg['max_num_seqs']} rows "
                           f"({tag[f]}): mean acceptance length {acc:.2f} (k + 1 = {cfg['k'] + 1})")
    check_text = (f"**Correctness checks, not benchmark cells** (left out of the table and of every statistic; no "
                  f"step model describes a model drafting for itself): {'; '.join(check_lines)}; α = 0, the models' "
                  f"own acceptance, so any wrong block table or stale token of the resident halves or the drafter's "
                  f"FULL graphs would show as rejected drafts.\n\n") if check_lines else ""
    gen_name = {SINGLE_BATCH_FILE: "the plugin before 2026-12-04", PLUGIN_FILE: "the 2026-12-04 plugin"}
    by_gen = lambda c: [r for p, k, m, r, g in good if g == c]  # noqa: E731
    ratio_ranges = " and ".join(f"{min(by_gen(c)):.2f}-{max(by_gen(c)):.2f}x SD's with {gen_name[c]}" for c in gen_name
                                if by_gen(c))
    e2e_ranges = " and ".join(f"{min(x for x, g in e2e if g == c):.1f}-{max(x for x, g in e2e if g == c):.1f}x SD's "
                              f"with {gen_name[c]}" for c in gen_name if any(g == c for _, g in e2e))
    insample = "; ".join(f"`{c}` on its own {in_sample[c]['runs']} steady runs: median "
                         f"{in_sample[c]['output_throughput']['median_abs_error']:.1%}, worst "
                         f"{in_sample[c]['output_throughput']['max_abs_error']:.1%}" for c in in_sample)
    k1_text = (" The refit leaves the 2026-12-04 plugin's k = 1 runs over-predicted, in sample: the model stretches a "
               "shared verify by the drafter's passes after its first only, none at k = 1, yet their verifies measured "
               + ", ".join(f"{m * 1e3:.1f} ms against the step model's {q * 1e3:.1f} ms ({b} rows)" for b, m, q in k1_verify)
               + " (`plugin.json`, its fit rows): with the drafter's FULL graphs its first pass seems no longer to hide "
               "in the verify's gaps, which the model's sharing term does not describe.") if k1_verify else ""
    new_ops = [(tag[f], r) for f in folders for r in psd_costs_drafter(f)]
    new_ops_text = ("With the 2026-12-04 plugin (FULL drafter graphs, copies resident; `benchmarks/psd_costs.py`'s "
                    "result lines, medians) the op is its passes and little else: " + "; ".join(
                        f"{short(r['target'])} + {short(r['draft'])} k = {r['k']}, {r['max_num_seqs']} rows ({day}): "
                        f"op {r['drafter']['op_ms']:.1f} ms, first pass {r['drafter']['first_pass_ms']:.1f} ms"
                        + (f", later {r['drafter']['later_pass_ms']:.1f} ms" if r["drafter"]["later_pass_ms"] else "")
                        + f", outside the passes {r['drafter']['op_ms'] - r['drafter']['passes_ms']:.1f} ms"
                        for day, r in sorted(new_ops, key=lambda x: (x[1]["target"], x[1]["k"], x[1]["max_num_seqs"])))
                    + ".\n\n") if new_ops else ""
    return f"""## PSD sharing one H200 at k = 1, 3 and 5 (issue 8)

Measured in {", ".join(f"`{f}` ({tag[f]})" for f in folders)} (one H200 each, vLLM 0.26.0; COMMANDS.md there): minedraft's
plugin with the drafter sharing the target's GPU (PSD, capacity double) against vLLM's SD and AR, each row from one
session on one machine; synthetic α = 0.8, max_num_seqs 16 and 64, 256/256 tokens, two waves. Predicted with the
shipped H200 step models and plugin costs (`minedraft-validate --all FOLDER --gpu h200`). The step models fitted
none of these runs. {generations} The last column is each run's steadiness: p90 / p10 of its full-batch target steps, which do the same GPU
work every step; above {DISTURBED} a run is flagged as disturbed. (For Qwen3-8B SD at k ≥ 3 that test is weak: on the
2026-11-23 host its steps spread 1.27-1.53 in runs that repeated.) AR is "–" where the session did not run that
target.

{chr(10).join(rows)}{star}

{check_text}**Disturbed** (flagged, left out of the conclusions): {"; ".join(flagged) if flagged else "none"}. Steady runs hold
p90/p10 {min(steady):.2f}-{max(steady):.2f}.

**One-time stalls** (a decode or verify step without prefill over {STALL_S} s): {where}, each at the first step of
one row. The warm-up requests all finished together and never reached that path; since {STAGGERED_WARMUP} warm-up lengths
are staggered (`Engine.warmup`), so the batch shrinks to one row before timing. Without the stall, a run's throughput would be higher by about its share:

{chr(10).join(stall_lines) or "- none"}

**These hosts against the step models' hosts.** Every AR and SD run above beside the same configuration measured on
{" and ".join(Path(r).name[:10] for r in reference)} (`benchmarks/gpu_ar_sd.py`, other H200 hosts; the step models were
fitted there). Steady runs only in the ranges: AR ran at {host_range("ar")} and SD at {host_range("sd")}. SD's step,
k small-drafter forwards and a verify inside vLLM's one process, is host-bound; so on a slower host SD loses more
than AR, and PSD's drafter, in a process of its own, may lose less. A PSD / SD ratio is therefore a ratio on one
host, and the SD over-predictions above are mostly this host offset.

{chr(10).join(host_rows)}

Reruns (an SD job repeated without its PSD partner):

{chr(10).join(rerun_lines)}

The steady runs' predictions, output throughput |error|: PSD runs the plugin costs that predicted them did not fit
(held out), median {sp['output_throughput']['median_abs_error']:.1%}, worst {sp['output_throughput']['max_abs_error']:.1%} ({sp['runs']} runs); AR and SD, median
{sa['output_throughput']['median_abs_error']:.1%}, worst {sa['output_throughput']['max_abs_error']:.1%} ({sa['runs']} runs: the step models
over-predict these hosts, as on the 2026-11-23 two-GPU machine). In sample, not validation: {insample or "none"}.

**What this says** (measured, same session, both runs steady): PSD sharing one GPU against vLLM's SD at the same
max_num_seqs: {'; '.join(f'{p}, k = {k}, {m} rows: {r:.2f}x' for p, k, m, r, _ in good)}. Sharing the GPU, PSD's
throughput is {ratio_ranges}, and it pays in latency: with twice
the requests in flight (double), its mean E2E is {e2e_ranges}. Those SD runs at 16 rows
hold a one-time stall (above); without it, PSD / SD would be about {"; ".join(unstalled) or "the same"}. PSD's prediction errors by pair and k (16 rows, then 64; * fitted by the
plugin costs that predicted them): {errs_by}. The sharing is modelled per drafter pass (a verify stretches by the drafter's
passes after its first, `docs/calibration.md`), so the older plugin's errors no longer change sign with k; the 8B at k = 5 with
16 rows is under-predicted because its drafter op is over-predicted (the SD step fit's first forward).{k1_text}

Not yet measured on one GPU (issue 8 item 4): {", ".join(f"{short(t)} + {short(d)} k = {k}, {m} rows" for t, d, k, m in missing) or "no PSD configuration"}; PSD configurations with no SD run beside them in any session: {", ".join(f"{short(t)} + {short(d)} k = {k}, {m} rows" for t, d, k, m in sorted(no_sd)) or "none"}.

PEARL (drafter sharing the GPU): {"; ".join(pearl) or "not yet run on a GPU"}.

The drafter's own account of its op (medians over each run's ops; `draft_op_breakdown` of `benchmarks/gpu_psd.py`):

{chr(10).join(ops)}

{new_ops_text}With the plugin before 2026-12-04 (the table), the first runner pass of each op costs {min(excess):.1f}-{max(excess):.1f} ms more than the later ones inside these runs; our
Python around the passes takes at most {outside:.1f} ms. The same op in isolation (`benchmarks/drafter_op.py`, Qwen3-0.6B,
k = 3, `{iso_file}`) costs only {iso}: re-entering the copies is not what costs the time, the run's conditions
are. Three differ: ops alternate between two halves of requests, the drafter idles while the target verifies, and a
run's rows need one or two tokens at an op's start (two where every draft was accepted) where the isolated op's all
need one, so a run's first pass is a mixed batch under vLLM's PIECEWISE CUDA graphs. {conditions_text(folders, full_graphs)}
"""


def conditions_text(folders: list[str], full_graphs: list[tuple]) -> str:
    """The isolated drafter op under each run condition (``benchmarks/drafter_op.py --halves 1,2 --idle-ms 0,20
    --uniform 0,1 --cudagraph-mode ,FULL``, the job ``drafter-op-conditions``), where a session measured it."""
    found = [ROOT / f / "results_drafter-op-conditions.jsonl" for f in folders
             if (ROOT / f / "results_drafter-op-conditions.jsonl").exists()]
    if not found:
        return ("`benchmarks/drafter_op.py --halves 2 --idle-ms 20 --alpha 0.8 --uniform 0,1` replays each "
                "(`--uniform 1`: the plugin's `drafter_uniform_passes`, one-token passes only) for the next GPU session "
                "to tell which.")
    path = found[-1]
    rows = [r for line in path.read_text().splitlines() if line.startswith("{")
            and "op_ms" in (r := json.loads(line))]
    conds = sorted({(r["halves"], r["idle_ms"]) for r in rows})
    cell = {(r["rows"], r["cudagraph_mode"] or "PIECEWISE", r["uniform_passes"], r["halves"], r["idle_ms"]): r
            for r in rows}
    fmt = lambda r: (f"{r['op_ms']:.1f} ({r['forward_ms'][0]:.1f} / {np.median(r['forward_ms'][1:]):.1f})"  # noqa: E731
                     if r else "–")
    table = ["| rows | drafter graphs | passes | " + " | ".join(f"{h} {'halves' if h > 1 else 'half'}, idle {i:.0f} ms"
                                                          for h, i in conds) + " |",
             "|---|---|---|" + "---|" * len(conds)]
    keys = sorted({(k[0], k[1], k[2]) for k in cell}, key=lambda k: (k[0], k[1] != "PIECEWISE", k[2]))
    for b, g, u in keys:
        table.append(f"| {b} | {g} | {'one token each' if u else 'mixed first'} | "
                     + " | ".join(fmt(cell.get((b, g, u, h, i))) for h, i in conds) + " |")
    sizes = sorted({k[0] for k in keys})
    ratio = lambda g, u: [cell[(b, g, u, h, i)]["op_ms"] / cell[(b, "PIECEWISE", False, h, i)]["op_ms"]  # noqa: E731
                          for b in sizes for h, i in conds if (b, g, u, h, i) in cell]
    full, uniform = ratio("FULL", False), ratio("PIECEWISE", True)
    small = sizes[0]
    firsts = lambda g: [cell[(small, g, False, h, i)]["forward_ms"][0] for h, i in conds  # noqa: E731
                        if (small, g, False, h, i) in cell]
    first, first_full = firsts("PIECEWISE"), firsts("FULL")
    model, k = rows[0]["model"], rows[0]["k"]
    return (f"`benchmarks/drafter_op.py` replayed each in isolation (`{path.relative_to(ROOT)}`, {model}, k = {k}, "
            f"α = {rows[0]['alpha']}; op ms (first / median later pass ms), medians of {rows[0]['ops']} ops):\n\n"
            + "\n".join(table) + "\n\n"
            f"The mixed first pass under PIECEWISE graphs is what costs: at {small} rows it takes "
            f"{min(first):.1f}-{max(first):.1f} ms across the conditions (halves and idle time move it, but never "
            f"near the later passes), and {min(first_full):.1f}-{max(first_full):.1f} ms under FULL graphs. The op under "
            f"FULL graphs takes {min(full):.2f}-{max(full):.2f}x its PIECEWISE time; one-token passes "
            f"(`drafter_uniform_passes`) {min(uniform):.2f}-{max(uniform):.2f}x. " + full_graphs_text(full_graphs))


def full_graphs_text(found: list[tuple]) -> str:
    """PSD runs with the drafter's FULL CUDA graphs beside the default (PIECEWISE) run of the same configuration and
    session (``found``: session, target, drafter, k, rows, throughput ratio, drafter-op ratio, the two op medians)."""
    if not found:
        return ("Not yet measured inside a PSD run (the queued `psd-32b-0.6b-k1-drafter-full-graphs`), so the "
                "plugin's default is unchanged.")
    short = lambda m: m.replace("qwen3-", "")  # noqa: E731
    cells = "; ".join(f"{short(t)} + {short(d)} k = {k}, {m} rows ({day}): throughput {r:.3f}x, drafter op "
                      f"{a * 1e3:.1f} ms against {b * 1e3:.1f} ms ({o:.2f}x)" for day, t, d, k, m, r, o, a, b in found)
    return (f"Inside PSD runs (FULL beside PIECEWISE, one session, one run each): {cells}. The op shrinks as in "
            "isolation, but the target's verify, not the drafter, bounds a PSD step here, so throughput moves by a "
            "few per cent. The plugin's default stayed PIECEWISE until 2026-12-04, and `plugin-single-batch.json` "
            "describes that plugin (the FULL runs above are predicted with the same costs); since 2026-12-04 FULL is "
            "the default, with resident halves, and `plugin.json` is fitted to that plugin (the 2026-12-04 rows).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measurements", default="docs/measurements/2026-11-23-h200-ar-sd")
    ap.add_argument("--psd-measurements", default="docs/measurements/2026-11-23-h200x2-psd")
    ap.add_argument("--one-gpu-measurements", nargs="+", default=["docs/measurements/2026-12-01-h200-psd-shared",
                                                                 "docs/measurements/2026-12-02-h200-psd-shared",
                                                                 "docs/measurements/2026-12-02-h200-psd-32b-1.7b",
                                                                 "docs/measurements/2026-12-02-h200-pearl-32b-1.7b",
                                                                 "docs/measurements/2026-12-03-h200-psd-k3-drafter-graphs",
                                                                 "docs/measurements/2026-12-03b-h200-exec-cli",
                                                                 "docs/measurements/2026-12-04-h200-psd-costs",
                                                                 "docs/measurements/2026-12-04-h200-psd-overlap"])
    a = ap.parse_args()
    runs = load_runs([], str(ROOT / a.measurements))
    one_gpu = {f: load_runs([], str(ROOT / f)) for f in a.one_gpu_measurements}  # both one-GPU sections read them
    shipped = ROOT / "calibration/data/profiles/h200"
    res_a = split(runs, ["alpha-0.8"], shipped)
    with tempfile.TemporaryDirectory() as tmp:
        fit_to(Path(tmp), runs, ["mns-16", "mns-32"])
        res_b = split(runs, ["mns-16", "mns-32"], Path(tmp))
    rep = repeatability(runs)
    sa, sb = summary(res_a), summary(res_b)
    a32 = [r for r in res_a if r["target"] == "qwen3-32b"]
    a8 = [r for r in res_a if r["target"] == "qwen3-8b"]
    s32, s8, n32, n8 = summary(a32), summary(a8), len(a32), len(a8)
    rep32 = max(abs(v) for n, v in rep if n.startswith("qwen3-32b"))
    figs = ROOT / "docs/figures"
    fig = summary_figure(res_a)
    fig.update_layout(title="Split A: held-out alpha = 0.8 SD runs on H200 (predicted vs measured; ±5% dotted, ±10% dashed)")
    png = save_figure(fig, figs / "validation_h200_split_a", 1000, 450) == "png"
    (figs / "validation_numbers.json").write_text(json.dumps({"split_a": sa, "split_b": sb,
                                                              "repeatability": rep}, indent=2) + "\n")

    def pct(s: dict, key: str) -> str:
        return f"median {s[key]['median_abs_error']:.1%}, worst {s[key]['max_abs_error']:.1%}"

    worst = max(rep, key=lambda x: abs(x[1]))  # noqa: F841 - used in the text
    knees = ", ".join(f"{p.stem} {json.loads(p.read_text())['affine'].get('knee_tokens', 0):.0f} tokens"
                      for p in sorted(shipped.glob("*.json")) if "+" not in p.stem and p.name not in (PLUGIN_FILE, SINGLE_BATCH_FILE))
    spread = np.abs([x[1] for x in rep])
    doc = f"""# Validation: predicted vs measured

Every number on this page is printed by `python scripts/validation_report.py` from the committed GPU
measurements in `{a.measurements}` (one NVIDIA H200, vLLM 0.26.0, torch 2.11; see its COMMANDS.md) and,
for PSD, `{a.psd_measurements}` and {', '.join(f'`{f}`' for f in a.one_gpu_measurements)}, and
can be re-checked run by run with `minedraft-validate RUN --gpu h200` or `minedraft-validate --all DIR
--gpu h200`.

## Method

`minedraft-validate` re-simulates exactly what a measured run did: the same requests (their actual prompt
and output lengths and arrival times, from the trace's request records), the same engine configuration
(policy, k, max_num_seqs, the 2048-token step budget, vLLM V1's chunked prefill: `prefill_mode=chunked`,
where prompt chunks ride in decode steps and the drafter runs inside the target's step), the run's
acceptance (its synthetic α), and step times from the fitted step models: one `Affine` line per target and
per (target, drafter) pair, `fixed + per_token x max(tokens, knee) + per_context x cached tokens read +
per_prompt_token x prompt tokens`, fitted by non-negative least squares to every engine step of the calibration runs
(`minedraft.calibration.steps`; `minedraft-calibrate latency --from DIR --gpu GPU --hold-out PATTERNS --out DIR`). The simulator and the fit compose a
vLLM SD step the same way: the target's forward over the decode rows and prompt chunks, then the
drafter's k forwards over the same rows.

Calibration and validation runs are disjoint:
- **Split A** (the shipped profiles, `calibration/data/profiles/h200/`): calibrated on the AR runs and the
  α = 0.6 SD runs (36 runs); validated on all {len(res_a)} α = 0.8 SD runs.
- **Split B**: calibrated on max_num_seqs 8 and 64 (both α); validated on the {len(res_b)} SD runs at
  max_num_seqs 16 and 32.

## Results

| split | held-out runs | output throughput \\|error\\| | mean E2E \\|error\\| |
|---|---|---|---|
| A (α held out) | {sa['runs']} | {pct(sa, 'output_throughput')} | {pct(sa, 'mean_e2el_ms')} |
| B (batch held out) | {sb['runs']} | {pct(sb, 'output_throughput')} | {pct(sb, 'mean_e2el_ms')} |

The goal was a median error of at most 5% and a worst case of at most 10%. Over all held-out runs **the
medians meet it and the worst cases do not**: split A's worst throughput error is
{sa['output_throughput']['max_abs_error']:.1%}, split B's {sb['output_throughput']['max_abs_error']:.1%}. On the
**{n32} held-out Qwen3-32B configurations** (k 1, 3, 5 x max_num_seqs 8-64 x drafters 0.6B and 1.7B),
whose measurements repeat within {rep32:.1%}, **the goal is met**: throughput {pct(s32, 'output_throughput')}, mean
E2E {pct(s32, 'mean_e2el_ms')}. The misses are all Qwen3-8B runs, explained below.

{"![split A](figures/validation_h200_split_a.png)" if png else ""}

([interactive](figures/validation_h200_split_a.html))

### Split A, run by run

{chr(10).join(table(res_a))}

## Where the worst cases come from

By target: Qwen3-32B runs ({n32} held out in split A): throughput {pct(s32, 'output_throughput')},
E2E {pct(s32, 'mean_e2el_ms')}; Qwen3-8B runs ({n8}): throughput {pct(s8, 'output_throughput')},
E2E {pct(s8, 'mean_e2el_ms')}. The largest errors are all Qwen3-8B at k = 3 and 5, and there the
measurements themselves do not repeat. In vLLM's synthetic mode α decides which drafts are accepted, not
the GPU work of a step, so full-batch decode steps with the same target, drafter, k and batch should take
the same time at α = 0.6 and α = 0.8:

| configuration | median step time, α = 0.8 over α = 0.6 |
|---|---|
{chr(10).join(f"| {n} | {v:+.1%} |" for n, v in rep)}

For Qwen3-32B they agree within {rep32:.1%} in every pair. For Qwen3-8B they differ by up to
{abs(worst[1]):.1%} ({worst[0]}). The α = 0.8 runs always ran after the α = 0.6 runs in the same engine
process, and the difference changes sign: slower at k = 5, faster at k = 3 and batch 32-64. That looks
like drift or noise of the machine and engine, not a term of the step-time model. No model of step time
can be held to 10% against data that varies this much for the same work. Repeated runs in
the next GPU session will measure this spread directly.

What the model now holds, and what remains:
- **The knee from memory-bound to compute-bound forwards is modelled**: each target's token term is flat
  below a knee that the fit chooses ({knees}). A straight line cannot follow, for example,
  Qwen3-8B's SD k = 3 steps, flat from batch 8 to 32 (≈15 ms) and then rising (≈20 ms at 64).
- **CUDA-graph padding** to the captured batch sizes is not modelled; it shows as step-to-step scatter
  (held-out step error p90 ≈ 11%), which averages out over a run.
- **The first run after an engine start is slower.** Qwen3-8B k = 3, α = 0.6, batch 8 runs 22.4 ms per
  step against 15.2 ms at α = 0.8, even after eight warm-up requests. It sits in the calibration set.

Next: more warm-up before the first timed run, and repeated runs, so each configuration's noise is
known.

{one_gpu_section(one_gpu, shipped, [a.measurements, "docs/measurements/2026-11-24-h200-sd"])}
{exec_section(one_gpu, shipped)}
{psd_section(a.psd_measurements, shipped)}
## The published 5-GPU layout (issue 11): predicted, not yet measured

Qwen3-32B at TP 4 + a drafter GPU against SD at TP 4 needs eight H200s, not lent so far. The simulator's
predictions for every run of that grid are in `docs/published_layout.md` (`scripts/published_predictions.py`),
made before the run so that the run can check them.

## CPU regression check (CI)

`tests/test_validation_vllm.py` runs the same pipeline on vLLM's CPU build in CI (marker `vllm`): it calibrates
on CPU runs of a tiny model and predicts a different CPU run; see the test for its bound and why.
"""
    (ROOT / "docs/validation.md").write_text(doc)
    print(f"split A: {pct(sa, 'output_throughput')} (throughput); {pct(sa, 'mean_e2el_ms')} (E2E)")
    print(f"split B: {pct(sb, 'output_throughput')} (throughput); {pct(sb, 'mean_e2el_ms')} (E2E)")
    print(f"repeatability: median {np.median(spread):.1%}, worst {abs(worst[1]):.1%} ({worst[0]})")


if __name__ == "__main__":
    main()

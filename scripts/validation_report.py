"""Write docs/validation.md: predicted vs measured on held-out GPU runs, from committed measurements.

Usage: python scripts/validation_report.py [--measurements docs/measurements/2026-11-23-h200-ar-sd]
                                          [--psd-measurements docs/measurements/2026-11-23-h200x2-psd]
                                          [--one-gpu-measurements docs/measurements/2026-12-01-h200-psd-shared]

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
import tempfile
from pathlib import Path

import numpy as np

from minedraft.calibration.steps import fit_steps, step_rows
from minedraft.cli.validate import load_runs, summary, validate
from minedraft.report import save_figure
from minedraft.validation import summary_figure

ROOT = Path(__file__).resolve().parents[1]
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
    fit = json.loads((shipped / "plugin.json").read_text())
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

Three costs of the plugin are therefore fitted (`minedraft-calibrate plugin --from {folder} --gpu h200
--hold-out alpha-0.8 --out calibration/data/profiles/h200`, `minedraft.calibration.plugin`, on the α = 0.6
runs only): **{fit['drafter_op_s'] * 1e3:.1f} ms per drafter op** (its process re-enters the requests' copies
and builds a fresh input batch each op; the step models give the 0.6B drafter's three forwards 6-13 ms),
**{fit['verify_swap_s'] * 1e3:.1f} ms + {fit['verify_swap_row_s'] * 1e6:.0f} µs per row for each verify of
alternating halves** (vLLM's persistent batch drops one half's rows and re-adds the other's every step) and a **{fit['shared_gpu_slowdown']:+.0%} slowdown** of overlapping target and drafter ops when both
processes share one GPU (time-sliced, not concurrent). The drafter op is hidden behind the target's verify on
its own GPU, but not when sharing.

| held out | runs | output throughput \|error\| | mean E2E \|error\| |
|---|---|---|---|
| PSD α = 0.8 (step models + plugin costs) | {sh['runs']} | median {sh['output_throughput']['median_abs_error']:.1%}, worst {sh['output_throughput']['max_abs_error']:.1%} | median {sh['mean_e2el_ms']['median_abs_error']:.1%}, worst {sh['mean_e2el_ms']['max_abs_error']:.1%} |
| same-session AR and SD (step models, none of these runs fitted) | {sb['runs']} | median {sb['output_throughput']['median_abs_error']:.1%}, worst {sb['output_throughput']['max_abs_error']:.1%} | median {sb['mean_e2el_ms']['median_abs_error']:.1%}, worst {sb['mean_e2el_ms']['max_abs_error']:.1%} |

The step models over-predict this machine's AR and SD throughput by {min(offs):.0%}-{max(offs):.0%} (they
were fitted on another H200 host): part of that offset sits in the fitted plugin costs too. The worst held-out PSD
prediction is {worst_psd['target']} ({worst_psd['psd_drafter']} GPU, {worst_psd['psd_capacity']}, batch
{worst_psd['max_num_seqs']}: {err(worst_psd):+.1%}): one slowdown factor for both ops, fitted mostly on the
32B runs, is too coarse there (the 8B's verify is short next to the drafter's op).

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


def step_range(records: list[dict]) -> tuple[float, float]:
    """p10 and p90 (ms) of a run's full-batch target decode/verify ops."""
    ops = [r for r in records if r.get("type") == "op" and r.get("resource") == "target"
           and r.get("op") in ("decode", "verify") and not r.get("prefill_tokens")]
    full = max(o.get("size", 0) for o in ops)
    d = np.array([o["t_end"] - o["t_start"] for o in ops if o.get("size") == full]) * 1e3
    return float(np.percentile(d, 10)), float(np.percentile(d, 90))


def one_gpu_section(folder: str, shipped: Path) -> str:
    """PSD with the drafter sharing one H200 against vLLM's SD and AR of the same session, k = 1 and 5."""
    runs = load_runs([], str(ROOT / folder))
    full = {n: validate(n, r, shipped, "--gpu", 0) for n, r in runs.items()}
    ranges = {n: step_range(r) for n, r in runs.items()}  # p10, p90 of full-batch steps: the same GPU work each
    spread = {n: hi / lo for n, (lo, hi) in ranges.items()}  # step, so p90/p10 well above the others: disturbed
    by = {(v["policy"], v["k"], v["max_num_seqs"]): n for n, v in full.items()}
    results = {}
    for path in sorted((ROOT / folder).glob("results_*.jsonl")):
        for line in path.read_text().splitlines():
            j = json.loads(line)
            if j.get("kind") == "result" and j.get("policy") == "psd":
                results[(j["k"], j["max_num_seqs"])] = j
    tput = lambda n, w: full[n][w]["output_throughput"]  # noqa: E731
    mr = lambda k, m: tput(by[("psd", k, m)], "measured") / tput(by[("sd", k, m)], "measured")  # noqa: E731
    pr = lambda k, m: tput(by[("psd", k, m)], "predicted") / tput(by[("sd", k, m)], "predicted")  # noqa: E731
    err = lambda n: tput(n, "predicted") / tput(n, "measured") - 1  # noqa: E731
    flag = lambda n: f"{spread[n]:.2f}" + (" **disturbed**" if spread[n] > DISTURBED else "")  # noqa: E731
    rows = ["| k | max_num_seqs | AR tok/s | SD tok/s | PSD tok/s | PSD / SD | PSD / AR | SD / AR | PSD predicted "
            "(error) | SD predicted (error) | PSD / SD predicted | step p90/p10 SD, PSD |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    for k, mns in sorted({(v["k"], v["max_num_seqs"]) for v in full.values() if v["policy"] == "psd"}):
        ps, sd, ar = by[("psd", k, mns)], by[("sd", k, mns)], by[("ar", 0, mns)]
        r = mr(k, mns)
        ratios.append((k, mns, r, spread[sd] > DISTURBED))
        rows.append(f"| {k} | {mns} | {tput(ar, 'measured'):,.0f} | {tput(sd, 'measured'):,.0f} | "
                    f"{tput(ps, 'measured'):,.0f} | {r:.2f}x | {tput(ps, 'measured') / tput(ar, 'measured'):.2f}x | "
                    f"{tput(sd, 'measured') / tput(ar, 'measured'):.2f}x | {tput(ps, 'predicted'):,.0f} ({err(ps):+.1%}) | "
                    f"{tput(sd, 'predicted'):,.0f} ({err(sd):+.1%}) | "
                    f"{pr(k, mns):.2f}x | {flag(sd)}, {flag(ps)} |")
    ops = ["| k | rows per half | drafter op ms | its runner passes ms | outside the passes ms |", "|---|---|---|---|---|"]
    for (k, mns), j in sorted(results.items()):
        b = j["overlap"]["draft_op_breakdown"]
        ops.append(f"| {k} | {mns} | {b['op_ms']:.1f} | {' / '.join(f'{x:.1f}' for x in b['forward_ms'])} | "
                   f"{b['outside_forwards_ms']:.1f} |")
    clean = [n for n in full if spread[n] <= DISTURBED]
    sc = summary([full[n] for n in clean])
    good = [(k, m, r) for k, m, r, bad in ratios if not bad]
    bad = [(k, m, r, *ranges[by[("sd", k, m)]]) for k, m, r, b in ratios if b]
    steady = [v for v in spread.values() if v <= DISTURBED]
    e2e = {key: full[by[key]]["measured"]["mean_e2el_ms"] for key in by}
    excess = [f[0] - f[1] for x in results if x[0] == 5 for f in [results[x]["overlap"]["draft_op_breakdown"]["forward_ms"]]]
    return f"""## PSD sharing one H200 at k = 1 and 5 (issue 8)

Measured in `{folder}` (one H200, vLLM 0.26.0, 2026-12-01; COMMANDS.md there): minedraft's plugin with the drafter
sharing the target's GPU (PSD, capacity double), vLLM's SD and AR, all in one session on one machine; Qwen3-32B +
Qwen3-0.6B, synthetic α = 0.8, max_num_seqs 16 and 64, 256/256 tokens, two waves. Predicted with the shipped H200
step models and plugin costs (`minedraft-validate --all {folder} --gpu h200`); none of these runs was fitted.
The last column is each run's steadiness: p90 / p10 of its full-batch target steps, which do the same GPU work every
step.

{chr(10).join(rows)}

{"**Disturbed**: " + "; ".join(f"SD at k = {k}, max_num_seqs {m} (full-batch steps {lo:.0f}-{hi:.0f} ms, p10-p90)" for k, m, _, lo, hi in bad) + f", where every other run's steps hold p90/p10 {min(steady):.2f}-{max(steady):.2f}; so its PSD / SD ratio " + ", ".join(f"{r:.2f}x" for _, _, r, _, _ in bad) + " is not a measurement of PSD; it is left out of the conclusions and waits for a rerun." if bad else "No run was disturbed."}
The steady runs' predictions: output throughput {'|error|'} median {sc['output_throughput']['median_abs_error']:.1%},
worst {sc['output_throughput']['max_abs_error']:.1%} ({sc['runs']} runs); AR and SD are over-predicted here as on
the 2026-11-23 two-GPU machine (the step models come from another H200 host).

**What this adds** (measured, same session, steady runs): PSD sharing one GPU against vLLM's SD at the same
max_num_seqs: {', '.join(f'{r:.2f}x at k = {k}, max_num_seqs {m}' for k, m, r in good)}. So sharing the GPU, PSD
at best ties SD (k = 1, 16 rows) and loses at 64 rows, as at k = 3 (2026-11-23, below), and it
pays in latency: with twice the requests in flight (double), its mean E2E is
{e2e[('psd', 1, 16)] / e2e[('sd', 1, 16)]:.1f}x SD's at k = 1, 16 rows and {e2e[('psd', 5, 64)] / e2e[('sd', 5, 64)]:.1f}x at k = 5, 64 rows.
Predicted, PSD / SD is {pr(1, 16):.2f}x and {pr(1, 64):.2f}x at k = 1 (measured {mr(1, 16):.2f}x, {mr(1, 64):.2f}x) and
{pr(5, 64):.2f}x at k = 5, 64 rows (measured {mr(5, 64):.2f}x): the plugin's one fixed drafter-op cost, fitted at k = 3,
does not follow k (PSD is under-predicted at k = 1 and over-predicted at k = 5).

The drafter's own account of its op (medians over each run's ops; `draft_op_breakdown` of `benchmarks/gpu_psd.py`):

{chr(10).join(ops)}

The first runner pass of each op re-enters the requests' copies and costs {min(excess):.1f}-{max(excess):.1f} ms
more than the later ones at k = 5; that, not our Python around the passes (outside the passes: at most
{max(results[x]["overlap"]["draft_op_breakdown"]["outside_forwards_ms"] for x in results):.1f} ms), is the plugin's
drafter-op overhead. Keeping requests resident in the drafter's runner (docs/psd_plugin.md, open problems) is the
lever it points to.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measurements", default="docs/measurements/2026-11-23-h200-ar-sd")
    ap.add_argument("--psd-measurements", default="docs/measurements/2026-11-23-h200x2-psd")
    ap.add_argument("--one-gpu-measurements", default="docs/measurements/2026-12-01-h200-psd-shared")
    a = ap.parse_args()
    runs = load_runs([], str(ROOT / a.measurements))
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
                      for p in sorted(shipped.glob("*.json")) if "+" not in p.stem and p.name != "plugin.json")
    spread = np.abs([x[1] for x in rep])
    doc = f"""# Validation: predicted vs measured

Every number on this page is printed by `python scripts/validation_report.py` from the committed GPU
measurements in `{a.measurements}` (one NVIDIA H200, vLLM 0.26.0, torch 2.11; see its COMMANDS.md) and,
for PSD, `{a.psd_measurements}` and `{a.one_gpu_measurements}`, and
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

{one_gpu_section(a.one_gpu_measurements, shipped)}
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

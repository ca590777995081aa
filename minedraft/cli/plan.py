"""``minedraft-plan``: which policy, k, batch and GPU split serve this traffic within a p99 SLO, for the fewest GPUs?

Searches AR, SD, PSD and PEARL configurations (TP, k or a k schedule, max_num_seqs, psd_capacity, PSD's
schedule, SD's drafter placement, the draft model) under a GPU budget: the theory prunes, the simulator measures the
survivors. Writes a self-contained HTML report (Plotly, opens offline), a Markdown summary and the JSON
behind both. Points run in local processes, or on a Ray cluster with ``--ray-address``; every finished
point is appended to a JSONL checkpoint, so a killed plan resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from rich.table import Table

from minedraft.cli import common
from minedraft.errors import InputError, require
from minedraft.policies import POLICIES
from minedraft.report import console

DEFAULT_OUT = "plan-report"


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-plan", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("models and hardware (comma lists: each is an alternative the plan weighs)")
    g.add_argument("--target", default="qwen3-32b", help="target model preset(s) or local model dir(s)")
    g.add_argument("--draft", default="qwen3-0.6b,qwen3-1.7b", help="draft model(s) to choose from")
    g.add_argument("--gpu", default="h200", help="GPU type(s): h100, h200, a100-80gb, l40s")
    g.add_argument("--num-gpus", default="5", help="the GPU budget: replicas x GPUs per replica must fit in it")
    g.add_argument("--tensor-parallel-size", "-tp", default="auto",
                   help="target TP sizes to try (auto: 1,2,4,8 within the budget); the drafter uses 1")
    s = p.add_argument_group("search space")
    s.add_argument("--policy", default="ar,sd,psd,pearl", help="policies to weigh: " + ", ".join(POLICIES))
    s.add_argument("--num-speculative-tokens", "-k", default="1-8", help="k values: 1-8 or 2,3,5")
    s.add_argument("--no-k-schedule", action="store_true",
                   help="do not try the theory's per-batch-size k schedule (vLLM's num_speculative_tokens_per_batch_size)")
    s.add_argument("--max-num-seqs", default="8,16,32,64,128", help="max_num_seqs values")
    s.add_argument("--psd-capacity", default="double,split", help="PSD capacity modes: double (published), split")
    s.add_argument("--psd-split", default="auto",
                   help="PSD schedules (minedraft-sim's --psd-split): auto (one batch until the step model says two "
                        "halves pay; minedraft-sim's default), always (two halves: the published schedule); "
                        "auto,always weighs both")
    s.add_argument("--sd-drafter", default="shared,own", help="SD drafter placements: shared, own")
    s.add_argument("--survivors", default="4",
                   help="configurations simulated per (policy, GPU type, target; PSD: and schedule), best by the "
                        "theory")
    a = p.add_argument_group("acceptance")
    a.add_argument("--accept-curve", default=common.DEFAULT_ALPHA,
                   help="0.8 (geometric alpha) | 0.9,0.76,0.62 (vLLM synthetic_acceptance_rates) | curve.json")
    a.add_argument("--accept-concentration", default=None, help="per-request alpha ~ Beta(mean=alpha, concentration=C)")
    a.add_argument("--accept-sweep", default="0.5,0.6,0.7,0.8,0.9",
                   help="geometric alphas for the what-if on acceptance ('none' to skip)")
    w = p.add_argument_group("workload and SLO")
    w.add_argument("--request-rate", default="none",
                   help="total requests/s to serve (Poisson); none = find the most the budget carries within the SLO")
    w.add_argument("--input-len", default=None, help="N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA (default: dataset)")
    w.add_argument("--output-len", default="256", help="N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA | dataset")
    w.add_argument("--dataset", default=None, help="ShareGPT-format JSON (default: the shipped sample)")
    w.add_argument("--num-prompts", default="400", help="requests per simulated point")
    w.add_argument("--burstiness", default="1.0", help="gamma shape of arrival gaps (1 = Poisson)")
    w.add_argument("--seed", default="0", help="random seed of every simulated point")
    w.add_argument("--slo-ttft-ms", default=None, help="p99 time-to-first-token target (ms)")
    w.add_argument("--slo-tpot-ms", default=None, help="p99 time-per-output-token target (ms) (default 50 if no target given)")
    w.add_argument("--slo-e2e-ms", default=None, help="p99 end-to-end latency target (ms)")
    w.add_argument("--gpu-hour-cost", default=None, help="$ per GPU-hour: 2.5 (all GPUs) or h100=2.49,h200=3.5")
    t = p.add_argument_group("step times (shipped measured step models where they match, else the roofline)")
    t.add_argument("--step-overhead-ms", default="0", help="per engine step: scheduling, sampling (default 0)")
    t.add_argument("--transfer-ms", default="0", help="each draft<->target hand-off across GPUs (default 0)")
    o = p.add_argument_group("running and output")
    o.add_argument("--out", default=DEFAULT_OUT, help="folder for plan.html, plan.md, plan.json and the checkpoint")
    o.add_argument("--checkpoint", default=None, help="JSONL of finished points (default OUT/points.jsonl); resumed")
    o.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    o.add_argument("--workers", default=None, help="local worker processes (default: CPU count, at most 8; 1 = in-process)")
    o.add_argument("--ray-address", default=None, help="run points on this Ray cluster (auto, host:port, ray://...)")
    o.add_argument("--json", default=None, help="also write the plan JSON to PATH ('-' = stdout)")
    o.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


# ------------------------------------------------------------------------------------------ parsing
def _items(text: str, flag: str) -> list[str]:
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    require(len(items) > 0, flag, "must list at least one value", text)
    require(len(set(items)) == len(items), flag, "must not repeat a value", text)
    return items


def int_list(text: str, flag: str, lo: int, hi: int) -> tuple[int, ...]:
    """``1,2,4`` or ranges ``1-8`` (mixed: ``1-3,5``), each in [lo, hi], sorted."""
    out: set[int] = set()
    for part in _items(text, flag):
        m = re.fullmatch(r"(\d{1,6})\s*-\s*(\d{1,6})", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            require(lo <= a <= b <= hi, flag, f"ranges A-B need {lo} <= A <= B <= {hi}", text)
            out.update(range(a, b + 1))
        else:
            out.add(common.as_int(part, flag, lo, hi))
    return tuple(sorted(out))


def choice_list(text: str, flag: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    items = _items(text.lower(), flag)
    for x in items:
        require(x in choices, flag, f"each must be one of {', '.join(choices)}", text)
    return tuple(items)


def prices(text: str | None, gpus: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    from minedraft.presets import gpu_spec

    flag = "--gpu-hour-cost"
    if text is None:
        return ()
    if "=" not in text:
        return (("*", common.as_float(text, flag, 0.0, 1e6, lo_open=True)),)
    out = {}
    for part in _items(text, flag):
        name, _, value = part.partition("=")
        require(name.strip() != "" and value.strip() != "", flag, "must be a number or GPU=price pairs like h100=2.5",
                text)
        out[gpu_spec(name, flag).key] = common.as_float(value, flag, 0.0, 1e6, lo_open=True)
    missing = [g for g in gpus if g not in out]
    require(not missing, flag, f"give a price for every GPU type ({', '.join(missing)} missing)", text)
    return tuple(out.items())


def inputs(a: argparse.Namespace):
    """Flags -> PlanInputs, every value checked here (bad input: one line naming the flag)."""
    from minedraft.planner.space import SLO, PlanInputs
    from minedraft.presets import gpu_spec, model_shape

    targets = tuple(_items(a.target, "--target"))
    drafts = tuple(_items(a.draft, "--draft"))
    for t in targets:
        model_shape(t, "--target")
    for d in drafts:
        model_shape(d, "--draft")
    gpus = tuple(dict.fromkeys(gpu_spec(g, "--gpu").key for g in _items(a.gpu, "--gpu")))
    budget = common.as_int(a.num_gpus, "--num-gpus", 1, 4096)
    tps = None if a.tensor_parallel_size.strip().lower() == "auto" else \
        int_list(a.tensor_parallel_size, "--tensor-parallel-size", 1, 64)
    if tps is not None:
        require(any(t <= budget for t in tps), "--tensor-parallel-size", f"needs a size within --num-gpus {budget}",
                a.tensor_parallel_size)
    policies = tuple(common.parse_policies(a.policy))
    ks = int_list(a.num_speculative_tokens, "--num-speculative-tokens", 1, 16)
    mns = int_list(a.max_num_seqs, "--max-num-seqs", 1, 4096)
    caps = choice_list(a.psd_capacity, "--psd-capacity", ("double", "split"))
    splits = choice_list(a.psd_split, "--psd-split", ("auto", "always"))
    placements = choice_list(a.sd_drafter, "--sd-drafter", ("shared", "own"))
    survivors = common.as_int(a.survivors, "--survivors", 1, 100)
    sweep: tuple[float, ...] = ()
    if a.accept_sweep.strip().lower() not in ("", "none"):
        sweep = tuple(sorted({common.as_float(x, "--accept-sweep", 0.0, 1.0, lo_open=True) for x in
                              _items(a.accept_sweep, "--accept-sweep")}))
        require(all(x < 1 for x in sweep), "--accept-sweep", "alphas must be in (0, 1)", a.accept_sweep)
    rate = None
    if a.request_rate.strip().lower() not in ("none", "inf", ""):
        rate = common.as_float(a.request_rate, "--request-rate", 0.0, 1e7, lo_open=True)
    slo_vals = {f: (common.as_float(v, flag, 0.0, 1e9, lo_open=True) if v is not None else None)
                for f, flag, v in (("ttft_ms", "--slo-ttft-ms", a.slo_ttft_ms), ("tpot_ms", "--slo-tpot-ms", a.slo_tpot_ms),
                                   ("e2e_ms", "--slo-e2e-ms", a.slo_e2e_ms))}
    if all(v is None for v in slo_vals.values()):
        slo_vals["tpot_ms"] = 50.0
    workload = [("--num-prompts", str(common.as_int(a.num_prompts, "--num-prompts", 20, 1_000_000))),
                ("--output-len", a.output_len), ("--seed", str(common.as_int(a.seed, "--seed", 0, 2**63 - 1))),
                ("--burstiness", a.burstiness)]
    if a.input_len is not None:
        workload.append(("--input-len", a.input_len))
    if a.dataset is not None:
        workload.append(("--dataset", str(Path(a.dataset).resolve()) if Path(a.dataset).exists() else a.dataset))
    common.as_float(a.burstiness, "--burstiness", 0.0, 1e6, lo_open=True)
    costs = prices(a.gpu_hour_cost, gpus)
    overhead = common.as_float(a.step_overhead_ms, "--step-overhead-ms", 0.0, 1e6)
    transfer = common.as_float(a.transfer_ms, "--transfer-ms", 0.0, 1e6)
    curve = a.accept_curve
    if Path(curve).is_file():  # a JSON curve: pass it by absolute path so workers elsewhere read the same file
        curve = str(Path(curve).resolve())
    try:
        inp = PlanInputs(
            targets=targets, drafts=drafts, gpus=gpus, budget=budget, slo=SLO(**slo_vals), request_rate=rate,
            policies=policies, tps=tps, ks=ks, k_schedule=not a.no_k_schedule, max_num_seqs=mns, psd_capacity=caps,
            psd_split=splits, sd_drafter=placements, accept_curve=curve, accept_concentration=a.accept_concentration,
            accept_sweep=sweep, workload=tuple(workload),
            step_overhead_ms=overhead, transfer_ms=transfer, prices=costs, survivors=survivors)
    except InputError as exc:
        raise (exc if exc.field.startswith("-") else exc.relabel("--" + exc.field.replace("_", "-"))) from None
    _check_sim_flags(inp)
    return inp


def _check_sim_flags(inp) -> None:
    """Build one point's run with minedraft-sim's own functions, so a bad workload or curve flag fails here,
    named by its flag, before any work starts."""
    from minedraft.planner.space import Candidate, sim_argv
    from minedraft.planner.sweep import sim_inputs

    policy = next((p for p in inp.policies if p != "ar"), "ar")
    probe = Candidate(policy, inp.gpu_keys[0], inp.targets[0], inp.drafts[0], 1, max(inp.ks), 1,
                      psd_split=inp.psd_split[0])
    sim_inputs(sim_argv(probe, 1.0, inp))


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    inp = inputs(a)
    out_dir = Path(a.out)
    require(not out_dir.exists() or out_dir.is_dir(), "--out", "must be a folder (it is a file)", a.out)
    json_out = common.output_path(a.json, "--json")
    workers = common.as_int(a.workers, "--workers", 1, 256) if a.workers is not None else min(8, os.cpu_count() or 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(a.checkpoint) if a.checkpoint else out_dir / "points.jsonl"
    common.output_path(str(ckpt_path), "--checkpoint")
    if a.fresh and ckpt_path.exists():
        ckpt_path.unlink()

    from minedraft.planner import report
    from minedraft.planner.search import plan
    from minedraft.planner.sweep import Checkpoint, Progress, make_pool

    ckpt = Checkpoint(ckpt_path)
    pool = make_pool(workers, a.ray_address)
    progress = Progress(enabled=not a.quiet)
    if not a.quiet:
        print(f"minedraft-plan: running points on {pool.name}; checkpoint {ckpt_path} "
              f"({ckpt.loaded} finished points found)", file=sys.stderr, flush=True)
    try:
        result = plan(inp, pool, ckpt, progress)
    finally:
        ckpt.close()
        pool.close()
    result["run"] = {"pool": pool.name, "checkpoint": str(ckpt_path)}
    paths = report.write(result, out_dir)
    if json_out:
        import json

        text = json.dumps(result, indent=1, allow_nan=False)
        if json_out == "-":
            print(text)
        else:
            Path(json_out).write_text(text + "\n")
    if not a.quiet and json_out != "-":
        _print(result, paths)
    return 0


def _print(result: dict, paths: dict) -> None:
    from minedraft.planner.report import SPLIT_PREFIX, best_rows, headline, inputs_lines, psd_split_lines, \
        source_warning

    out = console()
    out.print("[bold]minedraft-plan[/]")
    for line in inputs_lines(result):
        out.print("  " + line, highlight=False)
    head, rows = best_rows(result)
    keep = [0, 1, 3, 4, 6, 7, 8, 9, 10, 11]  # the console drops the GPU split and the per-replica rate
    t = Table(title="Best configuration of each policy (same budget, same SLO; confirmed)", title_justify="left")
    for i in keep:
        t.add_column(head[i], justify="left" if i in (0, 1, 11) else "right", overflow="fold")
    for r in rows:
        t.add_row(*(r[i] for i in keep))
    out.print(t)
    for line in psd_split_lines(result):
        out.print(SPLIT_PREFIX + line, highlight=False)
    out.print(headline(result), highlight=False)
    if source_warning(result):
        out.print(f"[yellow]{source_warning(result)}[/]", highlight=False)
    out.print(f"Report: {paths['html']} ; summary: {paths['markdown']} ; data: {paths['json']}", highlight=False)


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()

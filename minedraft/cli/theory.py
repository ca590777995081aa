"""``minedraft-theory``: closed forms for AR, SD, PSD and PEARL — throughput, latency, optimal k, the 37% claim.

Step times: constant (``--verify-ms``/``--draft-ms``), affine (add ``--verify-us-per-token`` /
``--draft-us-per-token``: ``T(b, n) = ms + us * b * n``), measured profiles, or, by default, the roofline
model of ``--target``/``--draft`` on ``--gpu``. Without ``-k`` every policy runs at its own optimal k in
1..``--max-k``. ``--json`` writes everything (see :func:`minedraft.theory.summary.report`).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
from rich.table import Table

from minedraft.cli import common
from minedraft.costs import StepCosts
from minedraft.errors import InputError, require
from minedraft.latency import Affine, Constant
from minedraft.report import console
from minedraft.theory.compare import BASES
from minedraft.theory.serving import POLICIES, Setup
from minedraft.theory.summary import report
from minedraft.workload import LengthDist

BASIS_FLAGS = tuple(b.replace("_", "-") for b in BASES)
LENGTH_SAMPLES = 4096


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-theory", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_model_flags(p)
    common.add_spec_flags(p)
    p.set_defaults(num_speculative_tokens=None)
    common.add_engine_flags(p)
    common.add_timing_flags(p)
    g = p.add_argument_group("theory")
    g.add_argument("--max-k", default="10", help="without -k: search the optimal k in 1..MAX_K")
    g.add_argument("--basis", default="same-max-num-seqs",
                   help="headline comparison: " + " | ".join(BASIS_FLAGS) + " (same-slo needs --slo-tpot-ms)")
    g.add_argument("--slo-tpot-ms", default=None, help="per-token latency target for the same-slo basis")
    g.add_argument("--verify-us-per-token", default=None,
                   help="affine mode: the target's forward takes --verify-ms + this x batch x tokens")
    g.add_argument("--draft-us-per-token", default=None,
                   help="affine mode: each drafter forward takes --draft-ms + this x batch x tokens")
    w = p.add_argument_group("workload")
    w.add_argument("--num-prompts", default="1000", help="offline requests for the makespan")
    w.add_argument("--input-len", default="256", help="N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA (prompt tokens)")
    w.add_argument("--output-len", default="256", help="N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA")
    w.add_argument("--request-rate", default="inf",
                   help="Poisson requests/s for the E2E-under-load figures (inf = offline only)")
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, help="write config and results as JSON to PATH ('-' = stdout)")
    o.add_argument("--quiet", action="store_true", help="no table")
    return p


def _lengths(text: str, flag: str) -> np.ndarray:
    """Request lengths for a distribution: exact support for fixed/uniform, a seeded sample otherwise."""
    dist = LengthDist.parse(text, flag)
    if dist.kind == "fixed":
        return np.asarray([int(dist.a)])
    if dist.kind == "uniform":
        require(dist.b - dist.a <= 1 << 16, flag, "uniform range too wide for the theory (at most 65536 values)",
                text)
        return np.arange(int(dist.a), int(dist.b) + 1)
    lens = dist.sample(np.random.default_rng(0), LENGTH_SAMPLES)
    require(int(lens.max()) <= 1 << 16, flag, "lengths above 65536 tokens are out of the theory's range", text)
    return lens


def _costs(a: argparse.Namespace) -> tuple[StepCosts, int, dict]:
    affine = a.verify_us_per_token is not None or a.draft_us_per_token is not None
    if affine:
        require(a.verify_ms is not None, "--verify-ms", "affine mode needs --verify-ms (the fixed part)")
        require(a.draft_ms is not None, "--draft-ms", "affine mode needs --draft-ms (the fixed part)")
        require(a.prefill_ms is None, "--prefill-ms", "cannot be combined with affine mode (prefill follows the line)",
                a.prefill_ms)
    costs, tp, info = common.step_costs(a, needs_drafter=True)
    if affine:
        bt = common.as_float(a.verify_us_per_token or "0", "--verify-us-per-token", 0.0, 1e9) / 1e6
        bd = common.as_float(a.draft_us_per_token or "0", "--draft-us-per-token", 0.0, 1e9) / 1e6
        assert isinstance(costs.target, Constant) and isinstance(costs.draft, Constant)
        target, draft = Affine(costs.target.forward_s, bt), Affine(costs.draft.forward_s, bd)
        costs = replace(costs, target=target, draft=draft)
        info |= {"latency_model": "affine", "target_latency": target.label, "draft_latency": draft.label}
    return costs, tp, info


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    json_out = common.output_path(a.json, "--json")
    k_max = common.as_int(a.max_k, "--max-k", 1, 64)
    k = common.as_int(a.num_speculative_tokens, "--num-speculative-tokens", 1, 64) \
        if a.num_speculative_tokens is not None else None
    require(a.num_speculative_tokens_per_batch_size is None, "--num-speculative-tokens-per-batch-size",
            "is an output of minedraft-theory (k_schedule), not an input", a.num_speculative_tokens_per_batch_size)
    a.num_speculative_tokens = str(k if k is not None else 1)
    cfg = common.policy_config(a)
    require(cfg.tetris_extra == 0, "--tetris-extra-proposals", "the theory does not model TETRIS (use minedraft-sim)",
            a.tetris_extra_proposals)
    if k is None:  # the search needs k_max positions (+1: PEARL's guess) where the curve can give them
        try:
            curve = common.acceptance_curve(a, replace(cfg, num_speculative_tokens=k_max), extra=1)
        except InputError:
            curve = common.acceptance_curve(a, cfg, extra=1)
    else:
        curve = common.acceptance_curve(a, cfg, extra=1)
    basis_flag = common.as_choice(a.basis, "--basis", BASIS_FLAGS)
    basis = basis_flag.replace("-", "_")
    slo = common.as_float(a.slo_tpot_ms, "--slo-tpot-ms", 0.0, 1e7, lo_open=True) / 1e3 if a.slo_tpot_ms else None
    require(basis != "same_slo" or slo is not None, "--slo-tpot-ms", "the same-slo basis needs a TPOT target",
            a.slo_tpot_ms)
    n = common.as_int(a.num_prompts, "--num-prompts", 1, 10_000_000)
    out_lens = _lengths(a.output_len, "--output-len")
    in_lens = _lengths(a.input_len, "--input-len")
    rate = common.as_float(a.request_rate, "--request-rate", 0.0, math.inf, allow_inf=True, lo_open=True)
    costs, tp, timing = _costs(a)
    prompt = float(in_lens.mean())
    setup = Setup(curve, costs, cfg.max_num_seqs, cfg.psd_capacity, cfg.sd_drafter, tp,
                  context_len=prompt + float(out_lens.mean()) / 2, psd_drafter=cfg.psd_drafter)
    out_arg = int(out_lens[0]) if out_lens.size == 1 else out_lens
    res = report(setup, k, k_max, basis, n, out_arg, prompt, slo, None if math.isinf(rate) else rate)
    config = {"accept_curve": curve.to_json(), "timing": timing, "max_num_seqs": cfg.max_num_seqs,
              "psd_capacity": cfg.psd_capacity, "sd_drafter": cfg.sd_drafter, "k": k, "max_k": k_max,
              "num_prompts": n, "output_len": a.output_len, "input_len": a.input_len,
              "request_rate": None if math.isinf(rate) else rate, "slo_tpot_ms": slo * 1e3 if slo else None,
              "context_len": setup.context_len}
    if json_out:
        text = json.dumps({"config": config, **res}, indent=2, default=float)
        if json_out == "-":
            print(text)
        else:
            with open(json_out, "w") as fh:
                fh.write(text + "\n")
    if not a.quiet and json_out != "-":
        _print(res, timing, curve, cfg, a)
    return 0


def _print(res: dict, timing: dict, curve, cfg, a: argparse.Namespace) -> None:
    out = console()
    t = timing
    if t["latency_model"] == "constant":
        where = f"constant step times: verify {a.verify_ms} ms, draft {a.draft_ms} ms/forward"
    elif t["latency_model"] == "affine":
        where = f"affine step times: target {t['target_latency']}, drafter {t['draft_latency']}"
    else:
        where = f"{t['target']} TP{t['tensor_parallel_size']} + {t['draft']} on {t['gpu']}, {t['latency_model']}"
    ktxt = f"k={res['k']}" if res["k_given"] else "k optimal per policy"
    out.print(f"[bold]minedraft-theory[/]  {where}; {ktxt}, acceptance {curve.source or 'curve'}; "
              f"max_num_seqs {cfg.max_num_seqs}, psd_capacity {cfg.psd_capacity}; basis: {res['basis_description']}")
    tbl = Table(title_justify="left")
    for c in ("policy", "k", "in flight", "GPUs", "tok/step", "cycle ms", "out tok/s", "tok/s/GPU", "TPOT ms",
              "makespan s", "vs SD"):
        tbl.add_column(c, justify="left" if c == "policy" else "right")
    sd = res["policies"]["sd"]["throughput_tok_s"]
    for p in POLICIES:
        r = res["policies"][p]
        tbl.add_row(p, str(r["k"]), str(r["in_flight"]), str(r["gpus"]), f"{r['tokens_per_step']:.2f}",
                    f"{r['cycle_ms']:.2f}", f"{r['throughput_tok_s']:,.0f}", f"{r['throughput_per_gpu']:,.0f}",
                    f"{r['tpot_ms']:.2f}", f"{r['makespan_s']:.2f}", f"{r['throughput_tok_s'] / sd:.2f}x")
    out.print(tbl)
    red = res["psd_makespan_reduction_vs_sd"]
    if res["psd_throughput_ratio_over_sd"] is None:
        out.print(f"PSD vs SD ({res['basis']}): no configuration of one of them meets the SLO")
    else:
        out.print(f"PSD vs SD ({res['basis']}): throughput x{res['psd_throughput_ratio_over_sd']:.3f}, "
                  f"makespan {'-' if red >= 0 else '+'}{abs(red):.1%}, TPOT x{res['psd_tpot_ratio_over_sd']:.3f}")
    ar = res["sd_speedup_over_ar"]
    out.print("SD over AR: " + (f"x{ar:.3f}" if ar is not None else "AR meets the SLO with no configuration"))
    others = []
    for b, table in res["comparisons"].items():
        v = table.get("psd_vs_sd")
        if b != res["basis"]:
            others.append(f"{b} " + (f"x{v['throughput_ratio']:.3f}" if v else "no config meets the SLO"))
    if others:
        out.print("PSD/SD throughput on the other bases: " + ", ".join(others))
    sched = "; ".join(f"{p} " + ",".join(f"{s}-{e}:{k}" for s, e, k in res["k_schedule"][p]) for p in ("sd", "psd"))
    out.print(f"Optimal k: SD {res['optimal_k_sd']}, PSD {res['optimal_k_psd']} (drafting hidden up to "
              f"k={res['free_k_psd']}), PEARL {res['optimal_k_pearl']}; per-batch-size schedule: {sched}")
    ca = res["claim_37"]["reading_a"]
    line = (f">= 37% claim, reading A (same k, published basis): rho = kT_d/T_v = {ca['rho']:.3f}, "
            f"R = {ca['reduction']:.1%} -> {'holds' if ca['holds'] else 'fails'} "
            f"(needs {ca['window_rho'][0]:.3f} <= rho <= {ca['window_rho'][1]:.3f})")
    out.print(line)
    cb = res["claim_37"].get("reading_b")
    if cb:
        out.print(f"reading B (both k tuned, constant-step idealisation): T_d/T_v = {cb['draft_over_verify']:.3f}, R = {cb['reduction']:.1%} "
                  f"(SD k={cb['k_sd']}, PSD k={cb['k_psd']}) -> {'holds' if cb['holds'] else 'fails'}")
    ul = res["under_load"]
    mr = ul["max_rate_req_s"]
    cross = ul["psd_vs_sd_crossover_req_s"]
    cap_rate = ul["psd_capacity_used_above_req_s"]
    txt = (f"Under Poisson load: max rate SD {mr['sd']:.2f}, PSD {mr['psd']:.2f} req/s; PSD's mean E2E "
           + (f"beats SD above {cross:.2f} req/s" if cross is not None else
              ("is lower at every load" if ul["psd_better_at_low_load"] else "is higher at every load SD sustains")))
    if cap_rate is not None and math.isfinite(cap_rate):
        txt += f"; its doubled capacity is in use (P > 5%) above {cap_rate:.2f} req/s"
    out.print(txt)
    if "mean_e2e_ms" in ul:
        out.print(f"Mean E2E at {ul['request_rate']:g} req/s: " + ", ".join(
            f"{p} {v / 1e3:.2f} s" if v is not None else f"{p} unstable" for p, v in ul["mean_e2e_ms"].items()))


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()

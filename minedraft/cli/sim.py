"""``minedraft-sim``: simulate AR, SD, PSD and PEARL on one workload and compare them.

With no arguments it runs the published experiment-1 setting (Qwen3-32B TP4 on H100 with a Qwen3-0.6B
drafter, k = 5, max_num_seqs 16, 1000 offline prompts from the shipped ShareGPT-format sample, 256 output
tokens) on the roofline latency model.
"""

from __future__ import annotations

import argparse
import json


from minedraft.cli import common
from minedraft.errors import require
from minedraft.metrics import RESULT_KEYS
from minedraft.policies import POLICIES
from minedraft.report import ProgressBars, basis_line, console, results_table
from minedraft.simulator.run import Comparison
from minedraft.trace import TraceWriter


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-sim", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policy", default="ar,sd,psd,pearl", help="comma list of " + ", ".join(POLICIES))
    common.add_model_flags(p)
    common.add_spec_flags(p)
    common.add_engine_flags(p)
    common.add_workload_flags(p)
    common.add_timing_flags(p)
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, help="write config and results as JSON to PATH ('-' = stdout)")
    g.add_argument("--trace", default=None, help="write every op and request as JSONL to PATH")
    g.add_argument("--trace-chrome", default=None,
                   help="write the ops as a Chrome / Perfetto trace to PATH (JSON; open in ui.perfetto.dev): a process "
                        "per policy, a track per resource (and per PSD half)")
    g.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    policies = common.parse_policies(a.policy)
    json_out = common.output_path(a.json, "--json")
    trace_out = common.output_path(a.trace, "--trace")
    require(a.trace_chrome != "-", "--trace-chrome", "must be a file path", a.trace_chrome)
    chrome_out = common.output_path(a.trace_chrome, "--trace-chrome")
    cfg = common.policy_config(a)
    if cfg.prefill_mode == "chunked":
        odd = [p for p in policies if p in ("psd", "pearl")]
        require(not odd, "--prefill-mode", f"chunked is vLLM V1's mode for ar and sd; {', '.join(odd)} run the "
                "published prefill-only steps (use --policy ar,sd)", "chunked")
    speculative = any(POLICIES[p].speculative for p in policies)
    curve = common.acceptance_curve(a, cfg, extra=1 if "pearl" in policies else 0) if speculative else None
    wl = common.workload(a)
    costs, tp, timing = common.step_costs(a, needs_drafter=speculative)
    requests = wl.generate()
    split_line = None
    if "psd" in policies:
        context = float(requests.prompt_len.mean() + requests.output_len.mean() / 2)
        cfg, split_line = common.with_split_rows(cfg, costs, curve, tp, context)
    config = {"policies": policies, "policy_config": common.config_dict(cfg), "workload": wl.describe(),
              "accept_curve": curve.to_json() if curve else None, "timing": timing, "psd_split": split_line}

    bars = ProgressBars(enabled=not a.quiet)
    try:
        runs = Comparison(policies, requests, cfg, costs, curve, seed=wl.seed, target_gpus=tp).run(
            details=trace_out is not None, progress=bars.task("simulating", len(requests) * len(policies)),
            config=config)
    finally:
        bars.close()
    results = [m for _, m in runs]
    config["basis"] = basis_line(results, cfg)

    if trace_out:
        with TraceWriter(trace_out) as w:
            for trace, _ in runs:
                w.write_all(trace.records())
    if chrome_out:
        from minedraft.chrome import write_chrome

        write_chrome([trace for trace, _ in runs], chrome_out)
    if json_out:
        ordered = [{k: m[k] for k in RESULT_KEYS} | {k: v for k, v in m.items() if k not in RESULT_KEYS}
                   for m in results]
        text = json.dumps({"config": config, "results": ordered}, indent=2, default=float)
        if json_out == "-":
            print(text)
        else:
            with open(json_out, "w") as fh:
                fh.write(text + "\n")
    if not a.quiet and json_out != "-":
        out = console()
        t = timing
        where = (f"{t['target']} TP{t['tensor_parallel_size']} + {t['draft']} on {t['gpu']}, {t['latency_sources']}"
                 if t["latency_model"] != "constant" else
                 f"constant step times: verify {a.verify_ms} ms, draft {a.draft_ms} ms/forward")
        curve_txt = curve.source if curve else "none"
        lens = f"input {wl.describe()['input_len']}, output {wl.describe()['output_len']}"
        arrivals = "offline" if wl.offline else f"{wl.describe()['request_rate']} req/s"
        out.print(f"[bold]minedraft-sim[/]  {where}; k={cfg.num_speculative_tokens}, acceptance {curve_txt}; "
                      f"{wl.num_prompts} prompts {arrivals}, {lens}")
        out.print(results_table(results))
        out.print(config["basis"])
        if split_line:
            frac = next((r.get("split_fraction") for r in results if r["policy"] == "psd"), None)
            out.print(split_line + (f"; this run split {frac:.0%} of its decode steps" if frac is not None else ""))
    return 0


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()

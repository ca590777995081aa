"""Re-simulate exactly what a measured run did: its requests, arrivals, engine config and acceptance.

A run is a trace written by ``minedraft-exec`` (or ``benchmarks/gpu_ar_sd.py``): its request records give
the actual prompt and output lengths and arrival times; its header the policy, k, max_num_seqs, the token
budget and the synthetic acceptance (or, without one, the acceptance the run measured per position).
vLLM V1 schedules AR and SD with chunked prefill, so those replay with ``prefill_mode="chunked"``; runs of
minedraft's plugin (PSD, PEARL, SD with its drafter in a process of its own) run prefill-only steps and one
vLLM batch per half, as their policies do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.errors import require
from minedraft.policies import POLICIES, PolicyConfig
from minedraft.simulator.engine import simulate
from minedraft.trace import Trace, run_config, trace_from_records
from minedraft.workload import Requests


@dataclass
class MeasuredRun:
    """What a measured trace says was run."""

    name: str
    policy: str
    target: str
    draft: str | None
    k: int
    alpha: float | None
    requests: Requests
    cfg: PolicyConfig
    curve: AcceptanceCurve | None
    trace: Trace
    header: dict
    plugin: bool = False  # run through minedraft's vLLM plugin (its own costs apply)
    target_gpus: int = 1  # the target's tensor-parallel size (the drafter's own GPU, if any, comes on top)
    resident: bool = False  # the plugin kept its halves resident in vLLM's runners (from 2026-12-04)


def measured_run(records: list[dict], name: str = "") -> MeasuredRun:
    header = next((r for r in records if r.get("type") == "header"), None)
    require(header is not None, "run", "trace has no header record", name)
    cfg = run_config(header)
    policy = cfg["policy"]
    require(policy in POLICIES, "run", f"policy must be one of {', '.join(POLICIES)}", policy)
    traces = trace_from_records(records)
    trace = traces.get(policy) or next(iter(traces.values()))
    reqs = sorted((r for r in records if r.get("type") == "request"), key=lambda r: r["request_id"])
    require(len(reqs) > 0, "run", "trace has no request records", name)
    ids = [int(r["request_id"]) for r in reqs]
    require(ids == list(range(len(ids))), "run", "request ids must be 0..n-1 (a complete run)", name)
    requests = Requests(arrival=np.array([float(r["arrival"]) for r in reqs]),
                        prompt_len=np.array([int(r["prompt_len"]) for r in reqs]),
                        output_len=np.array([int(r["output_len"]) for r in reqs]))
    ex = cfg.get("executor") or {}
    k = int(cfg.get("k") or (ex.get("plugin") or {}).get("k") or (ex.get("speculative") or {}).get("num_speculative_tokens")
            or 0)
    spec = ex.get("speculative") or {}
    curve = None
    if POLICIES[policy].speculative:
        rates = spec.get("synthetic_acceptance_rates")
        if cfg.get("alpha") is not None:  # the run's own α: benchmarks rewrite the engine's rates in place
            curve = AcceptanceCurve.geometric(float(cfg["alpha"]), max(k, 1))
        elif cfg.get("acceptance") == "synthetic" and cfg.get("accept_curve"):  # minedraft-exec --accept-curve
            curve = AcceptanceCurve.from_json(cfg["accept_curve"], "accept_curve")
        elif rates:
            curve = AcceptanceCurve(tuple(rates), source="synthetic (as run)")
        else:
            m = trace.pos_drafts[:k] > 0
            require(bool(m.all()), "run", "trace has no per-position acceptance to replay", name)
            rates = np.minimum.accumulate(trace.pos_accepted[:k] / trace.pos_drafts[:k])
            curve = AcceptanceCurve(tuple(rates.tolist()), source="measured per position")
    plugin = bool(ex.get("plugin"))  # minedraft's vLLM plugin: prefill-only steps, one batch per half
    pcfg = PolicyConfig(max_num_seqs=int(cfg.get("max_num_seqs") or ex.get("max_num_seqs")),
                        num_speculative_tokens=max(k, 1),
                        max_num_batched_tokens=int(ex.get("max_num_batched_tokens") or 2048),
                        prefill_mode="separate" if plugin else "chunked",
                        psd_capacity=cfg.get("psd_capacity") or "double", psd_limit_halves=plugin,
                        sd_drafter="own" if plugin and policy == "sd" else "shared",
                        psd_drafter="shared" if plugin and drafter_device(cfg) == "same" else "own")
    return MeasuredRun(name, policy, str(cfg.get("target")), cfg.get("draft"), k, cfg.get("alpha"), requests, pcfg,
                       curve, trace, header, plugin, int(ex.get("tensor_parallel_size") or 1), resident_halves(cfg))


def resident_halves(cfg: dict) -> bool:
    """Whether a plugin run kept its halves resident in vLLM's runners (its engine facts say so; runs before
    2026-12-04 recorded neither fact and did not)."""
    plugin = ((cfg.get("executor") or {}).get("plugin") or {})
    if "resident_batches" in plugin:
        return bool(plugin["resident_batches"])
    return bool((plugin.get("drafter") or {}).get("resident"))


def drafter_device(cfg: dict) -> str | None:
    """Where a plugin run's drafter ran: "same" (the target's GPU), "cuda:N", "cpu" (None: not recorded)."""
    plugin = ((cfg.get("executor") or {}).get("plugin") or {})
    return cfg.get("drafter_device") or (plugin.get("drafter") or {}).get("device_requested")


def replay(run: MeasuredRun, costs: StepCosts, seed: int = 0) -> Trace:
    """Simulate the measured run's requests under its config with ``costs``."""
    return simulate(run.policy, run.requests, run.cfg, costs, run.curve, seed=seed, target_gpus=run.target_gpus)

"""Run several policies on one workload: the library call behind ``minedraft-sim``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.metrics import compute_metrics
from minedraft.policies import POLICIES, PolicyConfig
from minedraft.simulator.engine import simulate
from minedraft.trace import Trace
from minedraft.workload import Requests


@dataclass
class Comparison:
    """Everything one comparison needs; the same requests and seed for every policy."""

    policies: list[str]
    requests: Requests
    cfg: PolicyConfig
    costs: StepCosts
    curve: AcceptanceCurve | None
    seed: int = 0
    target_gpus: int = 1

    def run(self, details: bool = False, progress: Callable[[int], None] | None = None,
            config: dict | None = None) -> list[tuple[Trace, dict]]:
        """Simulate each policy in turn; returns (trace, metrics) per policy, in order."""
        out = []
        for name in self.policies:
            curve = self.curve if POLICIES[name].speculative else None
            trace = simulate(name, self.requests, self.cfg, self.costs, curve, seed=self.seed,
                             target_gpus=self.target_gpus, details=details, progress=progress, config=config)
            out.append((trace, compute_metrics(trace)))
        return out

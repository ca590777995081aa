"""minedraft.theory: closed forms for AR, SD, PSD and PEARL; expected steps; bounds and optimal k."""

from minedraft.theory.constant import offline_makespan, steady_throughput, step_period
from minedraft.theory.steps import accepted_pmf, expected_steps, pearl_expected_steps, pearl_tokens_per_step

__all__ = ["accepted_pmf", "expected_steps", "offline_makespan", "pearl_expected_steps", "pearl_tokens_per_step",
           "steady_throughput", "step_period"]

"""minedraft.theory: closed forms for AR, SD, PSD and PEARL; expected steps; bounds and optimal k.

See docs/theory.md. Entry points: :func:`serving.steady` / :func:`serving.offline` (any step-time model),
:func:`compare.compare` (ratios on a comparison basis), :mod:`reduction` (the >= 37% readings),
:mod:`optimal_k`, :mod:`load` (Poisson arrivals), :mod:`split` (when PSD's auto schedule splits) and
:func:`summary.report` (what ``minedraft-theory`` prints).
"""

from minedraft.theory.compare import BASES, Versus, compare
from minedraft.theory.constant import (
           offline_makespan,
           steady_throughput,
           step_period,
           symbolic_forms,
)
from minedraft.theory.load import crossover_rate, e2e_under_load, max_rate
from minedraft.theory.optimal_k import free_k, k_schedule, optimal_k
from minedraft.theory.serving import Offline, Setup, Steady, offline, steady
from minedraft.theory.split import (
           affine_coefficients,
           affine_split_threshold,
           auto_split_rows,
           prove_split_threshold,
           split_pays,
           split_threshold,
           split_threshold_expr,
           swap_coefficients,
)
from minedraft.theory.steps import (
           accepted_pmf,
           expected_steps,
           pearl_expected_steps,
           pearl_tokens_per_step,
)
from minedraft.theory.summary import report

__all__ = ["BASES", "Offline", "Setup", "Steady", "Versus", "accepted_pmf", "affine_coefficients", "auto_split_rows",
           "affine_split_threshold", "compare", "crossover_rate", "e2e_under_load", "expected_steps", "free_k",
           "k_schedule", "max_rate", "offline", "offline_makespan", "optimal_k", "pearl_expected_steps",
           "pearl_tokens_per_step", "prove_split_threshold", "report", "split_pays", "split_threshold",
           "split_threshold_expr", "steady", "steady_throughput", "step_period", "swap_coefficients",
           "symbolic_forms"]

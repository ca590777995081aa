"""minedraft.planner: capacity planning (``minedraft-plan``) and the what-if dashboard (``minedraft-dash``).

The planner answers a deployment decision: for these model pairs, GPU types, a GPU budget, a workload and
a p99 latency SLO, which policy (AR, SD, PSD, PEARL) with which k, batch, TP and drafter serves the traffic
for the fewest GPUs (or dollars)? It never retypes a formula: candidates are ranked by the closed forms of
:mod:`minedraft.theory`, the survivors are simulated exactly as ``minedraft-sim`` would (each simulated
point *is* a ``minedraft-sim`` command line, parsed by that CLI's own parser), and the report names the
latency model behind every number (measured step models where shipped, else the uncalibrated roofline).

- :mod:`~minedraft.planner.space`: inputs, the candidate configurations, the memory check, point argv;
- :mod:`~minedraft.planner.estimate`: the theory's estimates and the pruning rules;
- :mod:`~minedraft.planner.sweep`: evaluating points in parallel (processes or Ray), the JSONL checkpoint;
- :mod:`~minedraft.planner.search`: the stages of a plan and the JSON-ready result;
- :mod:`~minedraft.planner.report`: the self-contained HTML report and the Markdown summary;
- :mod:`~minedraft.planner.dash_app`: the Dash what-if app.
"""

from minedraft.planner.search import plan
from minedraft.planner.space import SLO, PlanInputs

__all__ = ["SLO", "PlanInputs", "plan"]

"""minedraft: batch parallel speculative decoding (PSD) — theory, simulation, calibration, execution.

The core vocabulary lives here; see docs/architecture.md for the picture.
"""

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.errors import InputError
from minedraft.latency import Constant, LatencyModel, LatencyProfile, Roofline, Table
from minedraft.policies import POLICIES, PolicyConfig
from minedraft.workload import LengthDist, Requests, Workload

__version__ = "0.1.0"
__all__ = ["POLICIES", "AcceptanceCurve", "Constant", "InputError", "LatencyModel", "LatencyProfile", "LengthDist",
           "PolicyConfig", "Requests", "Roofline", "StepCosts", "Table", "Workload", "__version__"]

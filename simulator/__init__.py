"""minedraft.simulator: a SimPy discrete-event simulator of AR, SD, PSD and PEARL serving."""

from minedraft.simulator.engine import SimulationStuck, simulate

__all__ = ["SimulationStuck", "simulate"]

"""Serving policies: one file and one class each, registered here by name."""

from minedraft.policies.ar import AR
from minedraft.policies.base import Policy, PolicyConfig, tetris_lengths
from minedraft.policies.pearl import PEARL
from minedraft.policies.psd import PSD
from minedraft.policies.sd import SD

#: Policy name -> class. The one registry; CLIs, simulator and executor look names up here.
POLICIES: dict[str, type[Policy]] = {"ar": AR, "sd": SD, "psd": PSD, "pearl": PEARL}

__all__ = ["AR", "PEARL", "POLICIES", "PSD", "SD", "Policy", "PolicyConfig", "tetris_lengths"]

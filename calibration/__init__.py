"""Calibration: acceptance curves and latency profiles from real runs, and the shipped data.

- :mod:`minedraft.calibration.latency` — step-time models fitted to measured forward times
  (``minedraft-calibrate latency``).
- :mod:`minedraft.calibration.acceptance` — AcceptanceCurve with confidence intervals from vLLM metrics,
  our traces, published MineDraft traces, or a draft/target model pair (``minedraft-calibrate acceptance``).
- :mod:`minedraft.calibration.speculative` — speculative decoding in plain torch (gpt-fast style) that
  measures a model pair's real acceptance; imports torch, so it is loaded only when a pair is measured.
- ``data/pair`` — a small Qwen3-architecture target/draft pair trained here (``scripts/train_pair.py``);
  ``data/curves`` — its measured acceptance curves.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
PAIR_DIR = DATA / "pair"
CURVES_DIR = DATA / "curves"

__all__ = ["CURVES_DIR", "DATA", "PAIR_DIR"]

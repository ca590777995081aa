"""Ratios between two policies on a named comparison basis (DESIGN.md, "Fair comparison").

- ``same_max_num_seqs`` (the published basis): both run with the same ``max_num_seqs``; PSD with
  ``psd_capacity`` as given (published: ``double``, so 2x the requests in flight, 2x the KV cache and
  one more GPU).
- ``same_concurrency``: the same requests in flight; PSD splits ``max_num_seqs`` between its halves.
- ``same_gpus``: the published configurations, normalised per GPU: throughput per GPU, and GPU-seconds
  per request instead of seconds (``makespan x GPUs``).
- ``same_slo``: each policy takes its best ``k <= k_max`` and in-flight count ``n <= concurrency_cap``
  (the same cap, i.e. the same KV budget, for all; default PSD double's ``2 max_num_seqs``) among those
  whose steady per-token latency (TPOT) meets ``slo_tpot_s``; throughput of the best ones compared.

A :class:`Versus` holds both sides and reads ``b`` against ``a`` (``a`` = the baseline, e.g. SD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from minedraft.theory.serving import Offline, Setup, Steady, offline, steady

from minedraft.errors import require

BASES = ("same_max_num_seqs", "same_concurrency", "same_gpus", "same_slo")


@dataclass(frozen=True, slots=True)
class Versus:
    """Policy ``b`` against baseline ``a`` on one basis."""

    basis: str
    a: Steady
    b: Steady
    offline_a: Offline | None = None
    offline_b: Offline | None = None

    @property
    def throughput_ratio(self) -> float:
        """b's output tokens/s over a's (per GPU on the same_gpus basis)."""
        if self.basis == "same_gpus":
            return self.b.throughput_per_gpu / self.a.throughput_per_gpu
        return self.b.throughput / self.a.throughput

    @property
    def tpot_ratio(self) -> float:
        """b's per-token latency over a's (< 1: b is faster per request)."""
        return self.b.tpot_s / self.a.tpot_s

    @property
    def makespan_reduction(self) -> float | None:
        """``1 - makespan_b / makespan_a`` offline (GPU-seconds on the same_gpus basis)."""
        if self.offline_a is None or self.offline_b is None:
            return None
        ma, mb = self.offline_a.makespan_s, self.offline_b.makespan_s
        if self.basis == "same_gpus":
            ma, mb = ma * self.a.gpus, mb * self.b.gpus
        return 1.0 - mb / ma

    def to_json(self) -> dict:
        def side(st: Steady, off: Offline | None) -> dict:
            d = {"policy": st.policy, "k": st.k, "in_flight": st.in_flight, "gpus": st.gpus,
                 "throughput_tok_s": st.throughput, "throughput_per_gpu": st.throughput_per_gpu,
                 "tpot_ms": st.tpot_s * 1e3}
            if off is not None:
                d["makespan_s"] = off.makespan_s
            return d

        return {"basis": self.basis, "a": side(self.a, self.offline_a), "b": side(self.b, self.offline_b),
                "throughput_ratio": self.throughput_ratio, "tpot_ratio": self.tpot_ratio,
                "makespan_reduction": self.makespan_reduction}


def setup_on(basis: str, policy: str, setup: Setup) -> Setup:
    """The setup ``policy`` runs with on ``basis``."""
    require(basis in BASES, "basis", f"must be one of {', '.join(BASES)}", basis)
    if basis == "same_concurrency" and policy == "psd":
        return setup.with_(psd_capacity="split")
    return setup


def best_under_slo(policy: str, setup: Setup, slo_tpot_s: float, k_max: int, concurrency_cap: int) -> Steady | None:
    """The highest-throughput (k, in-flight) of ``policy`` whose steady TPOT meets the SLO, or None."""
    best: Steady | None = None
    ks = [0] if policy == "ar" else range(1, min(k_max, setup.curve.positions) + 1)
    start = 2 if policy == "psd" else 1  # PSD with one request is sequential SD on an extra GPU
    for k in ks:
        for n in range(start, concurrency_cap + 1):
            st = steady(policy, setup, k, n)
            if st.tpot_s > slo_tpot_s:
                break  # TPOT does not fall as n grows
            if best is None or st.throughput > best.throughput * (1 + 1e-12):
                best = st
    return best


def compare(a: str, b: str, setup: Setup, k_a: int, k_b: int, basis: str = "same_max_num_seqs",
            num_requests: int | None = None, output_len: int | Sequence[int] | None = None,
            prompt_len: float = 0.0, slo_tpot_s: float | None = None, k_max: int = 10,
            concurrency_cap: int | None = None) -> Versus | None:
    """``b`` against ``a`` on ``basis``; offline makespans too when ``num_requests`` and ``output_len`` are given.

    On ``same_slo`` the k's are chosen (``k_a``/``k_b`` ignored) and the result is None when a policy
    meets the SLO with no configuration.
    """
    sa, sb = setup_on(basis, a, setup), setup_on(basis, b, setup)
    if basis == "same_slo":
        require(slo_tpot_s is not None and slo_tpot_s > 0, "slo_tpot_s", "the same_slo basis needs a TPOT target > 0",
                slo_tpot_s)
        cap = concurrency_cap or 2 * setup.max_num_seqs
        sta, stb = (best_under_slo(p, s, slo_tpot_s, k_max, cap) for p, s in ((a, sa), (b, sb)))
        if sta is None or stb is None:
            return None
    else:
        sta, stb = steady(a, sa, k_a), steady(b, sb, k_b)
    oa = ob = None
    if num_requests is not None and output_len is not None:
        oa = offline(a, sa, sta.k, num_requests, output_len, prompt_len, in_flight=sta.in_flight)
        ob = offline(b, sb, stb.k, num_requests, output_len, prompt_len, in_flight=stb.in_flight)
    return Versus(basis, sta, stb, oa, ob)

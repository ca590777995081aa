"""Operations a policy asks a driver to run, and what comes back.

A policy returns :class:`Op` objects; a driver (the simulator, or the executor on vLLM) runs each on
the resource it names and hands back an :class:`OpResult`. Kinds:

- ``prefill``        target forward over new prompts (produces each request's first token);
- ``draft_prefill``  drafter forward over the same prompts (builds the drafter's KV cache);
- ``decode``         target forward of one token per request (autoregressive step);
- ``draft``          drafter proposes ``k`` tokens per request (``k`` forwards);
- ``verify``         target checks the drafts (``k + 1`` positions per request) and accepts a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFILL, DRAFT_PREFILL, DECODE, DRAFT, VERIFY = "prefill", "draft_prefill", "decode", "draft", "verify"
OP_KINDS = (PREFILL, DRAFT_PREFILL, DECODE, DRAFT, VERIFY)
TARGET, DRAFTER = "target", "draft"
RESOURCES = (TARGET, DRAFTER)


@dataclass(frozen=True, slots=True)
class Op:
    """One unit of work on one resource.

    ``reqs`` are request ids (int64). ``k`` is the number of draft tokens per request (draft: to propose;
    verify: at most this many checked). ``lengths`` gives per-request verify lengths when they differ
    (TETRIS, PEARL). ``batch_id`` names the PSD half (0 or 1; 0 for single-batch policies).
    ``new_step`` marks the first op of an engine step: the driver charges the per-step overhead
    (scheduling, input preparation, output processing) before it. ``probe`` marks PEARL verify rows that
    check no draft but whose fresh parallel draft is compared with the target's new token: the driver
    reports ``accepted = 1`` for a match, ``0`` otherwise. ``chunk_reqs`` / ``chunk_tokens``: prompt chunks
    riding in the same forward (vLLM V1's chunked prefill: ``chunk_tokens`` prompt tokens in all); for a
    ``prefill`` op in that mode ``reqs`` are the chunks' requests and ``chunk_tokens`` their total.
    ``checks``: acceptance positions the driver draws per verify row when they differ from the verify
    lengths (PEARL: its drafter's guess of the target's next token is one more position).
    ``extra_forwards``: drafter forwards beyond ``k`` in a draft op (PEARL's guess).
    """

    kind: str
    resource: str
    reqs: np.ndarray
    k: int = 0
    batch_id: int = 0
    lengths: np.ndarray | None = None
    new_step: bool = True
    probe: np.ndarray | None = None
    chunk_reqs: np.ndarray | None = None
    chunk_tokens: int = 0
    checks: np.ndarray | None = None
    extra_forwards: int = 0

    @property
    def size(self) -> int:
        return len(self.reqs)

    @property
    def verify_lengths(self) -> np.ndarray:
        """Draft tokens checked per request in a verify op."""
        return self.lengths if self.lengths is not None else np.full(len(self.reqs), self.k, dtype=np.int64)


@dataclass(slots=True)
class OpResult:
    """What a driver reports when an op ends.

    verify: ``accepted[i]`` draft tokens of request ``reqs[i]`` were accepted (before any length cap).
    draft: ``confidence[i, j]`` is the drafter's cumulative log-probability of request ``i``'s draft
    prefix of length ``j + 1`` (used by TETRIS selection; ``None`` when not needed).
    verify (PEARL, optional): ``valid[i]`` says whether the drafter's parallel draft for request ``i``
    continues what the target produced; a live driver that compared tokens sets it, ``None`` lets the
    policy decide from ``accepted`` (the simulator's rule).
    """

    accepted: np.ndarray | None = None
    confidence: np.ndarray | None = None
    valid: np.ndarray | None = None

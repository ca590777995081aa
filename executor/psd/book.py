"""What the engine knows about each request's copy on the drafter (pure Python, no vLLM).

The drafter holds, per request, a token sequence and KV cache for all but its last token. The engine
never ships sequences after the prompt: a drafter op names, per request, ``keep`` (how many of the
drafter's tokens are still right) and ``append`` (the target's tokens after those: usually the one
bonus / correction token). :class:`DraftBook` keeps what is needed to compute both.

PSD (drafts made from a verified state):
    drafter copy = truth[:start] + drafts;  after the verify, ``confirmed`` = start + the drafts the
    target kept (compared token by token).

PEARL (drafts made *while* the same request is verified, assuming its drafts in flight are accepted):
    the drafter's first new token (``guess``) races the target's next token (bonus or correction); the
    rest are the drafts for the next step. They stay valid only if every draft in flight was accepted and
    the guess equals the target's token (or, in synthetic mode, a draw says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class View:
    confirmed: int = 0  # leading tokens of the drafter's copy known to equal the target's sequence
    drafts: list[int] = field(default_factory=list)  # proposals for positions draft_pos, draft_pos + 1, ...
    draft_pos: int = 0
    guess: int | None = None  # PEARL: the drafter's token for position draft_pos - 1
    pearl_valid: bool = False  # PEARL: drafts continue the target's sequence (verify them next)


def common_prefix(a: list[int], b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class DraftBook:
    """Per request (policy id): the drafter's state as the engine sees it."""

    def __init__(self) -> None:
        self.views: dict[int, View] = {}

    def __contains__(self, rid: int) -> bool:
        return rid in self.views

    def prefilled(self, rid: int, n_tokens: int) -> None:
        """The drafter received the request's first ``n_tokens`` (prompt + first output token)."""
        self.views[rid] = View(confirmed=n_tokens, draft_pos=n_tokens)

    def forget(self, rid: int) -> None:
        self.views.pop(rid, None)

    # ------------------------------------------------------------------------------ drafting
    def sync(self, rid: int, truth_len: int, assume: bool) -> tuple[int, int]:
        """(keep, append_from) for a drafter op: keep the drafter's first ``keep`` tokens, then append the
        target's tokens ``truth[append_from:truth_len]``. ``assume`` (PEARL, valid drafts in flight): keep
        those drafts as if accepted, append nothing."""
        v = self.views[rid]
        if assume:
            assert v.pearl_valid and v.confirmed >= v.draft_pos == truth_len, (rid, v, truth_len)
            return v.draft_pos + len(v.drafts), truth_len
        return v.confirmed, v.confirmed

    def drafted(self, rid: int, start: int, tokens: list[int], pearl: bool, assumed: bool = False) -> None:
        """The drafter produced ``tokens`` after a sequence of ``start`` tokens: the target's own, or (PEARL,
        ``assumed``) ending with drafts still being verified."""
        v = self.views[rid]
        if not assumed:
            v.confirmed = start
        if pearl:
            v.guess, v.drafts, v.draft_pos = tokens[0], list(tokens[1:]), start + 1
        else:
            v.guess, v.drafts, v.draft_pos = None, list(tokens), start

    def drafts(self, rid: int, n: int) -> list[int]:
        return self.views[rid].drafts[:n]

    # ---------------------------------------------------------------------------- verifying
    def verified_psd(self, rid: int, truth) -> None:
        """The target checked this request's drafts; ``truth`` is its whole sequence now."""
        v = self.views[rid]
        v.confirmed = v.draft_pos + common_prefix(v.drafts, truth[v.draft_pos:])
        v.drafts = []

    def verified_pearl(self, rid: int, in_flight: list[int], in_flight_pos: int, truth,
                       synthetic_match: bool | None = None) -> bool:
        """PEARL: the target checked ``in_flight`` (the drafts verified this step, at ``in_flight_pos``; empty
        for a probe) while the drafter made this view's guess + drafts. Returns whether the new drafts are
        valid (verify them next step). ``synthetic_match``: the guess-vs-target comparison drawn, not made."""
        v = self.views[rid]
        start = v.draft_pos - 1  # where the guess sits: in_flight_pos + len(in_flight)
        assert start == in_flight_pos + len(in_flight), (rid, v, in_flight_pos, len(in_flight))
        all_kept = common_prefix(in_flight, truth[in_flight_pos:]) == len(in_flight) and len(truth) > start
        if synthetic_match is not None:
            valid = all_kept and synthetic_match
        else:
            valid = all_kept and truth[start] == v.guess
        if valid:
            v.confirmed = start + 1
        else:
            copy = list(in_flight) + [v.guess]
            v.confirmed = in_flight_pos + common_prefix(copy, truth[in_flight_pos:])
            v.drafts = []
        v.pearl_valid = valid
        return valid

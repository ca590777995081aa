"""Policy state machines in isolation, and the helpers they share."""

import numpy as np
import pytest

from minedraft.errors import InputError
from minedraft.ops import DRAFT, DRAFT_PREFILL, DRAFTER, PREFILL, RESOURCES, TARGET, VERIFY, OpResult
from minedraft.policies import POLICIES, PolicyConfig, tetris_lengths
from minedraft.policies.base import k_lookup


def test_tetris_takes_global_top_prefixes():
    conf = np.log(np.array([[0.9, 0.8, 0.7], [0.5, 0.2, 0.1], [0.95, 0.9, 0.85]]))
    assert tetris_lengths(conf, 9).tolist() == [3, 3, 3]
    assert tetris_lengths(conf, 100).tolist() == [3, 3, 3]
    assert tetris_lengths(conf, 4).tolist() == [1, 0, 3]  # .95 .9 .9 .85: three of request 2, one of 0
    assert tetris_lengths(conf, 5).sum() == 5
    assert tetris_lengths(conf, 0).tolist() == [0, 0, 0]
    # equal confidences: position-major, request order (an even spread)
    flat = np.log(np.full((4, 3), 0.8)) * np.arange(1, 4)
    assert tetris_lengths(flat, 6).tolist() == [2, 2, 1, 1]


def test_k_schedule_expands_like_vllm():
    cfg = PolicyConfig(num_speculative_tokens=5, k_schedule=((1, 4, 5), (9, 16, 3)))
    t = k_lookup(cfg, 20)
    assert t[1:5].tolist() == [5] * 4
    assert t[5:9].tolist() == [5] * 4  # gap carries the previous k
    assert t[9:17].tolist() == [3] * 8
    assert t[17:].tolist() == [3] * 4  # tail carries the last k
    capped = k_lookup(PolicyConfig(num_speculative_tokens=2, k_schedule=((1, 8, 4),)), 8)
    assert capped[1:].tolist() == [2] * 8  # never above num_speculative_tokens
    for bad in [((2, 4, 3),), ((1, 4, 3), (3, 8, 2)), ((1, 4, 0),), ()]:
        with pytest.raises(InputError):
            PolicyConfig(k_schedule=bad)


@pytest.mark.parametrize("field,value", [("max_num_seqs", 0), ("num_speculative_tokens", 0), ("psd_capacity", "x"),
                                         ("sd_drafter", "gpu"), ("tetris_extra", -1), ("max_num_seqs", 1.5),
                                         ("kv_capacity_tokens", 0)])
def test_config_validation(field, value):
    with pytest.raises(InputError) as e:
        PolicyConfig(**{field: value})
    assert field in str(e.value)


def drive(name, cfg, n=10, out=7, accept=lambda k: k):
    """A hand driver: runs ops to completion in issue order, accepting ``accept(k)`` drafts each time."""
    p = POLICIES[name](cfg, np.full(n, 5), np.full(n, out))
    p.arrive(range(n))
    log, inflight, free = [], [], set(RESOURCES)
    for _ in range(10_000):
        ops = p.next_ops(frozenset(free))
        for op in ops:
            assert op.resource in free
            free.discard(op.resource)
        inflight += ops
        log += [(op.kind, op.resource, tuple(op.reqs.tolist()), op.batch_id) for op in ops]
        if not inflight:
            break
        op = inflight.pop(0)
        res = OpResult()
        if op.kind == VERIFY:  # accept(n) of the n positions the driver is asked to check
            checks = op.checks if op.checks is not None else op.verify_lengths
            res.accepted = np.array([accept(int(x)) for x in checks])
        p.on_done(op, res)
        free.add(op.resource)
    assert p.idle and p.num_finished == n
    assert np.all(p.generated == out)
    return log


def test_sd_sequence_and_placement():
    log = drive("sd", PolicyConfig(max_num_seqs=4, num_speculative_tokens=2))
    kinds = [k for k, *_ in log]
    assert kinds[:4] == [PREFILL, DRAFT_PREFILL, DRAFT, VERIFY]
    assert all(r == TARGET for _, r, *_ in log)  # shared: drafting occupies the target
    own = drive("sd", PolicyConfig(max_num_seqs=4, sd_drafter="own"))
    assert {r for k, r, *_ in own if k in (DRAFT, DRAFT_PREFILL)} == {DRAFTER}


def test_psd_admission_joins_the_just_verified_half():
    log = drive("psd", PolicyConfig(max_num_seqs=2, num_speculative_tokens=2), n=9, out=4)
    # warm-up: the first prefill alternates halves; the first decode step drafts half 0 alone
    decode = [(k, b) for k, _, _, b in log if k in (DRAFT, VERIFY)]
    assert decode[0] == (DRAFT, 0)
    assert decode[1:3] == [(VERIFY, 0), (DRAFT, 1)]
    # later newcomers: every prefill is followed by a step that drafts the half just verified
    for i, (k, _, reqs, _) in enumerate(log):
        if k == PREFILL and i > 0:
            prev_verified = [b for kk, _, _, b in log[:i] if kk == VERIFY][-1]
            nxt = next((kk, b, r) for kk, _, r, b in log[i + 1:] if kk == DRAFT)
            assert nxt[1] == prev_verified and set(reqs) <= set(nxt[2])


def test_pearl_probes_then_reuses_drafts():
    log = drive("pearl", PolicyConfig(max_num_seqs=3, num_speculative_tokens=2), n=3, out=12)
    steps = [(k, r) for k, r, *_ in log if k in (DRAFT, VERIFY)]
    # every step pairs a whole-batch verify with a whole-batch draft on the drafter
    assert steps[0::2] == [(VERIFY, TARGET)] * (len(steps) // 2)
    assert steps[1::2] == [(DRAFT, DRAFTER)] * (len(steps) // 2)


def test_pearl_full_acceptance_is_fast():
    full = drive("pearl", PolicyConfig(max_num_seqs=3, num_speculative_tokens=2), n=3, out=13)
    none = drive("pearl", PolicyConfig(max_num_seqs=3, num_speculative_tokens=2), n=3, out=13, accept=lambda k: 0)
    # all accepted (drafts and guesses): one probe (1 token) then 3 tokens a step; none: a token a step
    assert sum(k == VERIFY for k, *_ in full) == 1 + 4
    assert sum(k == VERIFY for k, *_ in none) == 12


# ------------------------------------------------------------------ PSD auto: one batch or two halves
def drive_phased(cfg, n, out, arrive_at, accept=lambda k: k):
    """Like ``drive``, with requests arriving in groups: ``arrive_at`` maps an op count to the ids arriving then.
    Returns the op log (kind, reqs, batch_id, step) and the policy."""
    out = np.broadcast_to(np.asarray(out), (n,)).copy()
    p = POLICIES["psd"](cfg, np.full(n, 5), out)
    log, inflight, free, step, done_ops = [], [], set(RESOURCES), 0, 0
    for _ in range(100_000):
        for at in [a for a in arrive_at if a <= done_ops]:
            p.arrive(arrive_at.pop(at))
        ops = p.next_ops(frozenset(free))
        if ops:
            step += 1
        for op in ops:
            assert op.resource in free
            free.discard(op.resource)
            log.append((op.kind, tuple(op.reqs.tolist()), op.batch_id, step))
        inflight += ops
        if not inflight:
            if not arrive_at:
                break
            done_ops = min(arrive_at)
            continue
        op = inflight.pop(0)
        res = OpResult()
        if op.kind == VERIFY:
            res.accepted = np.array([accept(int(x)) for x in op.verify_lengths])
        p.on_done(op, res)
        free.add(op.resource)
        done_ops += 1
    assert p.idle and p.num_finished == n and np.all(p.generated == out)
    return log, p


def _steps(log):
    by = {}
    for kind, reqs, half, step in log:
        by.setdefault(step, []).append((kind, reqs, half))
    return by


def test_psd_auto_runs_one_batch_below_its_threshold_like_sd_with_the_drafter_apart():
    cfg = PolicyConfig(max_num_seqs=8, num_speculative_tokens=2, psd_split="auto", psd_split_rows=6)
    log, p = drive_phased(cfg, 4, 9, {0: list(range(4))}, accept=lambda k: 1)
    decode = [(k, r, h) for k, r, h, _ in log if k in (DRAFT, VERIFY)]
    assert decode and all(h == 0 for *_, h in decode)  # one batch: half 0 only
    for ops in _steps(log).values():  # never a verify beside a draft: drafted, then verified
        assert len(ops) == 1 or {k for k, *_ in ops} <= {PREFILL, DRAFT_PREFILL}
    kinds = [k for k, *_ in decode]
    assert kinds[:4] == [DRAFT, VERIFY, DRAFT, VERIFY] and p.steps_split == 0 and p.steps_one == len(decode)
    # always: the same requests run as two halves of two
    log2, p2 = drive_phased(PolicyConfig(max_num_seqs=8, num_speculative_tokens=2), 4, 9, {0: list(range(4))},
                            accept=lambda k: 1)
    assert {h for k, _, h, _ in log2 if k == VERIFY} == {0, 1} and p2.steps_split > 0


def test_psd_auto_splits_under_load_merges_when_it_drains_and_loses_nothing():
    """Three requests (one batch), then twelve more (two halves), then the load drains (one batch again): every
    request ends with exactly its tokens, and each is drafted, verified, drafted, ... never drafted twice in a
    row (no draft thrown away) nor verified without drafts."""
    cfg = PolicyConfig(max_num_seqs=8, num_speculative_tokens=3, psd_split="auto", psd_split_rows=6)
    n = 15
    out = np.where(np.arange(n) < 3, 120, 30)  # the first three outlast the burst
    log, p = drive_phased(cfg, n, out, {0: [0, 1, 2], 12: list(range(3, n))}, accept=lambda k: k // 2)
    assert p.steps_split > 0 and p.steps_one > 0
    steps = _steps(log)
    modes = []
    for ops in steps.values():
        kinds = sorted(k for k, *_ in ops)
        if DRAFT in kinds or VERIFY in kinds:
            modes.append("two" if kinds == [DRAFT, VERIFY] else "one")
    first_two, last_two = modes.index("two"), len(modes) - 1 - modes[::-1].index("two")
    assert "one" in modes[:first_two] and "one" in modes[last_two + 1:]  # one batch, two halves, one batch again
    last = {}
    for kind, reqs, half, step in log:
        if kind not in (DRAFT, VERIFY):
            continue
        for r in reqs:
            assert last.get(r) != kind, (r, kind, step)
            assert kind == DRAFT or last.get(r) == DRAFT, (r, step)
            last[r] = kind
    # hysteresis: merging waits until at most 3/4 of the threshold run (6 -> 4), so no flapping at the edge
    switches = sum(a != b for a, b in zip(modes, modes[1:]))
    assert switches <= 4, modes


def test_psd_auto_halves_fit_one_engine_batch_each():
    """A live engine (psd_limit_halves): one batch never holds more than max_num_seqs; a burst splits it."""
    cfg = PolicyConfig(max_num_seqs=4, num_speculative_tokens=2, psd_split="auto", psd_limit_halves=True)
    log, p = drive_phased(cfg, 8, 6, {0: list(range(8))})
    assert max(len(r) for k, r, *_ in log if k in (DRAFT, VERIFY)) <= 4 and p.steps_split > 0


def test_psd_split_config_is_validated():
    for field, value in [("psd_split", "sometimes"), ("psd_split_rows", 1), ("psd_split_rows", 2.5)]:
        with pytest.raises(InputError) as e:
            PolicyConfig(**{field: value})
        assert field in str(e.value)


def test_psd_auto_with_a_threshold_beyond_its_capacity_keeps_one_batch_of_max_num_seqs():
    """psd_split_rows above PSD's capacity (the step model found two halves never pay): one batch, at most
    max_num_seqs in flight, the rest wait; between max_num_seqs + 1 and the capacity it splits beyond one batch."""
    never = PolicyConfig(max_num_seqs=4, num_speculative_tokens=2, psd_split="auto", psd_split_rows=9)
    log, p = drive_phased(never, 10, 6, {0: list(range(10))})
    assert p.split_rows is None and p.steps_split == 0
    assert max(len(r) for k, r, *_ in log if k in (DRAFT, VERIFY, PREFILL)) <= 4
    beyond = PolicyConfig(max_num_seqs=4, num_speculative_tokens=2, psd_split="auto", psd_split_rows=7)
    log, p = drive_phased(beyond, 10, 6, {0: list(range(10))})
    assert p.split_rows == 5 and p.steps_split > 0

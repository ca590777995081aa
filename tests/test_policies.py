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

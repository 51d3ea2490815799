"""Rollout replay buffer: FIFO, capacity, eligibility, sampling without removal.

Run: .venv/bin/python -m pytest tests/test_replay.py
"""
import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from dotslab.records import Group, Question, Rollout
from dotslab.replay import RolloutReplayBuffer


def make_group(qid: str, rewards, step=0) -> Group:
    q = Question(qid, f"prompt {qid}", "1")
    rs = tuple(Rollout(qid, "x", torch.tensor([1]), torch.tensor([2]), torch.tensor([-0.5]), float(r), r >= 1)
               for r in rewards)
    return Group(q, rs, step)


def test_fifo_eviction_and_capacity():
    b = RolloutReplayBuffer(3)
    b.add([make_group(f"q{i}", [0, 1], step=i) for i in range(5)])
    assert len(b) == 3 and [g.question.id for g in b.groups] == ["q2", "q3", "q4"]


def test_keep_before_add_trims_oldest():
    b = RolloutReplayBuffer(4)
    b.add([make_group(f"q{i}", [0, 1]) for i in range(4)])
    b.add([make_group("new", [0, 1])], keep_before_add=2)
    assert [g.question.id for g in b.groups] == ["q2", "q3", "new"]


def test_eligible_drops_zero_variance_and_keeps_newest_per_question():
    b = RolloutReplayBuffer(10)
    b.add([make_group("a", [0, 1], step=1), make_group("b", [1, 1]), make_group("a", [1, 0], step=2)])
    el = b.eligible()
    assert [(g.question.id, g.step) for g in el] == [("a", 2)]


def test_filter_on_write():
    b = RolloutReplayBuffer(10, filter_on_write=True)
    b.add([make_group("a", [0, 0]), make_group("b", [0, 1])])
    assert [g.question.id for g in b.groups] == ["b"]


def test_sample_does_not_remove_and_reports_shortfall():
    b = RolloutReplayBuffer(10)
    b.add([make_group(f"q{i}", [0, 1]) for i in range(3)])
    rng = np.random.default_rng(0)
    got = b.sample(5, rng)
    assert len(got) == 3 and len(b) == 3
    assert b.sample(5, rng, exclude_ids={"q0"}) and all(g.question.id != "q0" for g in b.sample(5, rng, exclude_ids={"q0"}))
    assert RolloutReplayBuffer(2).sample(3, rng) == []


def test_state_round_trip():
    b = RolloutReplayBuffer(5)
    b.add([make_group(f"q{i}", [0, 1]) for i in range(3)])
    c = RolloutReplayBuffer(5)
    c.load_state_dict(b.state_dict())
    assert [g.question.id for g in c.groups] == ["q0", "q1", "q2"] and c.total_added == 3


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.lists(st.lists(st.integers(0, 1), min_size=2, max_size=4), max_size=30),
       st.integers(0, 5))
def test_capacity_and_fifo_invariants(capacity, group_rewards, keep):
    b = RolloutReplayBuffer(capacity)
    added = []
    for i, rw in enumerate(group_rewards):
        g = make_group(f"q{i}", rw, step=i)
        b.add([g], keep_before_add=keep if i % 3 == 0 else None)
        added.append(g)
        assert len(b) <= capacity
        steps = [x.step for x in b.groups]
        assert steps == sorted(steps)              # FIFO order preserved
        assert b.groups[-1] is g                   # newest is last
        assert all(x in added for x in b.groups)
    sample = b.sample(capacity, np.random.default_rng(0))
    assert len({id(x) for x in sample}) == len(sample)
    assert all(x.has_variance for x in sample)

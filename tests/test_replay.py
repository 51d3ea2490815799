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


def test_retention_keeps_newest_replayable_groups():
    # C = 4, δB = 1 -> 3 replayable groups are kept before the step's fresh group is appended
    b = RolloutReplayBuffer(4, fresh_per_step=1)
    b.add([make_group("a", [0, 1], step=1), make_group("b", [1, 1], step=1), make_group("c", [0, 1], step=1),
           make_group("d", [0, 1], step=1), make_group("a", [1, 0], step=2), make_group("e", [0, 0], step=2)])
    b.add([make_group("new", [1, 1], step=3)])
    # b, e: no reward spread; the step-1 copy of a: superseded; of c, d, a(step 2) the newest 3 stay
    assert [(g.question.id, g.step) for g in b.groups] == [("c", 1), ("d", 1), ("a", 2), ("new", 3)]


def test_first_step_groups_survive_round_zero_with_c_equal_b():
    # C = B = 4, δ = 1/2: round 0 writes B fresh groups twice; step 1's groups must still be replayable at step 3
    b = RolloutReplayBuffer(4, fresh_per_step=2)
    b.add([make_group(f"s1q{i}", [0, 1], step=1) for i in range(4)])
    b.add([make_group(f"s2q{i}", [0, 1], step=2) for i in range(4)])
    ids = {g.question.id for g in b.eligible()}
    assert {"s1q2", "s1q3"} <= ids and len(b) == 2 + 4
    assert len(b.sample(2, np.random.default_rng(0), exclude_ids={f"s2q{i}" for i in range(4)})) == 2


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


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8), st.integers(0, 4),
       st.lists(st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 1), min_size=2, max_size=4)),
                         max_size=6), max_size=12))
def test_retention_matches_a_direct_simulation(capacity, fresh_per_step, steps):
    """After every add, the buffer equals: newest C - δB of (newest per question, with spread) + the fresh groups."""
    b = RolloutReplayBuffer(capacity, fresh_per_step=fresh_per_step)
    stored: list[Group] = []  # what the rule says the buffer holds, oldest first
    for step, fresh in enumerate(steps, start=1):
        groups = [make_group(f"q{q}", rw, step=step) for q, rw in fresh]
        newest: dict[str, Group] = {}
        for g in stored:
            newest[g.question.id] = g
        replayable = sorted((g for g in newest.values() if g.has_variance), key=lambda g: stored.index(g))
        keep = max(0, capacity - fresh_per_step)
        stored = (replayable[-keep:] if keep else []) + groups
        b.add(groups)
        assert list(b.groups) == stored
        assert len(b) <= max(capacity - fresh_per_step, 0) + len(groups)
    sample = b.sample(capacity, np.random.default_rng(0))
    assert len({id(x) for x in sample}) == len(sample)
    assert all(x.has_variance for x in sample)

"""DOTS selection probabilities and samplers.

Run: .venv/bin/python -m pytest tests/test_selector.py
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dotslab.selector import UniformSampler, dots_sample, selection_diagnostics, selection_probs


def test_probs_peak_at_target_and_hand_values():
    d = np.array([0.5, 0.25, 1.0])
    p = selection_probs(d, 0.5, 0.25)
    w = np.exp(-np.array([0.0, 0.25, 0.5]) / 0.25)
    assert np.allclose(p, w / w.sum())
    assert p.argmax() == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.floats(0, 1), st.floats(1e-4, 10))
def test_probs_sum_to_one(d, alpha, tau):
    p = selection_probs(np.array(d), alpha, tau)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    assert abs(p.sum() - 1) < 1e-9


def test_small_temperature_picks_nearest_to_target():
    d = np.array([0.0, 0.1, 0.45, 0.9, 0.55, 1.0])
    chosen = dots_sample(d, 2, 0.5, 1e-3, np.random.default_rng(0))
    assert sorted(chosen.tolist()) == [2, 4]


def test_dots_sample_distinct_and_matches_probs():
    d = np.array([0.5, 0.3, 0.9])
    rng = np.random.default_rng(1)
    firsts = np.bincount([dots_sample(d, 1, 0.5, 0.2, rng)[0] for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(firsts, selection_probs(d, 0.5, 0.2), atol=0.03)
    picks = dots_sample(np.random.default_rng(2).random(20), 20, 0.5, 0.1, rng)
    assert sorted(picks.tolist()) == list(range(20))
    with pytest.raises(ValueError, match="cannot select 4 questions from a pool of 3"):
        dots_sample(d, 4, 0.5, 1.0, rng)


def test_uniform_sampler_epochs_and_state():
    s = UniformSampler(5, seed=0)
    first = np.concatenate([s.draw(2), s.draw(2)])
    assert len(set(first.tolist())) == 4
    state = s.state_dict()
    a = s.draw(3)
    assert len(set(a.tolist())) == 3
    s2 = UniformSampler(5, seed=99)
    s2.load_state_dict(state)
    assert s2.draw(3).tolist() == a.tolist()


def test_diagnostics():
    out = selection_diagnostics(np.array([0.5, 0.5]), np.array([0.0, 0.5]))
    assert out["select/effective_frac"] == 0.5 and out["select/abs_error"] == 0.25

"""Verifiers and the SafeReward wrapper.

Run: .venv/bin/python -m pytest tests/test_rewards.py -q
"""
from __future__ import annotations

import logging

import pytest

from dotslab.records import Question
from dotslab.rewards import (SafeReward, exact_match, extract_last_number, get_reward_fn, math_verify_reward,
                             reasoning_gym_reward)


def q(answer: str, **metadata) -> Question:
    return Question("q1", "What is it?", answer, metadata)


@pytest.mark.parametrize("text, expected", [
    ("7 + 12 - 3 = 16", "16"),
    ("The answer is -4.", "-4"),
    ("10-3", "3"),  # a subtraction, not a negative number
    ("(-4)", "-4"),
    ("about 3.25 units", "3.25"),
    ("total: 1,234,567 apples", "1234567"),
    ("\\boxed{19} but later 20", "19"),
    ("\\boxed{\\frac{3}{4}}", "3/4"),
    ("3/4", "3/4"),
    ("It is 2.", "2"),
    ("no digits here", None),
    ("", None),
])
def test_extract_last_number(text, expected):
    assert extract_last_number(text) == expected


@pytest.mark.parametrize("completion, answer, reward", [
    ("16", "16", 1.0),
    ("So the answer is 16.", "16", 1.0),
    ("16.0", "16", 1.0),
    ("1,234", "1234", 1.0),
    ("-4", "-4", 1.0),
    ("4", "-4", 0.0),
    ("0.5", "1/2", 1.0),
    ("17", "16", 0.0),
    ("no idea", "16", 0.0),
    ("9" * 5000, "16", 0.0),  # beyond int-parsing limits: not a number, not a crash
    ("yes", "yes", 1.0),  # non-numeric answers fall back to string equality
])
def test_exact_match(completion, answer, reward):
    assert exact_match(completion, q(answer)) == reward


@pytest.mark.parametrize("completion, answer, reward", [
    ("The answer is 1/2", "0.5", 1.0),
    ("0.5", "1/2", 1.0),
    ("so \\boxed{19}", "19", 1.0),
    ("$0.75$", "\\frac{3}{4}", 1.0),
    ("The answer is 18", "19", 0.0),
    ("", "19", 0.0),
    ("The answer is 2", "2x+3", 0.0),  # the gold answer is read whole, not as its first number
    ("The answer is $3 + 2x$.", "2x+3", 1.0),
    ("The answer is x^2+1", "x^2 + 1", 1.0),  # LaTeX without $: read from the answer span
    ("<answer>1/2</answer>", "0.5", 1.0),
])
def test_math_verify_reward(completion, answer, reward):
    pytest.importorskip("math_verify")
    assert math_verify_reward(completion, q(answer)) == reward


def test_reasoning_gym_reward_is_binary():
    pytest.importorskip("reasoning_gym")
    from dotslab.data import reasoning_gym_questions
    question = reasoning_gym_questions("gsm_symbolic", 1, 0)[0]
    gold = question.answer
    assert reasoning_gym_reward(f"So the answer is {gold}.", question) == 1.0
    assert reasoning_gym_reward(f"<answer>{gold}</answer>", question) == 1.0
    assert reasoning_gym_reward("The answer is 999999.", question) == 0.0  # rg itself gives 0.01 here
    assert reasoning_gym_reward("", question) == 0.0


def test_get_reward_fn():
    assert get_reward_fn("exact", "hf:foo") is exact_match  # explicit names keep their verifier
    assert get_reward_fn("math_verify", "arithmetic") is math_verify_reward
    assert get_reward_fn("reasoning_gym") is reasoning_gym_reward
    with pytest.raises(ValueError, match="options: auto, exact, math_verify"):
        get_reward_fn("fuzzy", "arithmetic")


def test_auto_chooses_per_question_whatever_the_task_name():
    pytest.importorskip("math_verify")
    # why numbers never go to math-verify: it evaluates an echoed expression, so on arithmetic it rewards
    # repeating the question
    arithmetic = Question("q", "What is 12 - 5 + 3?", "10", {"task": "arithmetic"})
    hub = Question("h", "Expand 2(x + 1) + 1.", "2x+3", {"answer_format": "math"})
    words = Question("w", "Capital of France?", "Paris")  # no format: guessed from the answer
    for task in ("arithmetic", "data/arithmetic_sample.jsonl", "hf:foo", None):  # the name is not consulted
        auto = get_reward_fn("auto", task)
        assert auto("12 - 5 + 3", arithmetic) == 0.0 and math_verify_reward("12 - 5 + 3", arithmetic) == 1.0
        assert auto("12 - 5 + 3 = 10", arithmetic) == 1.0
        assert auto("so it is $3 + 2x$", hub) == 1.0 and exact_match("so it is $3 + 2x$", hub) == 0.0
        assert auto("The answer is: paris.", words) == 1.0 and auto("Lyon", words) == 0.0


def test_safe_reward_passes_through_and_clamps():
    safe = SafeReward(exact_match)
    assert safe("16", q("16")) == (1.0, True)
    assert safe("15", q("16")) == (0.0, False)
    assert SafeReward(lambda c, x: 1.7)("", q("1")) == (1.0, True)
    assert SafeReward(lambda c, x: -2)("", q("1")) == (0.0, False)
    assert SafeReward(lambda c, x: 0.6, correct_threshold=0.5)("", q("1")) == (0.6, True)
    assert safe.errors == 0


def test_safe_reward_swallows_raising_and_nan(caplog):
    def boom(completion, question):
        raise KeyError("missing")

    raising, nan, text = SafeReward(boom), SafeReward(lambda c, x: float("nan")), SafeReward(lambda c, x: "1")
    with caplog.at_level(logging.WARNING, logger="dotslab.rewards"):
        assert raising("x", q("1")) == (0.0, False)
        assert raising("y", q("1")) == (0.0, False)
        assert nan("x", q("1")) == (0.0, False)
        assert SafeReward(lambda c, x: float("inf"))("x", q("1")) == (0.0, False)
        assert text("x", q("1")) == (0.0, False)
    assert raising.errors == 2 and nan.errors == 1 and text.errors == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "dotslab.rewards"]
    assert sum("KeyError" in m for m in warnings) == 1  # logged once per error type
    assert all("'q1'" in m for m in warnings)  # names the question id
    assert any("not finite" in m for m in warnings) and any("not a number" in m for m in warnings)
    assert raising.pop_error_count() == 2 and raising.pop_error_count() == 0
    assert raising.errors == 2  # the running total survives a pop


def test_safe_reward_rejects_bad_threshold():
    with pytest.raises(ValueError, match="correct_threshold"):
        SafeReward(exact_match, correct_threshold=1.5)

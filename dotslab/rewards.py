"""Verifiers: map (completion, question) to a reward in [0, 1], and a wrapper that never raises.

The paper uses a binary rule-based correctness reward on the final answer (arXiv 2506.05316 §2,
§5: math-verify style checking for MATH/DeepScaleR); pass rates and difficulty come from it (§3.1).
Each verifier extracts the answer the way :mod:`dotslab.answers` describes; :func:`explain` shows
what it extracted.

Deviations / decisions:
  1. ``reward auto`` chooses per question, from its answer format (:func:`dotslab.answers.answer_format`):
     reasoning-gym's scorer for reasoning-gym questions, else exact match for numbers, text or list
     equality for words and lists, math-verify for free-form math. Numbers never go to math-verify:
     it evaluates expressions, so echoing the question's expression ("12 - 5 + 3" for "What is
     12 - 5 + 3?") scores 1. SmolLM2 learned exactly that within 8 GRPO steps when a benchmark run
     scored the arithmetic mix with math-verify (2026-11-25).
  2. reasoning-gym gives 0.01 partial credit to a wrong number; :func:`reasoning_gym_reward`
     binarizes it (score == 1 → 1, else 0), as docs/method.md §1 binarizes non-binary rewards.
  3. :func:`parity_reward` is a synthetic reward for smoke tests and the ``tiny`` benchmark: 1 if
     the completion has an even number of characters. A random-init policy gets about 0.5 on it, so
     groups have reward variance and every code path (advantages, selection, replay) runs.
  4. :class:`SafeReward` turns a raising, NaN/inf or non-numeric reward into 0 (logged once per error
     type, counted for ``rollout/reward_errors``) so one bad verifier call cannot kill a run.
"""
from __future__ import annotations

import functools
import logging
import math
from fractions import Fraction
from typing import Any, Callable

from .answers import (answer_format, answer_span, extract_last_number, last_tagged, list_items, number_answer,
                      scratchpad_answer, to_fraction)
from .records import Question

RewardFn = Callable[[str, Question], float]
Check = Callable[[str, Question], tuple[str | None, float]]
"""A verifier's core: (what it extracted from the completion, reward)."""
REWARD_NAMES = ("auto", "exact", "math_verify", "reasoning_gym", "text", "list")

logger = logging.getLogger("dotslab.rewards")


def _check_number(completion: str, question: Question) -> tuple[str | None, float]:
    gold = to_fraction(question.answer)
    if gold is None:
        gold = to_fraction(extract_last_number(question.answer))
    if gold is None:
        return completion.strip(), float(completion.strip() == question.answer.strip())
    found = number_answer(completion)
    value = to_fraction(found)
    if value is None:
        return found, 0.0
    return found, float(abs(value - gold) <= Fraction(1, 10 ** 6) * max(1, abs(gold)))


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _check_text(completion: str, question: Question) -> tuple[str | None, float]:
    span = answer_span(completion, question.answer)
    return span, float(span is not None and _same_text(span, question.answer))


def _same_item(a: str, b: str) -> bool:
    x, y = to_fraction(a), to_fraction(b)
    return x == y if x is not None and y is not None else _same_text(a, b)


def _check_list(completion: str, question: Question) -> tuple[str | None, float]:
    span = answer_span(completion, question.answer)
    if span is None:
        return None, 0.0
    got, gold = list_items(span), list_items(question.answer)
    return span, float(len(got) == len(gold) and all(map(_same_item, got, gold)))


def _check_math(completion: str, question: Question) -> tuple[str | None, float]:
    from math_verify import parse, verify
    answer = question.answer  # a bare gold answer is one expression: unwrapped, '2x+3' would parse as 2
    gold = parse(answer if "$" in answer or "\\boxed" in answer else f"${answer}$") or parse(answer)
    tagged, span = last_tagged(completion), answer_span(completion, question.answer)
    candidates = [f"\\boxed{{{tagged}}}"] if tagged else []
    candidates += [completion] + ([f"\\boxed{{{span}}}"] if span else [])
    predicted = next((p for p in map(parse, candidates) if p), [])  # the first text math-verify can parse
    if not predicted:
        return None, 0.0
    shown = predicted[-1] if isinstance(predicted[-1], str) else str(predicted[0])
    return shown, float(bool(gold) and verify(gold, predicted))


@functools.lru_cache(maxsize=None)
def _reasoning_gym_scorer(task: str) -> Callable[[str | None, dict], float]:
    import reasoning_gym
    return reasoning_gym.get_score_answer_fn(task)  # builds a dataset object, so cache it per task


def _check_reasoning_gym(completion: str, question: Question) -> tuple[str | None, float]:
    if "rg_entry" not in question.metadata or "task" not in question.metadata:
        raise ValueError(f"question {question.id!r} has no 'rg_entry'/'task' metadata; "
                         f"build it with data.reasoning_gym_questions")
    entry = question.metadata["rg_entry"]
    found = (number_answer(completion) if answer_format(question) == "number"
             else answer_span(completion, str(entry["answer"])))
    score = _reasoning_gym_scorer(question.metadata["task"])(found, entry)
    return found, 1.0 if score == 1.0 else 0.0


def _check_scratchpad(completion: str, question: Question) -> tuple[str | None, float]:
    """The miniature's ``addition``: the digits after the last '>' must be the answer, as written."""
    found = scratchpad_answer(completion)
    return found, float(found is not None and found == question.answer.strip())


_CHECKS: dict[str, Check] = {"exact": _check_number, "text": _check_text, "list": _check_list,
                             "math_verify": _check_math, "reasoning_gym": _check_reasoning_gym,
                             "scratchpad": _check_scratchpad}
_AUTO = {"number": "exact", "text": "text", "list": "list", "math": "math_verify", "scratchpad": "scratchpad"}


def exact_match(completion: str, question: Question) -> float:
    """1 if the completion's last number equals the answer (relative tolerance 1e-6), else 0.

    The last number inside the last ``<answer>`` tag or ``\\boxed{}`` wins when there is one. A
    non-numeric answer falls back to exact string equality of the stripped completion.
    """
    return _check_number(completion, question)[1]


def text_match(completion: str, question: Question) -> float:
    """1 if the completion's answer span equals the answer up to case and runs of whitespace."""
    return _check_text(completion, question)[1]


def list_match(completion: str, question: Question) -> float:
    """1 if the answer span's comma-separated items equal the answer's, in order (numbers compared as numbers)."""
    return _check_list(completion, question)[1]


def math_verify_reward(completion: str, question: Question) -> float:
    """1 if math-verify finds the answer equal (1/2 = 0.5, ``\\boxed{}``, LaTeX).

    It parses the first of these that it can: the last ``<answer>`` tag, the whole completion, the
    answer span (so "The answer is x^2+1", without ``$``, is read too).
    """
    return _check_math(completion, question)[1]


def reasoning_gym_reward(completion: str, question: Question) -> float:
    """reasoning-gym's own ``score_answer`` on the extracted answer, binarized (1.0 only if exactly 1)."""
    return _check_reasoning_gym(completion, question)[1]


def _auto_name(question: Question) -> str:
    return "reasoning_gym" if "rg_entry" in question.metadata else _AUTO[answer_format(question)]


def auto_reward(completion: str, question: Question) -> float:
    """The verifier the question's source calls for: reasoning-gym's scorer, or by answer format."""
    return _CHECKS[_auto_name(question)](completion, question)[1]


_REWARDS: dict[str, RewardFn] = {"auto": auto_reward, "exact": exact_match, "text": text_match,
                                 "list": list_match, "math_verify": math_verify_reward,
                                 "reasoning_gym": reasoning_gym_reward}


def parity_reward(completion: str, question: Question) -> float:
    """Synthetic smoke-test reward: 1.0 if ``len(completion)`` is even, else 0.0 (see decision 3)."""
    return float(len(completion) % 2 == 0)


def get_reward_fn(name: str, task: str | None = None) -> RewardFn:
    """The verifier called ``name`` (one of :data:`REWARD_NAMES`); 'auto' chooses per question.

    ``task`` is accepted for existing callers and not consulted: questions carry their own source.
    """
    if name not in _REWARDS:
        raise ValueError(f"unknown reward {name!r}; options: {', '.join(REWARD_NAMES)}")
    return _REWARDS[name]


def explain(completion: str, question: Question, reward: str = "auto") -> dict[str, Any]:
    """What verifier ``reward`` makes of one completion, for display.

    Returns ``extracted`` (the answer it read, or None), ``reward`` (in [0, 1], as :class:`SafeReward`
    scores it), ``is_correct`` (reward == 1), ``verifier`` (the name 'auto' resolved to), ``answer_format``
    and ``error`` (None, or the verifier's exception as text, scored 0).
    """
    name = _auto_name(question) if reward == "auto" else reward
    if name not in _CHECKS:
        raise ValueError(f"unknown reward {reward!r}; options: {', '.join(REWARD_NAMES)}")
    extracted, value, error = None, 0.0, None
    try:
        extracted, value = _CHECKS[name](completion, question)
        value = min(1.0, max(0.0, _as_reward(value)))
    except Exception as err:  # shown, as SafeReward would score it
        error = f"{type(err).__name__}: {err}"
    return {"extracted": extracted, "reward": value, "is_correct": value >= 1.0, "verifier": name,
            "answer_format": answer_format(question), "error": error}


class RewardValueError(ValueError):
    """A reward function returned NaN, inf or something that is not a number."""


def _as_reward(value: Any) -> float:
    if isinstance(value, (str, bytes)):
        raise RewardValueError(f"reward is not a number: {value!r}")
    try:
        reward = float(value)
    except (TypeError, ValueError) as err:
        raise RewardValueError(f"reward is not a number: {value!r}") from err
    if not math.isfinite(reward):
        raise RewardValueError(f"reward is not finite: {reward}")
    return reward


class SafeReward:
    """Calls a :data:`RewardFn` and never raises: failures score 0 and are counted.

    ``errors`` is the total failure count; :meth:`pop_error_count` gives the count since its last call.
    """

    def __init__(self, fn: RewardFn, correct_threshold: float = 1.0):
        if not 0.0 <= correct_threshold <= 1.0:
            raise ValueError(f"correct_threshold must be in [0, 1], got {correct_threshold}")
        self.fn, self.correct_threshold = fn, correct_threshold
        self.errors = 0
        self._unpopped = 0
        self._warned: set[str] = set()

    def __call__(self, completion: str, question: Question) -> tuple[float, bool]:
        """(reward clamped to [0, 1], is_correct = reward >= correct_threshold)."""
        try:
            reward = _as_reward(self.fn(completion, question))
        except Exception as err:  # a verifier bug must cost one reward, not the run
            self._record(err, question)
            return 0.0, False
        reward = min(1.0, max(0.0, reward))
        return reward, reward >= self.correct_threshold

    def _record(self, err: Exception, question: Question) -> None:
        self.errors += 1
        self._unpopped += 1
        kind = type(err).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            name = getattr(self.fn, "__name__", repr(self.fn))
            logger.warning("reward %s failed on question %r: %s: %s; scored 0 (further %s errors are only counted)",
                           name, getattr(question, "id", "?"), kind, err, kind)

    def pop_error_count(self) -> int:
        """Failures since the previous call (for the metric ``rollout/reward_errors``)."""
        count, self._unpopped = self._unpopped, 0
        return count

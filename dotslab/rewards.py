"""Verifiers: map (completion, question) to a reward in [0, 1], and a wrapper that never raises.

The paper uses a binary rule-based correctness reward on the final answer (arXiv 2506.05316 §2,
§5: math-verify style checking for MATH/DeepScaleR); pass rates and difficulty come from it (§3.1).

Deviations / decisions:
  1. ``exact_match`` (last number in the completion, compared numerically) is the default for the
     built-in arithmetic tasks: it is fast and needs no sympy, and it cannot be gamed the way
     math-verify can there: math-verify evaluates expressions, so echoing the question's expression
     ("12 - 5 + 3" for "What is 12 - 5 + 3?") scores 1. SmolLM2 learned exactly that within 8 GRPO steps
     when a benchmark run scored the arithmetic mix with math-verify (2026-11-25).
  2. reasoning-gym gives 0.01 partial credit to a wrong number; :func:`reasoning_gym_reward`
     binarizes it (score == 1 → 1, else 0), as METHOD §1 binarizes non-binary rewards.
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
import re
from fractions import Fraction
from typing import Any, Callable

from .records import Question

RewardFn = Callable[[str, Question], float]
REWARD_NAMES = ("auto", "exact", "math_verify", "reasoning_gym")

logger = logging.getLogger("dotslab.rewards")

# a '-' is a sign only when not preceded by a word char or closing bracket ("10-3" is a subtraction)
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+/\d+(?![\d.])|\d+(?:\.\d+)?|\.\d+)")
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces matched (unclosed: the rest of the text)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    begin = end = start + len("\\boxed{")
    depth = 1
    while end < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
    return text[begin:end - 1] if depth == 0 else text[begin:]


def extract_last_number(text: str) -> str | None:
    """Last number in ``text`` (inside the last ``\\boxed{}`` if that holds one), commas removed.

    Handles '-4', '3.5', '.5', '1,234', '3/4' and '\\frac{3}{4}'; returns None when there is none.
    """
    text = _FRAC.sub(r"\1/\2", text)
    for scope in (_last_boxed(text), text):
        if scope:
            found = _NUMBER.findall(scope)
            if found:
                return found[-1].replace(",", "")
    return None


def _to_fraction(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        return Fraction(text.strip().replace(",", ""))
    except (ValueError, ZeroDivisionError, OverflowError):  # ValueError also covers >4300-digit ints
        return None


def exact_match(completion: str, question: Question) -> float:
    """1 if the completion's last number equals the answer (relative tolerance 1e-6), else 0.

    A non-numeric answer falls back to exact string equality of the stripped completion.
    """
    gold = _to_fraction(question.answer)
    if gold is None:
        gold = _to_fraction(extract_last_number(question.answer))
    if gold is None:
        return float(completion.strip() == question.answer.strip())
    value = _to_fraction(extract_last_number(completion))
    if value is None:
        return 0.0
    return float(abs(value - gold) <= Fraction(1, 10 ** 6) * max(1, abs(gold)))


def math_verify_reward(completion: str, question: Question) -> float:
    """1 if ``math_verify.verify(parse(answer), parse(completion))``: handles 1/2 = 0.5, \\boxed{}, LaTeX."""
    from math_verify import parse, verify
    gold = parse(question.answer) or parse(f"${question.answer}$")
    predicted = parse(completion)
    if not gold or not predicted:
        return 0.0
    return float(verify(gold, predicted))


@functools.lru_cache(maxsize=None)
def _reasoning_gym_scorer(task: str) -> Callable[[str | None, dict], float]:
    import reasoning_gym
    return reasoning_gym.get_score_answer_fn(task)  # builds a dataset object, so cache it per task


def _reasoning_gym_answer(completion: str, gold: str) -> str | None:
    """The answer span: last <answer> tag, else the last number (numeric gold), else the last line."""
    tagged = _ANSWER_TAG.findall(completion)
    if tagged:
        return tagged[-1].strip()
    if _to_fraction(gold) is not None:
        return extract_last_number(completion)
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else None


def reasoning_gym_reward(completion: str, question: Question) -> float:
    """reasoning-gym's own ``score_answer`` on the extracted answer, binarized (1.0 only if exactly 1)."""
    if "rg_entry" not in question.metadata or "task" not in question.metadata:
        raise ValueError(f"question {question.id!r} has no 'rg_entry'/'task' metadata; "
                         f"build it with data.reasoning_gym_questions")
    entry = question.metadata["rg_entry"]
    score = _reasoning_gym_scorer(question.metadata["task"])(
        _reasoning_gym_answer(completion, str(entry["answer"])), entry)
    return 1.0 if score == 1.0 else 0.0


_REWARDS: dict[str, RewardFn] = {"exact": exact_match, "math_verify": math_verify_reward,
                                 "reasoning_gym": reasoning_gym_reward}


def parity_reward(completion: str, question: Question) -> float:
    """Synthetic smoke-test reward: 1.0 if ``len(completion)`` is even, else 0.0 (see decision 3)."""
    return float(len(completion) % 2 == 0)


def get_reward_fn(name: str, task: str) -> RewardFn:
    """The verifier called ``name``; 'auto' picks exact for the generated arithmetic tasks, reasoning-gym's
    scorer for 'reasoning_gym:' tasks and math-verify otherwise (files and hub datasets)."""
    if name == "auto":
        name = ("exact" if task in ("arithmetic", "arithmetic_mix")
                else "reasoning_gym" if task.startswith("reasoning_gym:") else "math_verify")
    if name not in _REWARDS:
        raise ValueError(f"unknown reward {name!r}; options: {', '.join(REWARD_NAMES)}")
    return _REWARDS[name]


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

"""Question sets: generation, validation, the held-out split and prompt rendering.

The paper trains on fixed question pools (MATH, DeepScaleR, ...; arXiv 2506.05316 §5) from which
DOTS draws the reference set and the selected batch (§3.1-3.2); this module builds such a pool
(files and Hugging Face datasets are read by :mod:`dotslab.readers`; :mod:`dotslab.tasks` maps a task
name to either).

Deviations / decisions:
  1. A built-in arithmetic generator stands in for MATH so a 135M CPU policy sees a spread of
     pass rates; its difficulty knobs (terms, digits) play the role of the paper's difficulty levels.
  2. Every malformed input raises :class:`DataError` naming the source, the row and the field.
  3. The eval set is held out of the pool by a seeded random split; files and HF datasets use all
     rows (``train_size`` applies to generated tasks only).
  4. Every source states what its answers look like (``metadata['answer_format']``, see
     :mod:`dotslab.answers`); the prompt's instruction and the ``auto`` reward follow from it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .answers import instruction, is_number
from .records import Question

RG_INSTALL_HINT = "pip install reasoning-gym==0.1.25"


class DataError(ValueError):
    """Bad input data; the message names the source, the row and the field."""


class QuestionSet(Sequence[Question]):
    """An ordered, validated set of questions with unique ids."""

    def __init__(self, questions: Iterable[Question], source: str, *,
                 locations: Sequence[str] | None = None, allow_empty: bool = False):
        self._questions = list(questions)
        self.source = source
        where = list(locations) if locations is not None else [f"row {i}" for i in range(len(self._questions))]
        if not self._questions and not allow_empty:
            raise DataError(f"{source}: question set is empty")
        self._index: dict[str, int] = {}
        for i, q in enumerate(self._questions):
            if not isinstance(q, Question):
                raise DataError(f"{source}: {where[i]}: expected a Question, got {type(q).__name__}")
            for name in ("id", "prompt", "answer"):
                value = getattr(q, name)
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{source}: {where[i]}: field '{name}' is empty or not a string")
            if q.id in self._index:
                raise DataError(f"{source}: duplicate id {q.id!r} at {where[self._index[q.id]]} and {where[i]}")
            self._index[q.id] = i

    def __len__(self) -> int:
        return len(self._questions)

    def __getitem__(self, i: int | slice) -> Question | list[Question]:
        return self._questions[i]

    def __repr__(self) -> str:
        return f"QuestionSet({len(self)} questions from {self.source!r})"

    @property
    def ids(self) -> list[str]:
        return [q.id for q in self._questions]

    @property
    def prompts(self) -> list[str]:
        return [q.prompt for q in self._questions]

    @property
    def strata(self) -> np.ndarray:
        """Each question's ``metadata['level']`` (0 when absent), for stratified reference sets; (N,)."""
        return np.array([q.metadata.get("level", 0) for q in self._questions])

    def index_of(self, question_id: str) -> int:
        try:
            return self._index[question_id]
        except KeyError:
            raise KeyError(f"{self.source}: no question with id {question_id!r}") from None

    def by_id(self, question_id: str) -> Question:
        return self._questions[self.index_of(question_id)]

    def subset(self, indices: Iterable[int], *, allow_empty: bool = False) -> QuestionSet:
        return QuestionSet([self._questions[i] for i in indices], self.source, allow_empty=allow_empty)

    def fingerprint(self) -> str:
        """A hash of every question's id, prompt and answer, in order: the set's identity for ``--resume``."""
        h = hashlib.sha1()
        for q in self._questions:
            h.update(json.dumps([q.id, q.prompt, q.answer]).encode())
        return h.hexdigest()[:16]

    def split(self, n_eval: int, seed: int) -> tuple[QuestionSet, QuestionSet]:
        """Return (train, eval): a seeded random ``n_eval`` held out, both kept in original order."""
        if not 0 <= n_eval < len(self):
            raise DataError(f"{self.source}: cannot hold out {n_eval} of {len(self)} questions "
                            f"and keep at least 1 for training")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        held_out = sorted(order[:n_eval])
        return self.subset(sorted(order[n_eval:])), self.subset(held_out, allow_empty=True)


# ---- generators -------------------------------------------------------------------------
def _evaluate(numbers_: Sequence[int], operators: Sequence[str]) -> int:
    """Left-to-right with '*' binding tighter than '+'/'-'."""
    total, sign, run = 0, 1, numbers_[0]
    for op, x in zip(operators, numbers_[1:]):
        if op == "*":
            run *= x
        else:
            total, sign, run = total + sign * run, (1 if op == "+" else -1), x
    return total + sign * run


def arithmetic_questions(n: int, seed: int, *, min_terms: int = 2, max_terms: int = 3, min_digits: int = 1,
                         max_digits: int = 2, operators: str = "+-") -> QuestionSet:
    """n distinct 'What is 7 + 12 - 3?' questions; terms and digits drawn uniformly per question.

    ``level = (terms - 1) + (digits - 1)``: 1 for two 1-digit terms, +1 per extra term or digit.
    """
    source = "arithmetic"
    if not (1 <= min_terms <= max_terms and 1 <= min_digits <= max_digits):
        raise DataError(f"{source}: need 1 <= min_terms <= max_terms and 1 <= min_digits <= max_digits")
    if not operators or set(operators) - set("+-*"):
        raise DataError(f"{source}: operators must be a non-empty subset of '+-*', got {operators!r}")
    rng, seen, questions = random.Random(seed), set(), []
    for _ in range(100 * n + 1000):
        if len(questions) >= n:
            break
        terms, digits = rng.randint(min_terms, max_terms), rng.randint(min_digits, max_digits)
        nums = [rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1) for _ in range(terms)]
        ops = [rng.choice(operators) for _ in range(terms - 1)]
        expression = " ".join([str(nums[0])] + [f"{op} {x}" for op, x in zip(ops, nums[1:])])
        prompt = f"What is {expression}?"
        if prompt in seen:
            continue
        seen.add(prompt)
        meta = {"task": "arithmetic", "answer_format": "number", "terms": terms, "digits": digits,
                "level": (terms - 1) + (digits - 1), "expression": expression}
        questions.append(Question(f"arith-{len(questions):06d}", prompt, str(_evaluate(nums, ops)), meta))
    if len(questions) < n:
        raise DataError(f"{source}: only {len(questions)} distinct questions for n={n}; widen terms/digits")
    return QuestionSet(questions, source)


@dataclasses.dataclass(frozen=True)
class Stratum:
    """One part of :data:`ARITHMETIC_MIX`: :func:`arithmetic_questions` knobs and a share of the questions."""
    name: str
    share: float
    min_terms: int
    max_terms: int
    min_digits: int
    max_digits: int
    operators: str


ARITHMETIC_MIX: tuple[Stratum, ...] = (
    Stratum("echo", 0.15, 1, 1, 1, 2, "+"),          # "What is 42?": near-certain pass
    Stratum("add-1digit", 0.25, 2, 2, 1, 1, "+"),
    Stratum("addsub-1digit", 0.20, 2, 2, 1, 1, "+-"),
    Stratum("addsub-2digit", 0.20, 2, 2, 2, 2, "+-"),
    Stratum("3terms", 0.20, 3, 3, 1, 2, "+-"),
)
"""The ``arithmetic_mix`` task, easy to hard (shares sum to 1), so that adaptive difficulty spreads over
0-1 for SmolLM2-135M as it does for the paper's policies on their pools. Measured difficulty (1 - pass
rate, exact match) of the initial SmolLM2, 64 questions x 4 samples, 24 new tokens, T = 0.6 (benchmark
part 2, 2026-11-26): echo 0.35, add-1digit 0.53, addsub-1digit 0.60, addsub-2digit 0.94, 3terms 0.96;
every benchmark result repeats this measurement. The plain ``arithmetic`` task (2-3 terms of 1-2 digits) is mostly the hard end."""


def _stratum_capacity(s: Stratum) -> int:
    """Number of distinct questions of a stratum (one digit count is drawn per question)."""
    total = 0
    for digits in range(s.min_digits, s.max_digits + 1):
        numbers_ = 10 if digits == 1 else 9 * 10 ** (digits - 1)
        for terms in range(s.min_terms, s.max_terms + 1):
            total += numbers_ ** terms * len(s.operators) ** (terms - 1)
    return min(total, 1_000_000)


def arithmetic_mix_questions(n: int, seed: int, mix: Sequence[Stratum] = ARITHMETIC_MIX) -> QuestionSet:
    """n distinct questions, ``round(share * n)`` per stratum (remainder to the last), shuffled by seed.

    A question's stratum is in ``metadata['stratum']`` and its index in ``metadata['level']``
    (0 = easiest), so the 'stratified' reference strategy and per-stratum pass rates work on it.
    """
    source = "arithmetic_mix"
    counts = [round(s.share * n) for s in mix]
    counts[-1] = n - sum(counts[:-1])
    seen: set[str] = set()
    out: list[Question] = []
    for level, (stratum, count) in enumerate(zip(mix, counts)):
        # generate extra: strata can overlap (e.g. two 1-digit additions), duplicates are skipped
        pool = arithmetic_questions(min(count * 3 + 20, _stratum_capacity(stratum)), seed + 1000 * level,
                                    min_terms=stratum.min_terms, max_terms=stratum.max_terms,
                                    min_digits=stratum.min_digits, max_digits=stratum.max_digits,
                                    operators=stratum.operators)
        taken = 0
        for q in pool:
            if taken == count:
                break
            if q.prompt in seen:
                continue
            seen.add(q.prompt)
            meta = {**q.metadata, "stratum": stratum.name, "level": level}
            out.append(Question(f"mix-{stratum.name}-{taken:04d}", q.prompt, q.answer, meta))
            taken += 1
        if taken < count:
            raise DataError(f"{source}: stratum {stratum.name!r} has only {taken} distinct questions for {count}")
    random.Random(seed).shuffle(out)
    return QuestionSet(out, source)


# ---- addition with a worked scratchpad (the miniature's task family, dotslab.mini) ---------------------------------------------------------------------------
def worked_answer(a: int, b: int) -> str:
    """The completion for ``a+b=``: per position from the right, sum digit and carry; then ``>`` and a + b.

    >>> worked_answer(445, 908)
    '31,50,31>1353'
    """
    da, db = str(a)[::-1], str(b)[::-1]
    carry, parts = 0, []
    for i in range(max(len(da), len(db))):
        s = int(da[i] if i < len(da) else 0) + int(db[i] if i < len(db) else 0) + carry
        carry = s // 10
        parts.append(f"{s % 10}{carry}")
    return ",".join(parts) + ">" + str(a + b)


def is_rl_question(prompt: str, share: int = 8) -> bool:
    """True for the 1-in-``share`` questions reserved for training pools and held-out sets (decision 1)."""
    return int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16) % share == 0


def _operands(rng: random.Random, digits: int) -> tuple[int, int]:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(lo, 10 ** digits - 1), rng.randint(lo, 10 ** digits - 1)


def addition_questions(n: int, seed: int, digits: Sequence[int] = (2, 3, 4, 5, 6)):
    """n distinct RL-part questions (decision 1), an equal share per digit count, shuffled by seed.

    ``metadata``: ``digits``, ``level`` (digits - min digits, for stratified reference sets),
    ``answer_format`` 'scratchpad' (no instruction; :func:`final_answer` is checked).
    """
    digits = sorted(set(digits))
    if not digits or digits[0] < 1:
        raise DataError(f"addition: digit counts must be >= 1, got {list(digits)}")
    rng, seen, out = random.Random(seed), set(), []
    counts = [n // len(digits) + (i < n % len(digits)) for i in range(len(digits))]
    for d, count in zip(digits, counts):
        space = (10 if d == 1 else 9 * 10 ** (d - 1)) ** 2 // 8
        if count > space // 2:
            raise DataError(f"addition: {count} questions of {d} digits asked for, but only about {space} exist "
                            f"in the RL part; ask for fewer or use more digits")
        taken = 0
        while taken < count:
            a, b = _operands(rng, d)
            prompt = f"{a}+{b}="
            if prompt in seen or not is_rl_question(prompt):
                continue
            seen.add(prompt)
            meta = {"task": "addition", "answer_format": "scratchpad", "digits": d, "level": d - digits[0]}
            out.append(Question(f"add{d}-{taken:05d}", prompt, str(a + b), meta))
            taken += 1
    rng.shuffle(out)
    return QuestionSet(out, "addition")


ADDITION_DIGITS = (2, 3, 4, 5, 6)
"""Digit counts of the ``addition`` task (the miniature's RL pool and held-out set)."""


def addition_digits(task: str) -> tuple[int, ...]:
    """Digit counts named by ``addition`` (:data:`ADDITION_DIGITS`) or ``addition:<lo>-<hi>`` / ``addition:<n>``."""
    _, _, spec = task.partition(":")
    if not spec:
        return ADDITION_DIGITS
    lo, _, hi = spec.partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise DataError(f"task {task!r}: write addition:<lo>-<hi> with digit counts, e.g. addition:2-6") from None
    if not 1 <= lo_i <= hi_i <= 12:
        raise DataError(f"task {task!r}: need 1 <= lo <= hi <= 12 digits")
    return tuple(range(lo_i, hi_i + 1))


def max_new_tokens_for(digits: int) -> int:
    """Completion tokens for ``digits``-digit operands: 3 per position, ``>``, up to digits + 1, EOS."""
    return 4 * digits + 3


def _distinct_rg_items(rg: Any, name: str, want: int, seed: int, seen: set[str], kwargs: Mapping[str, Any],
                       source: str) -> list[dict]:
    """The first ``want`` items of generator ``name`` whose question text is new."""
    size = want
    while want:
        try:
            dataset = rg.create_dataset(name, size=size, seed=seed, **kwargs)
        except (ValueError, TypeError) as err:
            raise DataError(f"{source}: cannot create generator {name!r}: {err}") from err
        items, texts = [], set()
        for entry in dataset:
            if entry["question"] not in seen and entry["question"] not in texts:
                texts.add(entry["question"])
                items.append(entry)
                if len(items) == want:
                    return items
        if size >= 4 * want + 64:
            raise DataError(f"{source}: {name!r} gives only {len(items)} distinct questions of {want}; "
                            f"widen its difficulty settings")
        size = 2 * size + 16  # item i depends on (seed, i) only, so a larger size keeps the prefix
    return []


def reasoning_gym_questions(names: str | Sequence[str], n: int, seed: int, **kwargs: Any) -> QuestionSet:
    """n questions from reasoning-gym generators, split evenly across ``names`` (extra go to the first).

    A generator's questions get ``answer_format`` 'number' when every answer drawn is a number
    (chain_sum, gsm_symbolic, ...), else 'text' (spell_backward, number_sorting, letter_jumble, ...:
    the question states the shape, and its own scorer reads the answer span).
    """
    try:
        import reasoning_gym
    except ImportError as err:
        raise DataError(f"reasoning_gym is not installed; {RG_INSTALL_HINT}") from err
    names = [names] if isinstance(names, str) else list(names)
    source = "reasoning_gym:" + ",".join(names)
    if not names:
        raise DataError(f"{source}: no generator names given")
    seen: set[str] = set()
    questions = []
    for j, name in enumerate(names):
        items = _distinct_rg_items(reasoning_gym, name, n // len(names) + (j < n % len(names)), seed, seen,
                                   kwargs, source)
        fmt = "number" if all(is_number(str(entry["answer"])) for entry in items) else "text"
        for i, entry in enumerate(items):
            seen.add(entry["question"])
            meta = {**entry.get("metadata", {}), "task": name, "answer_format": fmt, "rg_entry": entry}
            questions.append(Question(f"rg-{name}-{i}", entry["question"], str(entry["answer"]), meta))
    return QuestionSet(questions, source)


def user_message(question: Question) -> str:
    """The user's turn for ``question``: its prompt, then its instruction (:func:`dotslab.answers.instruction`).

    The one home of this text: :func:`render_prompt` and the TRL integration both use it. The two join
    with a space after a full sentence ("What is 7 + 12?"), else on a new line (after "... 12 - 5 =").
    """
    prompt, text = question.prompt, instruction(question)
    if not text or text[:1].isspace() or prompt[-1:].isspace():
        return prompt + text
    return prompt + (" " if prompt[-1:] in (".", "?", "!") else "\n") + text


def render_prompt(question: Question, tokenizer: Any) -> str:
    """The policy's input text: the chat template when the tokenizer has one, else a plain 'Answer:' cue."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_message(question)}],
                                             tokenize=False, add_generation_prompt=True)
    return user_message(question) + "\nAnswer:"


def _is_json(value: Any) -> bool:
    try:
        return bool(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return False


def save_jsonl(questions: Iterable[Question], path: str | Path) -> None:
    """Write id/prompt/answer/metadata, one question per line; non-JSON metadata values are dropped."""
    with open(path, "w", encoding="utf-8") as f:
        for q in questions:
            meta = {k: v for k, v in q.metadata.items() if _is_json(v)}
            f.write(json.dumps({"id": q.id, "prompt": q.prompt, "answer": q.answer, "metadata": meta},
                               ensure_ascii=False) + "\n")

"""The benchmark's task mix: arithmetic questions whose difficulty spans 0-1 for SmolLM2-135M.

Sun et al. (arXiv 2506.05316) train on pools that mix easy and hard questions for the policy, so
that adaptive difficulty spreads over [0, 1] and selection has something to choose. The built-in
``arithmetic`` task draws 2-3 terms of 1-2 digits only, where the dequantized SmolLM2-135M passes
about 0.1 of the time; this mix adds easier and harder strata so every difficulty is represented.

Decisions:
  1. Strata are :func:`dotslab.data.arithmetic_questions` knobs (terms, digits, operators); a
     question's stratum is kept in ``metadata['stratum']`` and ``metadata['level']`` (0 = easiest),
     so the 'stratified' reference strategy and per-stratum pass rates work on it.
  2. The file is regenerated deterministically from (mix, size, seed) into the results folder at
     the start of a benchmark run, so no data file is committed and none can drift.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dotslab.data import arithmetic_questions, save_jsonl
from dotslab.records import Question


@dataclass(frozen=True)
class Stratum:
    name: str
    share: float
    """Fraction of the file's questions drawn from this stratum."""
    min_terms: int
    max_terms: int
    min_digits: int
    max_digits: int
    operators: str


ARITHMETIC_MIX: tuple[Stratum, ...] = (
    Stratum("echo", 0.15, 1, 1, 1, 2, "+"),          # "What is 42?": near-certain pass
    Stratum("add-1digit", 0.25, 2, 2, 1, 1, "+"),    # FEASIBILITY §1: about 0.25-0.5
    Stratum("addsub-1digit", 0.20, 2, 2, 1, 1, "+-"),
    Stratum("addsub-2digit", 0.20, 2, 2, 2, 2, "+-"),
    Stratum("3terms", 0.20, 3, 3, 1, 2, "+-"),        # FEASIBILITY §1: about 0.06
)
"""Easy to hard; shares sum to 1. Measured difficulty (1 - pass rate) of the initial SmolLM2 policy,
40 questions x 4 samples, 24 new tokens, T = 0.6 (2026-11-25): echo 0.28, add-1digit 0.48,
addsub-1digit 0.55, addsub-2digit 0.86, 3terms 0.96; histogram over d = 0, ¼, ½, ¾, 1: 3, 10, 8, 8, 11.
Every benchmark result repeats this measurement (``predictor.phases[*].difficulty_by_stratum``)."""


def mix_questions(n: int, seed: int, mix: Sequence[Stratum] = ARITHMETIC_MIX) -> list[Question]:
    """n distinct questions, ``round(share * n)`` per stratum (remainder to the last), shuffled by seed."""
    import random

    counts = [round(s.share * n) for s in mix]
    counts[-1] = n - sum(counts[:-1])
    seen: set[str] = set()
    out: list[Question] = []
    for level, (stratum, count) in enumerate(zip(mix, counts)):
        # generate extra: strata can overlap (e.g. two 1-digit additions), duplicates are skipped
        pool = arithmetic_questions(min(count * 3 + 20, _capacity(stratum)), seed + 1000 * level,
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
            raise ValueError(f"stratum {stratum.name!r} has only {taken} distinct questions for {count}")
    random.Random(seed).shuffle(out)
    return out


def _capacity(s: Stratum) -> int:
    """Number of distinct questions of a stratum (one digit count is drawn per question)."""
    total = 0
    for digits in range(s.min_digits, s.max_digits + 1):
        numbers = 10 if digits == 1 else 9 * 10 ** (digits - 1)
        for terms in range(s.min_terms, s.max_terms + 1):
            total += numbers ** terms * len(s.operators) ** (terms - 1)
    return min(total, 1_000_000)


def write_mix(path: str | Path, n: int, seed: int, mix: Sequence[Stratum] = ARITHMETIC_MIX) -> Path:
    """Write the mix as JSONL (id, prompt, answer, metadata) for ``Config.task``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(mix_questions(n, seed, mix), path)
    return path

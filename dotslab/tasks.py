"""A task name -> the run's training pool and held-out evaluation set.

The paper trains on one fixed pool per run (MATH, DeepScaleR, ...; arXiv 2506.05316 §5); ``Config.task``
names where dotslab's pool comes from: a built-in generator (:mod:`dotslab.data`), reasoning-gym, a
Hugging Face dataset or a file (:mod:`dotslab.readers`).

Deviations: the eval set is held out of the same source by a seeded random split (data.py, decision 3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import (DataError, QuestionSet, addition_digits, addition_questions, arithmetic_mix_questions,
                   arithmetic_questions, reasoning_gym_questions)
from .readers import READERS, load_file, load_hf


def load_task(cfg: Any) -> tuple[QuestionSet, QuestionSet]:
    """(train pool, held-out eval set) for ``cfg.task``; the two are disjoint by id."""
    task, size = cfg.task, cfg.train_size + cfg.eval_size
    if task == "arithmetic":
        full = arithmetic_questions(size, cfg.seed)
    elif task == "arithmetic_mix":
        full = arithmetic_mix_questions(size, cfg.seed)
    elif task == "addition" or task.startswith("addition:"):
        full = addition_questions(size, cfg.seed, addition_digits(task))
    elif task.startswith("reasoning_gym:"):
        full = reasoning_gym_questions([s.strip() for s in task[len("reasoning_gym:"):].split(",") if s.strip()],
                                       size, cfg.seed)
    elif task.startswith("hf:"):
        name, _, split = task[len("hf:"):].partition(":")
        full = load_hf(name, split=split or "train", answer_format="math")  # MATH-style: \\boxed{}, math-verify
    elif Path(task).suffix.lower() in READERS:
        full = load_file(task)
    else:
        raise DataError(f"unknown task {task!r}: use 'arithmetic', 'arithmetic_mix', 'addition[:<lo>-<hi>]', 'reasoning_gym:<name>[,<name>]', "
                        f"'hf:<name>[:<split>]' or a {'/'.join(READERS)} path")
    return full.split(cfg.eval_size, cfg.seed)

"""The benchmark's task mix: :data:`dotslab.data.ARITHMETIC_MIX`, written to a file per run.

Sun et al. (arXiv 2506.05316) train on pools that mix easy and hard questions for the policy, so
that adaptive difficulty spreads over [0, 1] and selection has something to choose. The mix (five
arithmetic strata, easy to hard) lives in :mod:`dotslab.data` as the ``arithmetic_mix`` task.

Decision: the benchmark writes one file of ``task_mix_size`` questions (seed 0) at the start of a
run and every method and seed trains on it, each seed holding out its own eval split; the file is
regenerated deterministically, so none is committed and none can drift.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dotslab.data import ARITHMETIC_MIX, Stratum, arithmetic_mix_questions, save_jsonl


def write_mix(path: str | Path, n: int, seed: int, mix: Sequence[Stratum] = ARITHMETIC_MIX) -> Path:
    """Write the mix as JSONL (id, prompt, answer, metadata) for ``Config.task``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(arithmetic_mix_questions(n, seed, mix), path)
    return path

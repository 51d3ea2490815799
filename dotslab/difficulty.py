"""The difficulty-model interface the round planner drives, and the labels that feed it.

Sun et al., arXiv 2506.05316, §3.1: at every round start the predictor receives the measured
difficulty of K reference questions and predicts d̂ for the whole pool (docs/method.md §2). Two
models implement :class:`DifficultyModel`: the paper's attention predictor
(:class:`dotslab.predictor.OnlinePredictor`) and history mode (:class:`dotslab.history.HistoryPredictor`).

Deviations: none; the paper has no such interface. Both models also learn from each step's fresh
groups (``observe``), which the paper's predictor does only in dotslab's online training
(docs/method.md §2 [ours]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Labels:
    """Measured difficulties d = 1 - pass rate of some pool questions, all from selection round ``round``."""
    pool_index: np.ndarray     # (M,) int64, the questions' rows in the pool
    difficulty: np.ndarray     # (M,) in [0, 1]
    rollouts: np.ndarray       # (M,) int64, completions behind each label
    step: np.ndarray           # (M,) int64, training step each was measured at
    round: int

    @classmethod
    def measured(cls, pool_index: Sequence[int], difficulty: Any, rollouts: Any, step: Any, round: int = 0
                 ) -> "Labels":
        """Labels from sequences; ``rollouts`` and ``step`` may be one number for all. ``difficulty``
        keeps its dtype (the planner's reference labels are float32, as they always were)."""
        index = np.asarray(pool_index, dtype=np.int64).reshape(-1)
        d = np.asarray(difficulty).reshape(-1)
        if d.dtype.kind not in "f":
            d = d.astype(np.float64)
        return cls(index, d, np.broadcast_to(np.asarray(rollouts, dtype=np.int64), index.shape).copy(),
                   np.broadcast_to(np.asarray(step, dtype=np.int64), index.shape).copy(), int(round))


@dataclass(frozen=True)
class PoolPrediction:
    """d̂ for every pool question at a round start, with the model's own ``predictor/`` metrics."""
    difficulty: torch.Tensor   # (N,) in [0, 1]
    metrics: dict[str, float]


class DifficultyModel(Protocol):
    """What the planner needs from a difficulty predictor: two verbs and a checkpoint."""

    def predict_pool(self, references: Labels, step: int) -> PoolPrediction:
        """At a round start (``step``): learn from the round's reference labels, then predict d̂ for the pool."""

    def observe(self, labels: Labels) -> None:
        """After each step's update: learn from its fresh groups' labels (each step's own measurement)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

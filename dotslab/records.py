"""Typed records that cross module boundaries: Question, Rollout, Group.

A *question* is one training item; a *rollout* is one sampled completion with its behaviour
log-probs; a *group* is one question's G rollouts (paper §2, "group" of GRPO). Groups flow from
``rollout`` to ``grpo``, ``replay``, ``predictor`` and ``trainer``.

Deviations: none; the paper has no data types. ``pass_rate`` binarizes rewards at
``Rollout.is_correct`` (docs/method.md §1: non-binary rewards are binarized for difficulty).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch


@dataclass(frozen=True)
class Question:
    id: str
    prompt: str
    answer: str
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, eq=False)
class Rollout:
    """One completion: token ids (EOS included when emitted) and per-token behaviour log-probs μ."""
    question_id: str
    completion: str
    prompt_ids: torch.Tensor          # (P,) long, no padding
    completion_ids: torch.Tensor      # (C,) long, no padding; C may be 0
    behaviour_logprobs: torch.Tensor | None  # (C,) float32, log μ(token) with logits / T; None: not computed
    # (no loss term or replay needs it yet; the update fills it in for the rows it trains)
    reward: float
    is_correct: bool


@dataclass(frozen=True, eq=False)
class Group:
    """One question's G rollouts, generated at training step ``step`` (used for replay age)."""
    question: Question
    rollouts: tuple[Rollout, ...]
    step: int

    @property
    def rewards(self) -> torch.Tensor:  # (G,)
        return torch.tensor([r.reward for r in self.rollouts], dtype=torch.float32)

    @property
    def mean_reward(self) -> float:
        return float(self.rewards.mean())

    @property
    def reward_std(self) -> float:
        return float(self.rewards.std()) if len(self.rollouts) > 1 else 0.0

    @property
    def has_variance(self) -> bool:
        """True when the rewards differ, i.e. the group yields a non-zero advantage."""
        return self.reward_std > 0

    @property
    def pass_rate(self) -> float:
        """p_q = share of correct rollouts; adaptive difficulty is 1 - p_q."""
        return sum(r.is_correct for r in self.rollouts) / max(1, len(self.rollouts))

    @property
    def difficulty(self) -> float:
        return 1.0 - self.pass_rate

"""Rollout replay: a FIFO buffer of recent groups, replayed with importance correction.

Paper §3.3 (rollout replay) and Alg. 1; follows the authors' code's read/write order (METHOD §4).

Deviations / decisions:
  1. Works for any G >= 2 (the authors' buffer hard-codes G = 8).
  2. Zero-variance groups are dropped when read [C]; ``filter_on_write=True`` drops them when
     written instead [P]. Either way a replayed group always carries a learning signal.
  3. A shortfall (fewer eligible groups than asked) is returned as-is and reported, never waited on.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

import numpy as np

from .records import Group


class RolloutReplayBuffer:
    """FIFO of whole groups with their behaviour log-probs.

    Invariants: ``len(self) <= capacity``; groups leave only by FIFO eviction, never by being read.
    """

    def __init__(self, capacity: int, *, filter_on_write: bool = False):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.filter_on_write = capacity, filter_on_write
        self.groups: deque[Group] = deque()
        self.total_added = 0

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, groups: Sequence[Group], *, keep_before_add: int | None = None) -> None:
        """Call after each update with the step's fresh groups.

        First trims to the newest ``keep_before_add`` groups (the code keeps C - δB so the fresh
        groups fit), then appends, then evicts the oldest beyond capacity.
        """
        if keep_before_add is not None:
            while len(self.groups) > max(0, keep_before_add):
                self.groups.popleft()
        for g in groups:
            if self.filter_on_write and not g.has_variance:
                continue
            self.groups.append(g)
            self.total_added += 1
        while len(self.groups) > self.capacity:
            self.groups.popleft()

    def eligible(self) -> list[Group]:
        """The newest group per question, with non-zero reward variance (replayable)."""
        newest: dict[str, Group] = {}
        for g in self.groups:  # oldest -> newest, later ones overwrite
            newest[g.question.id] = g
        return [g for g in newest.values() if g.has_variance]

    def sample(self, n: int, rng: np.random.Generator, *, exclude_ids: set[str] = frozenset()) -> list[Group]:
        """Call once per step before the update: up to n eligible groups, uniformly, not removed.

        Questions in ``exclude_ids`` (this step's fresh questions) are skipped so a question is not
        trained on twice in one step.
        """
        pool = [g for g in self.eligible() if g.question.id not in exclude_ids]
        if n <= 0 or not pool:
            return []
        idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        return [pool[int(i)] for i in sorted(idx)]

    def stats(self, step: int) -> dict[str, float]:
        ages = [step - g.step for g in self.groups]
        return {"replay/buffer_size": float(len(self.groups)),
                "replay/eligible": float(len(self.eligible())),
                "replay/buffer_mean_age": float(np.mean(ages)) if ages else 0.0}

    def state_dict(self) -> dict:
        return {"groups": list(self.groups), "total_added": self.total_added}

    def load_state_dict(self, d: dict) -> None:
        self.groups, self.total_added = deque(d["groups"]), int(d["total_added"])

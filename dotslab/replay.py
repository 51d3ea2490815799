"""Rollout replay: a FIFO buffer of recent groups, replayed with importance correction.

Paper §3.3 (rollout replay) and Alg. 1; follows the authors' code's read/write order (docs/method.md §4):
each step first *reads* (samples up to (1-δ)B replayable groups, without removing them), then,
after the update, *writes*: it keeps the newest C - δB groups and appends the step's fresh ones.

Deviations / decisions:
  1. Works for any G >= 2 (the authors' buffer hard-codes G = 8).
  2. Zero-variance groups are dropped when read [code]; ``filter_on_write=True`` drops them when
     written instead [paper]. Either way a replayed group always carries a learning signal.
  3. A shortfall (fewer eligible groups than asked) is returned as-is and reported, never waited on.
  4. Retention keeps the newest C - δB groups *of the replayable ones* (newest group per question,
     non-zero reward variance), not of the raw buffer: a zero-variance group or an older copy of a
     question can never be read, so letting it hold a slot only evicts groups that could. The
     same rule holds in round 0 (B fresh groups per step), so with C = B the first step's groups
     survive into the first replaying step. Hence the size bound is C - δB + (fresh groups of the
     step), which is C once replay runs and C + (1-δ)B during round 0.
  5. ``sample`` skips the questions of the current step's fresh batch (``exclude_ids``), so a
     question is never trained on twice in one step.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

import numpy as np

from .records import Group


def replayable(groups: Iterable[Group]) -> list[Group]:
    """The newest group per question with non-zero reward variance, oldest first: what replay may read
    (docs/method.md §4). ``groups`` are oldest first."""
    newest: dict[str, Group] = {}
    for g in groups:  # oldest -> newest: a later group of the same question replaces it
        newest.pop(g.question.id, None)
        newest[g.question.id] = g
    return [g for g in newest.values() if g.has_variance]


class RolloutReplayBuffer:
    """FIFO of whole groups with their behaviour log-probs.

    Invariants: groups are stored oldest first; groups leave only by retention in ``add``, never by
    being read; after ``add(groups)`` the buffer holds at most ``retain`` older groups plus ``groups``.
    """

    def __init__(self, capacity: int, *, fresh_per_step: int = 0, filter_on_write: bool = False):
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        if fresh_per_step < 0:
            raise ValueError(f"fresh_per_step must be >= 0, got {fresh_per_step}")
        self.capacity, self.fresh_per_step, self.filter_on_write = capacity, fresh_per_step, filter_on_write
        self.groups: deque[Group] = deque()
        self.total_added = 0

    @property
    def retain(self) -> int:
        """C - δB: replayable groups kept from earlier steps when a step writes its fresh groups."""
        return max(0, self.capacity - self.fresh_per_step)

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, groups: Sequence[Group]) -> None:
        """Call once per step, after the update, with the step's fresh groups.

        Keeps the newest ``retain`` replayable groups (deviation 4), then appends ``groups``.
        """
        kept = self.eligible()[-self.retain:] if self.retain else []
        self.groups = deque(kept)
        for g in groups:
            if self.filter_on_write and not g.has_variance:
                continue
            self.groups.append(g)
            self.total_added += 1

    def eligible(self) -> list[Group]:
        """The :func:`replayable` groups of the buffer."""
        return replayable(self.groups)

    def sample(self, n: int, rng: np.random.Generator, *, exclude_ids: set[str] = frozenset()) -> list[Group]:
        """Call once per step before the update: up to n eligible groups, uniformly, not removed.

        Questions in ``exclude_ids`` (this step's fresh questions) are skipped.
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

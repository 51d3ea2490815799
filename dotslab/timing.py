"""Wall-clock bookkeeping for the step-time split (``time/*`` metrics).

Not from the paper; the paper reports the rollout share of step time (§5.3), which needs every
phase timed without double counting.

Decision: a phase timed inside another is charged to the inner phase only, so the reward function
timed inside a rollout is not also counted as generation, and the phases add up to the step.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator


class Stopwatch:
    """Seconds per named phase: ``with clock("time/update"): ...``; nested phases are exclusive."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []
        self._mark = time.perf_counter()

    def _charge(self) -> None:
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._mark = now

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._charge()
        self._stack.append(phase)
        try:
            yield
        finally:
            self._charge()
            self._stack.pop()

"""DOTS: difficulty-targeted online data selection, and the uniform baseline sampler.

Paper §3.2, Eq. (5): P(q) ∝ exp(-|d̂_q - α| / τ), questions drawn without replacement each round.

Deviations / decisions:
  1. Selection works on difficulty d̂ (the paper's word) with a general α; the authors' code uses
     pass rate and |p̂ - 0.5|, identical only at α = 0.5 (docs/method.md §1).
  2. Sampling without replacement uses Gumbel-top-k, which draws exactly from successive
     renormalised P(q) (Plackett-Luce) and is stable at τ = 1e-3.
  3. The baseline ``UniformSampler`` is epoch-shuffled: every question is seen once per epoch.
"""
from __future__ import annotations

import numpy as np


def selection_logits(difficulty: np.ndarray, target_difficulty: float, temperature: float) -> np.ndarray:
    """z_q = -|d̂_q - α| / τ - max_q'(-|d̂_q' - α| / τ); difficulty (N,) -> (N,)."""
    z = -np.abs(np.asarray(difficulty, dtype=np.float64) - target_difficulty) / temperature
    return z - z.max()


def selection_probs(difficulty: np.ndarray, target_difficulty: float, temperature: float) -> np.ndarray:
    """P(q) = exp(-|d̂_q - α|/τ) / Σ_q' exp(-|d̂_q' - α|/τ) (paper Eq. 5); (N,) -> (N,), sums to 1."""
    e = np.exp(selection_logits(difficulty, target_difficulty, temperature))
    return e / e.sum()


def dots_sample(difficulty: np.ndarray, n: int, target_difficulty: float, temperature: float,
                rng: np.random.Generator) -> np.ndarray:
    """Draw n distinct indices from P(q) without replacement (Gumbel-top-k); (N,) -> (n,)."""
    if n > len(difficulty):
        raise ValueError(f"cannot select {n} questions from a pool of {len(difficulty)}")
    keys = selection_logits(difficulty, target_difficulty, temperature) + rng.gumbel(size=len(difficulty))
    return np.argsort(-keys, kind="stable")[:n]


class UniformSampler:
    """Epoch-shuffled uniform batches for the baselines (``grpo``, ``rr``).

    ``draw(n)`` is called once per round; state is a permutation and a cursor, so a resumed run
    continues the same epoch.
    """

    def __init__(self, pool_size: int, seed: int):
        self.pool_size = pool_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(pool_size)
        self.cursor = 0

    def draw(self, n: int) -> np.ndarray:
        if n > self.pool_size:
            raise ValueError(f"cannot draw {n} distinct questions from a pool of {self.pool_size}")
        out: list[int] = []
        while len(out) < n:
            if self.cursor == self.pool_size:
                self.order, self.cursor = self.rng.permutation(self.pool_size), 0
            i = int(self.order[self.cursor])
            self.cursor += 1
            if i not in out:  # an epoch boundary inside a draw must not repeat a question
                out.append(i)
        return np.array(out)

    def state_dict(self) -> dict:
        return {"order": self.order.tolist(), "cursor": self.cursor, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, d: dict) -> None:
        self.order, self.cursor = np.array(d["order"]), int(d["cursor"])
        self.rng.bit_generator.state = d["rng"]


def selection_diagnostics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Metrics of one selected batch: predicted vs realised difficulty and zero-variance share.

    A realised difficulty of 0 or 1 means the group's rewards were all equal (no gradient).
    """
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    effective = (actual > 0) & (actual < 1)
    return {
        "select/mean_predicted_difficulty": float(predicted.mean()) if len(predicted) else float("nan"),
        "select/mean_actual_difficulty": float(actual.mean()) if len(actual) else float("nan"),
        "select/abs_error": float(np.abs(predicted - actual).mean()) if len(actual) else float("nan"),
        "select/effective_frac": float(effective.mean()) if len(actual) else float("nan"),
    }

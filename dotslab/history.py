"""History-aware difficulty prediction: every recent rollout is a label (a dotslab extension).

The paper (arXiv 2506.05316, §3.1) predicts a round's difficulties from that round's K reference
questions only. Every training step, though, measures the difficulty of its fresh questions under a
policy at most a few steps old, and the paper's predictor throws those labels away. This module
keeps them (docs/method.md §2 [ours], "history mode"):

  1. Keys: every question labelled within the last W steps (references of this and earlier rounds,
     fresh groups), newest label per question, each with weight γ^age (age in steps).
  2. Kernel prediction for question q, over all keys except q itself plus one prior pseudo-key:
         m_q = (Σ_i γ^{a_i} e^{s_qi/τ} y_i + e^{s_0/τ} · ½) / (Σ_i γ^{a_i} e^{s_qi/τ} + e^{s_0/τ})
     with s_qi = cos(e_q, e_i), τ = 0.1 and the pseudo-key's score s_0 = 0 (an unrelated question)
     carrying difficulty ½. The pseudo-key is what keeps a prediction from going flat when every key
     agrees (e.g. all references failed): questions unlike the failed ones drift toward ½, so the
     pool keeps a ranking by similarity.
  3. Own history: a question measured recently starts from its own label y_q (n_q rollouts, age a_q),
     shrunk toward its kernel prediction like a Beta prior of strength λ pseudo-rollouts:
         d̂_q = (w_q y_q + λ m_q) / (w_q + λ),   w_q = n_q γ^{a_q}
     so 0 of 4 correct is weak evidence: one step old, with λ = 4, γ = 0.9 and m_q = ½,
     d̂_q = (3.6 · 1 + 4 · ½) / 7.6 ≈ 0.74.

Deviations from the paper: no adapter and no calibration head in this mode (the keys are the
policy's own recent labels, so a similarity-weighted average of them is already on the right
scale), and labels outside the window are forgotten. ``predictor_mode='paper'`` keeps the paper's
predictor (:mod:`dotslab.predictor`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import PredictorConfig
from .difficulty import Labels, PoolPrediction

KERNEL_TEMPERATURE = 0.1
"""τ: kernel scores are cos(e_q, e_i) / 0.1 (the same scale as the paper mode's untrained fallback)."""
PRIOR_DIFFICULTY = 0.5
"""The pseudo-key's label: a question unlike anything measured is assumed maximally uncertain."""
PRIOR_SCORE = 0.0
"""The pseudo-key's cosine score: it weighs like an unrelated question."""


def kernel_difficulty(query_emb: torch.Tensor, key_emb: torch.Tensor, key_labels: torch.Tensor,
                      key_weights: torch.Tensor, exclude: torch.Tensor | None = None,
                      temperature: float = KERNEL_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
    """m_q = Σ_i a_qi y_i + a_q0 · ½, a_q = softmax([s_qi/τ + log w_i]_i, s_0/τ)  (module docstring, 2).

    query_emb (N, D), key_emb (M, D), key_labels (M,), key_weights (M,) > 0, exclude (N, M) bool.
    Returns (m (N,), a (N, M + 1)); the last column of ``a`` is the pseudo-key's weight.
    """
    q = F.normalize(query_emb.double(), dim=-1)                                # (N, D)
    k = F.normalize(key_emb.double(), dim=-1)                                  # (M, D)
    logits = q @ k.T / temperature + key_weights.double().log()                # (N, M)
    if exclude is not None:
        logits = logits.masked_fill(exclude.to(torch.bool), float("-inf"))
    prior = torch.full((q.shape[0], 1), PRIOR_SCORE / temperature, dtype=torch.float64)
    attn = torch.softmax(torch.cat([logits, prior], dim=1), dim=1)            # (N, M + 1)
    labels = torch.cat([key_labels.double(), torch.tensor([PRIOR_DIFFICULTY], dtype=torch.float64)])
    return attn @ labels, attn                                                 # (N,), (N, M + 1)


def shrink_to_own(kernel_pred: torch.Tensor, own_label: torch.Tensor, own_weight: torch.Tensor,
                  strength: float) -> torch.Tensor:
    """d̂_q = (w_q y_q + λ m_q) / (w_q + λ); rows with w_q = 0 keep m_q  (module docstring, 3). All (N,)."""
    w = own_weight.double()
    y = torch.where(w > 0, own_label.double(), torch.zeros_like(w))           # no NaN reaches the sum
    return (w * y + strength * kernel_pred.double()) / (w + strength)


@dataclass(frozen=True)
class HistoryPrediction:
    difficulty: torch.Tensor   # (N,) d̂ for every pool question
    attention: torch.Tensor    # (N, M + 1) kernel weights over the M keys and the pseudo-key (last column)
    key_index: torch.Tensor    # (M,) pool index of each key
    key_label: torch.Tensor    # (M,) its measured difficulty
    key_age: torch.Tensor      # (M,) steps since it was measured
    own_weight: torch.Tensor   # (N,) w_q of each question's own recent label (0: none)


class LabelHistory:
    """The newest measured difficulty of every pool question, with the step and group size it came from.

    ``observe`` after every rollout (references and fresh groups); ``recent`` at prediction time.
    """

    def __init__(self, pool_size: int) -> None:
        self.label = np.full(pool_size, np.nan)                               # (N,) newest difficulty
        self.step = np.full(pool_size, -1, dtype=np.int64)                    # (N,) step it was measured at
        self.count = np.zeros(pool_size, dtype=np.int64)                      # (N,) rollouts behind it

    def observe(self, pool_indices: Any, difficulties: Any, group_size: Any, step: Any) -> None:
        """``group_size`` and ``step``: one number for all, or one per question."""
        idx = np.asarray(pool_indices, dtype=np.int64).reshape(-1)
        d = np.asarray(difficulties, dtype=np.float64).reshape(-1)
        if idx.shape != d.shape:
            raise ValueError(f"{idx.size} questions but {d.size} difficulties")
        if d.size and not ((d >= 0) & (d <= 1)).all():
            raise ValueError("difficulties must lie in [0, 1] (d = 1 - pass rate)")
        self.label[idx], self.step[idx], self.count[idx] = d, step, group_size

    def recent(self, step: int, window: int) -> np.ndarray:
        """Pool indices labelled in the last ``window`` steps (measured at step > step - window)."""
        return np.nonzero((self.step >= 0) & (self.step > step - window))[0]

    def state_dict(self) -> dict[str, Any]:
        return {"label": self.label.copy(), "step": self.step.copy(), "count": self.count.copy()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.label, self.step, self.count = (np.array(d[k]) for k in ("label", "step", "count"))


class HistoryPredictor:
    """Predicts every pool question's difficulty from the labels of the last ``history_window`` steps.

    A :class:`~dotslab.difficulty.DifficultyModel`: ``observe`` stores labels, ``predict_pool`` adds the
    round's references and predicts; ``predict`` gives the whole :class:`HistoryPrediction`.
    """

    def __init__(self, cfg: PredictorConfig, embeddings: torch.Tensor) -> None:
        self.cfg, self.embeddings = cfg, torch.as_tensor(embeddings, dtype=torch.float32)
        self.history = LabelHistory(self.embeddings.shape[0])

    def observe(self, labels: Labels) -> None:
        """Each label replaces its question's older one (a reused reference group keeps its own step)."""
        self.history.observe(labels.pool_index, labels.difficulty, labels.rollouts, labels.step)

    def predict_pool(self, references: Labels, step: int) -> PoolPrediction:
        """A round start: the references become labels of age 0, then d̂ for the pool at ``step``."""
        self.observe(references)
        pred = self.predict(step)
        return PoolPrediction(pred.difficulty, {
            "predictor/keys": float(len(pred.key_index)),
            "predictor/mean_key_age": float(pred.key_age.mean()) if len(pred.key_age) else 0.0})

    @torch.no_grad()
    def predict(self, step: int) -> HistoryPrediction:
        """d̂ for the whole pool at ``step`` (labels measured at ``step`` have age 0)."""
        h, cfg = self.history, self.cfg
        keys = h.recent(step, cfg.history_window)                                      # (M,)
        age = torch.as_tensor(step - h.step[keys], dtype=torch.float64)               # (M,)
        decay = torch.as_tensor(cfg.history_decay, dtype=torch.float64) ** age        # (M,)
        labels = torch.as_tensor(h.label[keys])
        n = self.embeddings.shape[0]
        exclude = torch.zeros(n, len(keys), dtype=torch.bool)
        exclude[torch.as_tensor(keys), torch.arange(len(keys))] = True                # never a question's own key
        kernel, attn = kernel_difficulty(self.embeddings, self.embeddings[keys], labels, decay, exclude)
        own_weight = torch.zeros(n, dtype=torch.float64)
        own_label = torch.zeros(n, dtype=torch.float64)
        own_weight[torch.as_tensor(keys)] = torch.as_tensor(h.count[keys], dtype=torch.float64) * decay
        own_label[torch.as_tensor(keys)] = labels
        d_hat = shrink_to_own(kernel, own_label, own_weight, cfg.history_prior_strength)
        return HistoryPrediction(d_hat.float(), attn.float(), torch.as_tensor(keys), labels.float(), age, own_weight)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.history.load_state_dict(d["history"])

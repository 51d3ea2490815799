"""Attention-based adaptive difficulty prediction from a small labelled reference set.

Implements the adaptive difficulty predictor of Sun et al., arXiv 2506.05316 (attention over K
reference questions whose difficulty was measured by rollouts, plus calibration; training details
in the appendix), as specified in docs/method.md §2 (equation numbers not cited: unverified here): two
adapters f_Q, f_R, scores f_Q(e_q)·f_R(e_i)/√h, attention softmax(s/τ_att), prediction Σ a_i y_i,
a calibration head on [mean(y), std(y)] of the reference labels, an optional online affine
correction, and the quality metric (Pearson, Spearman, MAE on questions that were not references).

Deviations from the paper / authors' code:
  1. Labels are difficulty d = 1 - pass rate (the code uses pass rate). The model is symmetric
     under d <-> 1 - d up to its learned weights, so this changes nothing but the sign convention.
  2. The adapter + head train **online** (docs/method.md §2 [ours]) from (question, difficulty) labels of one
     policy snapshot per episode, with constant Adam lr (no warmup/decay: there is no fixed horizon).
     ``add_labels(..., round=source_id)`` + ``fit(steps)`` also reproduces the offline recipe
     (sources = other LLMs).
  3. Until the first fit step the predictor uses plain attention over raw unit embeddings with
     scores cos(e_q, e_i)/0.1 (τ_raw = 0.1 so the softmax is not near-uniform for cosines in
     [-1, 1]); ``Prediction.used_adapter`` says which path ran.
  4. Affine correction [code only] is fitted on **leave-one-out** reference predictions and clipped
     to [0, 1] [ours]; pool rows that are references are also predicted leave-one-out. A fit with a
     non-positive slope is skipped [ours]: on K noisy points it would invert the ranking of the whole
     pool (seen with raw attention and K = 16: held-out Pearson +0.50 became -0.50).
  5. A query whose every reference is masked attends uniformly to all K (the mean label).
  6. ``choose_reference_set`` adds 'diverse' and 'stratified' reference sets to the paper's random one.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import PredictorConfig
from .difficulty import Labels, PoolPrediction

RAW_ATTENTION_TEMPERATURE = 0.1
"""τ_raw for the untrained fallback: softmax over cos(e_q, e_i) / 0.1."""


# ---- pure functions ---------------------------------------------------------------------------
def attention_difficulty(query_keys: torch.Tensor, ref_keys: torch.Tensor, ref_labels: torch.Tensor,
                         temperature: float, exclude: Optional[torch.Tensor] = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """ŷ_q = Σ_i a_qi y_i with a_q = softmax_i(s_qi / τ_att), s_qi = q·k_i / √h  [paper, code].

    ``exclude`` (N, K) bool masks reference i for query q (score -inf). A row with every entry
    masked falls back to uniform attention over all K references (prediction = mean label).
    Returns (ŷ (N,), a (N, K)).
    """
    h = query_keys.shape[-1]
    logits = query_keys @ ref_keys.T / (math.sqrt(h) * temperature)          # (N, K)
    if exclude is not None:
        exclude = exclude.to(torch.bool)
        fully_masked = exclude.all(dim=1, keepdim=True)                       # (N, 1)
        logits = logits.masked_fill(exclude & ~fully_masked, float("-inf"))
        logits = torch.where(fully_masked, torch.zeros_like(logits), logits)
    attn = torch.softmax(logits, dim=-1)                                      # (N, K)
    return attn @ ref_labels.to(attn.dtype), attn                             # (N,), (N, K)


def calibrate(pred: torch.Tensor, ref_labels: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """ŷ_cal = σ(logit(clamp(ŷ, 1e-4, 1-1e-4)) / T + b)  [code form of the paper's Platt scaling].

    (o0, o1) = head([mean(y), std(y)]) over the K reference labels (unbiased std; 0 when K = 1),
    T = clamp(softplus(o0), 0.01, 10), b = tanh(o1). pred (N,) -> (N,).
    """
    y = ref_labels.to(pred.dtype)                                             # (K,)
    std = y.std() if y.numel() > 1 else torch.zeros((), dtype=y.dtype)
    o = head(torch.stack([y.mean(), std]).unsqueeze(0)).squeeze(0)            # (2,)
    temperature = F.softplus(o[0]).clamp(0.01, 10.0)
    bias = torch.tanh(o[1])
    return torch.sigmoid(torch.logit(pred.clamp(1e-4, 1 - 1e-4)) / temperature + bias)  # (N,)


def affine_correct(pred_all: torch.Tensor, pred_ref_loo: torch.Tensor, ref_labels: torch.Tensor
                   ) -> torch.Tensor:
    """clip(a·ŷ + c, 0, 1) with (a, c) = OLS fit of y_ref ≈ a·ŷ_ref + c  [code, docs/method.md §2].

    ŷ_ref (K,) are leave-one-out predictions of the references. Returns ``pred_all`` (N,) unchanged
    when the fit is degenerate (K < 3, var(ŷ_ref) < 1e-8) or its slope a <= 0 (it would invert
    the pool's ranking on the strength of K noisy points).
    """
    x = pred_ref_loo.double()                                                 # (K,)
    y = ref_labels.double()                                                   # (K,)
    if x.numel() < 3 or float(x.var(unbiased=False)) < 1e-8:
        return pred_all
    xc = x - x.mean()
    slope = (xc * (y - y.mean())).sum() / (xc * xc).sum()
    if float(slope) <= 0:
        return pred_all
    intercept = y.mean() - slope * x.mean()
    return (slope * pred_all.double() + intercept).clamp(0.0, 1.0).to(pred_all.dtype)  # (N,)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties share their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def prediction_quality(pred: Any, actual: Any) -> dict[str, float]:
    """Pearson r, Spearman ρ (Pearson of tie-averaged ranks) and MAE = mean|ŷ - y|.

    Constant or too-short inputs give nan correlations instead of raising.
    """
    p = np.asarray(torch.as_tensor(pred).detach().cpu(), dtype=np.float64).reshape(-1)
    a = np.asarray(torch.as_tensor(actual).detach().cpu(), dtype=np.float64).reshape(-1)
    if p.shape != a.shape:
        raise ValueError(f"pred and actual differ in length: {p.shape[0]} vs {a.shape[0]}")
    if p.size == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "mae": float("nan")}
    return {"pearson": _pearson(p, a), "spearman": _pearson(_ranks(p), _ranks(a)),
            "mae": float(np.abs(p - a).mean())}


# ---- model ------------------------------------------------------------------------------------
def _adapter(embed_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(embed_dim), nn.Linear(embed_dim, hidden), nn.GELU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.LayerNorm(hidden))


class DifficultyPredictor(nn.Module):
    """f_Q, f_R adapters + calibration head; ``forward`` = attention_difficulty then calibrate."""

    def __init__(self, embed_dim: int, hidden_size: int, attention_temperature: float = 1.0,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.attention_temperature = attention_temperature
        self.query_adapter = _adapter(embed_dim, hidden_size, dropout)       # f_Q
        self.reference_adapter = _adapter(embed_dim, hidden_size, dropout)   # f_R
        self.calibration_head = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 2))

    def forward(self, query_emb: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor,
                exclude: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D), (K, D), (K,) -> calibrated ŷ (N,), attention (N, K)."""
        pred, attn = attention_difficulty(self.query_adapter(query_emb), self.reference_adapter(ref_emb),
                                          ref_labels, self.attention_temperature, exclude)
        return calibrate(pred, ref_labels, self.calibration_head), attn

    @staticmethod
    def raw_attention(query_emb: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor,
                      exclude: Optional[torch.Tensor] = None,
                      temperature: float = RAW_ATTENTION_TEMPERATURE) -> tuple[torch.Tensor, torch.Tensor]:
        """Untrained fallback: a = softmax(cos(e_q, e_i) / τ_raw), ŷ = Σ a_i y_i, no calibration.

        ``temperature`` is τ_raw (default :data:`RAW_ATTENTION_TEMPERATURE`); the workbench's τ
        slider passes other values.
        """
        q = F.normalize(query_emb.float(), dim=-1)                            # (N, D)
        r = F.normalize(ref_emb.float(), dim=-1)                              # (K, D)
        # attention_difficulty divides by √D·τ; this τ makes the scores cos/τ_raw
        tau = temperature / math.sqrt(q.shape[-1])
        return attention_difficulty(q, r, ref_labels.float(), tau, exclude)


@dataclass(frozen=True)
class Prediction:
    difficulty: torch.Tensor  # (N,) predicted d̂ in [0, 1]
    attention: torch.Tensor   # (N, K) attention over the reference set
    used_adapter: bool        # False: raw-embedding attention fallback (adapter not trained yet)


class OnlinePredictor:
    """The predictor as the trainer holds it: ``add_labels``, ``fit`` episodes, ``predict`` d̂.

    Given the pool's embeddings it is a :class:`~dotslab.difficulty.DifficultyModel` (``predict_pool``,
    ``observe``), which is how the round planner uses it.
    """

    def __init__(self, cfg: PredictorConfig, embed_dim: int, seed: int,
                 pool_embeddings: Optional[torch.Tensor] = None) -> None:
        self.cfg, self.pool_embeddings = cfg, pool_embeddings
        with torch.random.fork_rng(devices=[]):  # init from our seed alone: identical on every process
            torch.manual_seed(seed)
            self.model = DifficultyPredictor(embed_dim, cfg.adapter_hidden_size, cfg.attention_temperature)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.adapter_learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.embed_dim = embed_dim
        self.steps_taken = 0
        self._emb = torch.zeros(0, embed_dim)                                 # (M, D)
        self._labels = torch.zeros(0)                                         # (M,)
        self._rounds = torch.zeros(0, dtype=torch.long)                       # (M,)
        self.model.eval()

    @property
    def is_trained(self) -> bool:
        return self.steps_taken > 0

    @property
    def num_labels(self) -> int:
        return int(self._labels.numel())

    def add_labels(self, embeddings: torch.Tensor, difficulties: torch.Tensor, round: int) -> None:
        """Store labels measured under one policy snapshot (or, offline, one source model).

        Call after each round's reference rollouts and each step's fresh rollouts. Invariant: only
        the most recent ``label_history`` labels are kept; labels of one ``round`` form one source.
        """
        emb = torch.as_tensor(embeddings, dtype=torch.float32).detach().cpu().reshape(-1, self.embed_dim)
        d = torch.as_tensor(difficulties, dtype=torch.float32).detach().cpu().reshape(-1)
        if emb.shape[0] != d.shape[0]:
            raise ValueError(f"{emb.shape[0]} embeddings but {d.shape[0]} difficulties")
        if d.numel() and not bool(((d >= 0) & (d <= 1)).all()):
            raise ValueError("difficulties must lie in [0, 1] (d = 1 - pass rate)")
        keep = self.cfg.label_history
        self._emb = torch.cat([self._emb, emb])[-keep:]
        self._labels = torch.cat([self._labels, d])[-keep:]
        self._rounds = torch.cat([self._rounds, torch.full((d.numel(),), int(round))])[-keep:]

    def _eligible_rounds(self) -> torch.Tensor:
        rounds, counts = torch.unique(self._rounds, return_counts=True)
        return rounds[counts >= max(2, self.cfg.min_labels_to_train)]

    def fit(self, steps: Optional[int] = None) -> dict[str, float]:
        """Run ``steps`` BCE episodes (default ``adapter_steps_per_round``); call once per round.

        Episode: pick a round with >= ``min_labels_to_train`` labels, split its questions at random
        into min(K, M//2) references and M - that queries, minimise BCE(ŷ_cal, d) on the queries.
        Does nothing until some round has enough labels. Dropout is on only inside this call.
        """
        steps = self.cfg.adapter_steps_per_round if steps is None else steps
        rounds = self._eligible_rounds()
        metrics = {"predictor/labels": float(self.num_labels)}
        if steps <= 0 or rounds.numel() == 0:
            return metrics
        gen = self.generator
        dropout_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        losses = []
        self.model.train()
        with torch.random.fork_rng(devices=[]):  # dropout draws from our seed: resumable, no side effects
            torch.manual_seed(dropout_seed)
            for _ in range(steps):
                r = rounds[int(torch.randint(0, rounds.numel(), (1,), generator=gen))]
                idx = torch.nonzero(self._rounds == r).squeeze(1)            # (M,)
                idx = idx[torch.randperm(idx.numel(), generator=gen)]
                n_ref = min(self.cfg.reference_set_size, idx.numel() // 2)
                ref, query = idx[:n_ref], idx[n_ref:]
                pred, _ = self.model(self._emb[query], self._emb[ref], self._labels[ref])  # (Q,)
                loss = F.binary_cross_entropy(pred, self._labels[query])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item())
        self.model.eval()
        self.steps_taken += steps
        return {"predictor/train_loss": float(np.mean(losses)), **metrics}

    @torch.no_grad()
    def predict(self, pool_emb: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor,
                ref_index_in_pool: Optional[torch.Tensor] = None) -> Prediction:
        """d̂ for every pool question (N,) from the K labelled references; call once per round.

        Pool rows listed in ``ref_index_in_pool`` (K,) are predicted without their own key, so a
        reference never reads its own label back. With ``affine_correction`` the OLS fit uses
        leave-one-out reference predictions.
        """
        self.model.eval()
        pool = torch.as_tensor(pool_emb, dtype=torch.float32)                 # (N, D)
        refs = torch.as_tensor(ref_emb, dtype=torch.float32)                  # (K, D)
        labels = torch.as_tensor(ref_labels, dtype=torch.float32)             # (K,)
        n, k = pool.shape[0], refs.shape[0]
        exclude = None
        if ref_index_in_pool is not None:
            rows = torch.as_tensor(ref_index_in_pool, dtype=torch.long)
            if rows.numel() != k:
                raise ValueError(f"ref_index_in_pool has {rows.numel()} entries for {k} references")
            exclude = torch.zeros(n, k, dtype=torch.bool)
            exclude[rows, torch.arange(k)] = True
        forward = self.model if self.is_trained else DifficultyPredictor.raw_attention
        pred, attn = forward(pool, refs, labels, exclude)                     # (N,), (N, K)
        if self.cfg.affine_correction:
            loo, _ = forward(refs, refs, labels, torch.eye(k, dtype=torch.bool))  # (K,)
            pred = affine_correct(pred, loo, labels)
        return Prediction(pred.clamp(0.0, 1.0), attn, self.is_trained)

    # ---- the DifficultyModel interface, over the pool -------------------------------------------
    def _pool_rows(self, labels: Labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row indices (M,), their embeddings (M, D), their difficulties (M,) float32)."""
        if self.pool_embeddings is None:
            raise ValueError("predict_pool / observe need the pool's embeddings (pool_embeddings=)")
        rows = torch.as_tensor(labels.pool_index)
        return rows, self.pool_embeddings[rows], torch.as_tensor(labels.difficulty, dtype=torch.float32)

    def predict_pool(self, references: Labels, step: int) -> PoolPrediction:
        """A round start: add the references' labels, run the round's ``fit`` episodes, predict the pool."""
        rows, emb, labels = self._pool_rows(references)
        self.add_labels(emb, labels, references.round)
        metrics = self.fit()
        pred = self.predict(self.pool_embeddings, emb, labels, ref_index_in_pool=rows)
        return PoolPrediction(pred.difficulty, {**metrics, "predictor/used_adapter": float(pred.used_adapter)})

    def observe(self, labels: Labels) -> None:
        """A step's fresh labels join the label store (trained on at the next round's ``fit``)."""
        _, emb, d = self._pool_rows(labels)
        self.add_labels(emb, d, labels.round)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: weights, Adam state, label store, episode RNG."""
        return copy.deepcopy({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "embeddings": self._emb, "labels": self._labels, "rounds": self._rounds,
            "generator": self.generator.get_state(), "steps_taken": self.steps_taken})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._emb, self._labels, self._rounds = state["embeddings"], state["labels"], state["rounds"]
        self.generator.set_state(state["generator"])
        self.steps_taken = int(state["steps_taken"])
        self.model.eval()


# ---- reference-set choice -----------------------------------------------------------------------
def _random_refs(emb: np.ndarray, avail: np.ndarray, k: int, rng: np.random.Generator,
                 strata: Optional[np.ndarray]) -> np.ndarray:
    """Uniform without replacement [paper]."""
    return rng.choice(avail, size=k, replace=False)


def _diverse_refs(emb: np.ndarray, avail: np.ndarray, k: int, rng: np.random.Generator,
                  strata: Optional[np.ndarray]) -> np.ndarray:
    """Greedy farthest point on cosine distance 1 - cos, from a random start."""
    x = emb[avail] / np.maximum(np.linalg.norm(emb[avail], axis=1, keepdims=True), 1e-12)  # (A, D)
    picks = [int(rng.integers(len(avail)))]
    nearest = 1.0 - x @ x[picks[0]]                                          # (A,)
    for _ in range(k - 1):
        nearest[picks] = -np.inf
        picks.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, 1.0 - x @ x[picks[-1]])
    return avail[np.asarray(picks, dtype=np.int64)]


def _stratified_refs(emb: np.ndarray, avail: np.ndarray, k: int, rng: np.random.Generator,
                     strata: Optional[np.ndarray]) -> np.ndarray:
    """Proportional allocation over strata (largest remainder), uniform within each stratum.

    Without ``strata``: quartile bins (at most k bins) of the projection on the first principal
    direction of the available embeddings, a cheap stand-in for clustering.
    """
    if strata is None:
        x = emb[avail] - emb[avail].mean(axis=0)                              # (A, D)
        direction = np.linalg.svd(x, full_matrices=False)[2][0]               # (D,)
        proj = x @ direction                                                  # (A,)
        edges = np.quantile(proj, np.linspace(0, 1, min(4, k) + 1)[1:-1])
        labels = np.searchsorted(edges, proj, side="right")
    else:
        labels = np.asarray(strata)[avail]
    values, counts = np.unique(labels, return_counts=True)
    share = k * counts / counts.sum()
    quota = np.floor(share).astype(np.int64)
    for i in np.argsort(-(share - quota), kind="stable")[: k - quota.sum()]:
        quota[i] += 1
    picks = [rng.choice(avail[labels == v], size=q, replace=False) for v, q in zip(values, quota) if q]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


REFERENCE_SET_CHOOSERS = {"random": _random_refs, "diverse": _diverse_refs, "stratified": _stratified_refs}


def choose_reference_set(strategy: str, embeddings: Any, k: int, rng: np.random.Generator, *,
                         strata: Optional[np.ndarray] = None,
                         exclude: Optional[Iterable[int]] = None) -> np.ndarray:
    """k distinct pool indices for this round's reference set, drawn by ``strategy``."""
    if strategy not in REFERENCE_SET_CHOOSERS:
        raise ValueError(f"reference strategy must be one of {sorted(REFERENCE_SET_CHOOSERS)}, got {strategy!r}")
    emb = np.asarray(torch.as_tensor(embeddings).detach().cpu(), dtype=np.float64)  # (N, D)
    n = emb.shape[0]
    if strata is not None and len(strata) != n:
        raise ValueError(f"strata has {len(strata)} entries for a pool of {n}")
    avail = np.arange(n, dtype=np.int64)
    if exclude is not None:
        avail = np.setdiff1d(avail, np.fromiter((int(i) for i in exclude), dtype=np.int64))
    if k < 0 or k > len(avail):
        raise ValueError(f"cannot choose a reference set of k={k} from a pool of {n} questions "
                         f"({len(avail)} available after exclusions)")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(REFERENCE_SET_CHOOSERS[strategy](emb, avail, k, rng, strata), dtype=np.int64)

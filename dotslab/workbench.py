"""The notebooks' workbench: a policy, a question pool, held-out probes and their embeddings, and a
labeler that rolls questions out on demand to measure their difficulty (notebooks 00-03).

Not from the paper; it measures §3.1's adaptive difficulty d = 1 - pass rate of G completions and
predicts it from a reference set with the trainer's own :class:`dotslab.predictor.OnlinePredictor`.

Decisions:
  1. Measured difficulties are cached per question id: re-drawing a reference set only rolls out
     questions never seen before (the policy does not change inside these notebooks). The labeler
     also times its rollouts, so later cells can say how long a rollout of n questions takes.
  2. Rollouts show progress as text (:class:`dotslab.live.Progress`): in a cell as a line updated in
     place, or through ``on_progress(text)`` on a widget's status line (a line drawn from a widget
     callback would land in the log console).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import Config
from .data import QuestionSet
from .difficulty import Labels
from .history import HistoryPrediction, HistoryPredictor
from .live import Progress
from .predictor import OnlinePredictor, choose_reference_set
from .prepare import embed_pool, prepare_run
from .rewards import SafeReward, get_reward_fn
from .rollout import HFGenerateEngine, measure_correct
from .trainer import choose_threads

ProgressFn = Callable[[str], None]


class RolloutLabeler:
    """Measured difficulty d = 1 - pass rate of G completions per question, cached by question id."""

    def __init__(self, model: Any, tokenizer: Any, cfg: Config, *, chunk: int = 4, progress: bool = True):
        g = cfg.grpo
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.engine = HFGenerateEngine(model, tokenizer, max_new_tokens=g.max_new_tokens,
                                       temperature=g.temperature, top_p=g.top_p, autocast=g.bf16_autocast)
        self.reward = SafeReward(get_reward_fn(cfg.reward, cfg.task))
        self.chunk, self.progress = chunk, progress
        self.cache: dict[str, float] = {}
        self.generations = 0
        self.seconds = 0.0

    def __call__(self, questions: Sequence[Any], *, progress: bool | None = None,
                 on_progress: ProgressFn | None = None, chunk: int | None = None) -> np.ndarray:
        """Difficulties (len(questions),); rolls out only questions not measured before.

        Progress shows as a line below the cell, or goes to ``on_progress(text)`` (a widget's status
        line: a line drawn from a widget callback would land in the log console); ``progress=False``
        shows none. ``chunk`` questions are rolled out per call of the engine.
        """
        todo = list({q.id: q for q in questions if q.id not in self.cache}.values())
        g, chunk = self.cfg.grpo, chunk or self.chunk
        if todo:
            show = (self.progress if progress is None else progress) and on_progress is None
            bar = Progress(len(todo), f"rolling out {len(todo)} questions × {g.group_size}", unit=" questions",
                           on_update=on_progress, show=None if show else False, tick=1.0)
            try:
                for part in (todo[i:i + chunk] for i in range(0, len(todo), chunk)):
                    started = time.perf_counter()
                    correct = measure_correct(self.engine, self.tokenizer, part, g.group_size, self.reward)  # (n, G)
                    self.seconds += time.perf_counter() - started
                    self.cache.update((q.id, float(1 - row.mean())) for q, row in zip(part, correct))
                    self.generations += len(part) * g.group_size
                    bar.update(len(part))
            finally:
                bar.close()
        return np.array([self.cache[q.id] for q in questions], dtype=float)

    @property
    def seconds_per_generation(self) -> float:
        """Measured so far (NaN before any rollout)."""
        return self.seconds / self.generations if self.generations else float("nan")

    def estimate(self, questions: Sequence[Any]) -> tuple[int, float]:
        """(questions not measured yet, estimated seconds to roll them out at the pace measured so far)."""
        todo = {q.id for q in questions if q.id not in self.cache}
        return len(todo), len(todo) * self.cfg.grpo.group_size * self.seconds_per_generation


@dataclass
class ReferenceRound:
    """One reference set, its measured difficulties and what the predictor makes of them."""
    indices: np.ndarray            # (K,) pool indices
    difficulty: np.ndarray         # (K,) measured d of the references
    pool_prediction: np.ndarray    # (N,) d̂ of every pool question (references leave-one-out)
    probe_prediction: np.ndarray   # (P,) d̂ of the held-out probes
    probe_attention: np.ndarray    # (P, K) attention of each probe over the references
    used_adapter: bool


@dataclass
class Workbench:
    """A policy, a question pool, a held-out probe set (never references), embeddings and a labeler."""
    cfg: Config
    pool: QuestionSet
    probe: QuestionSet
    pool_emb: torch.Tensor         # (N, D)
    probe_emb: torch.Tensor        # (P, D)
    labeler: RolloutLabeler
    predictor: OnlinePredictor

    def label_pool(self, indices: Sequence[int], **progress: Any) -> np.ndarray:
        """Measured d of pool questions; ``progress``, ``on_progress``, ``chunk`` as for the labeler."""
        return self.labeler(self.pool.subset([int(i) for i in indices]), **progress)

    def reference_set(self, k: int | None = None, strategy: str | None = None, seed: int | None = None) -> np.ndarray:
        p = self.cfg.predictor
        strategy = strategy or p.reference_strategy
        return choose_reference_set(strategy, self.pool_emb.numpy(), k or p.reference_set_size,
                                    np.random.default_rng(self.cfg.seed if seed is None else seed),
                                    strata=self.pool.strata if strategy == "stratified" else None)

    def predict(self, ref_idx: Sequence[int]) -> ReferenceRound:
        """Roll out the references (cached), then predict the pool and the probes from them."""
        ref_idx = np.asarray(ref_idx, dtype=np.int64)
        d = self.label_pool(ref_idx)
        labels = torch.tensor(d, dtype=torch.float32)
        pool = self.predictor.predict(self.pool_emb, self.pool_emb[ref_idx], labels,
                                      ref_index_in_pool=torch.as_tensor(ref_idx))
        probe = self.predictor.predict(self.probe_emb, self.pool_emb[ref_idx], labels)
        return ReferenceRound(ref_idx, d, pool.difficulty.numpy(), probe.difficulty.numpy(),
                              probe.attention.numpy(), probe.used_adapter)

    def history_predict(self, rounds: Sequence[tuple[Sequence[int], int]]) -> HistoryPrediction:
        """History mode (``dotslab.history``) over labels measured at different times.

        ``rounds``: (pool indices, age in steps) pairs, e.g. this round's references at age 0 and an
        earlier round's at age 2; each is rolled out (cached) and observed at ``now - age``.
        """
        hist = HistoryPredictor(dataclasses.replace(self.cfg.predictor, predictor_mode="history"), self.pool_emb)
        now = max(age for _, age in rounds)
        for indices, age in rounds:
            indices = [int(i) for i in indices]
            hist.observe(Labels.measured(indices, self.label_pool(indices), self.cfg.grpo.group_size, now - age))
        return hist.predict(now)


def open_workbench(cfg: Config, *, progress: bool = True) -> Workbench:
    """Load ``cfg``'s task (pool = train split, probes = held-out eval split), policy and embedder."""
    choose_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if progress:
        print(f"loading the policy ({cfg.policy}), the task ({cfg.task}) and the pool's embeddings "
              f"({cfg.predictor.embedder})…", flush=True)
    prepared = prepare_run(cfg, embed=True)
    pool, probe, model, tokenizer = prepared.train_set, prepared.eval_set, prepared.model, prepared.tokenizer
    pool_emb, probe_emb = prepared.embeddings, embed_pool(cfg, probe, model, tokenizer)
    predictor = OnlinePredictor(cfg.predictor, embed_dim=pool_emb.shape[1], seed=cfg.seed)
    return Workbench(cfg, pool, probe, pool_emb, probe_emb, RolloutLabeler(model, tokenizer, cfg, progress=progress),
                     predictor)

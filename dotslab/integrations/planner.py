"""Step plans for DOTS + rollout replay under a distributed trainer: which questions each step rolls out.

Sun et al., arXiv 2506.05316, Alg. 1 and §3 (selection §3.2, replay §3.3), in the round structure of
METHOD §6. Framework-free: the TRL glue (``dotslab.integrations.trl``) calls the verbs once per
generation, in the same order on every process, with the same (gathered) data, so every process
holds the same planner state and draws the same plan; the glue checks that they agree. Randomness
comes only from ``numpy.random.default_rng([seed, step])`` (as in dotslab's trainer), the
UniformSampler's own seeded stream and the predictor's own generator — never a global RNG.

Deviations from dotslab's own trainer (``dotslab.trainer.train``), all because a distributed batch
has a fixed shape (B groups, split evenly over processes):
  1. Under replay a step asks the buffer for B - δB groups only if it holds that many eligible ones;
     otherwise the step runs fully fresh on B questions ([P]: "only replays once the buffer holds
     (1-δ)B groups"), instead of replaying what there is. ``replay/shortfall`` counts the gap.
  2. So each round also draws µ(1-δ)B *fallback* questions after its µδB fresh ones, from the same
     d̂ (DOTS: the next-nearest to α; uniform methods: uniformly from the rest). The fresh draw uses
     the same call and RNG stream as dotslab's trainer, so it is unchanged by the fallbacks.
  3. d̂ passes through ``broadcast`` (rank 0's copy wins) before selection, so floating-point noise
     in the predictor on different hardware cannot split the processes' plans.
  4. ``reuse_reference_rollouts`` is not supported here (raises).
  5. The predictor is initialised from ``torch.manual_seed(cfg.seed)`` inside a forked RNG, so its
     weights do not depend on what the host trainer drew before (dotslab's trainer seeds globally).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..config import Config, ConfigError
from ..data import QuestionSet
from ..metrics import pass_rate_histogram
from ..predictor import OnlinePredictor, choose_reference_set, prediction_quality
from ..records import Group
from ..replay import RolloutReplayBuffer
from ..selector import UniformSampler, dots_sample, selection_diagnostics


@dataclass(frozen=True)
class StepPlan:
    """One step's batch: ``fresh`` pool indices to roll out, then ``replay`` buffer keys (question id, step)."""
    step: int
    round: int
    fresh: tuple[int, ...]
    replay: tuple[tuple[str, int], ...]
    references: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "round": self.round, "fresh": list(self.fresh),
                "replay": [list(k) for k in self.replay], "references": list(self.references)}


@dataclass
class _RoundState:
    blocks: list = field(default_factory=list)          # [(fresh indices, fallback indices)] left this round
    prediction: Optional[list] = None                   # d̂ over the pool for this round
    references: list = field(default_factory=list)


class StepPlanner:
    """Holds the predictor, the replay buffer and the round state; one instance per process.

    Per step, in this order: ``begin_step()`` -> reference indices to roll out (round starts under
    DOTS, else empty); ``plan_step(reference_difficulty)`` -> :class:`StepPlan`;
    ``replay_groups(plan.replay)``; after the rollouts, ``record_fresh(groups)``. ``metrics`` then
    holds the step's record (dotslab metric names).
    """

    def __init__(self, cfg: Config, pool: QuestionSet, embeddings: Optional[torch.Tensor] = None, *,
                 broadcast: Callable[[Any], Any] = lambda obj: obj):
        if cfg.selection.reuse_reference_rollouts:
            raise ConfigError("reuse_reference_rollouts is not supported by the distributed planner")
        mu, B = cfg.selection.steps_per_round, cfg.grpo.questions_per_step
        if mu * B > len(pool):
            raise ConfigError(f"one round needs steps_per_round x questions_per_step = {mu * B} distinct "
                              f"questions but the pool has {len(pool)}")
        if cfg.uses_selection and embeddings is None:
            raise ValueError(f"method {cfg.method!r} needs question embeddings for the predictor")
        self.cfg, self.pool, self.broadcast = cfg, pool, broadcast
        self.embeddings = embeddings
        self.predictor = None
        if cfg.uses_selection:
            with torch.random.fork_rng(devices=[]):  # the adapter's init must not depend on the caller's RNG
                torch.manual_seed(cfg.seed)
                self.predictor = OnlinePredictor(cfg.predictor, embed_dim=embeddings.shape[1], seed=cfg.seed)
        self.buffer = RolloutReplayBuffer(cfg.replay.buffer_capacity, filter_on_write=cfg.replay.filter_on_write)
        self.uniform = UniformSampler(len(pool), cfg.seed)
        self.step, self.round, self.total_generations = 0, 0, 0
        self.state = _RoundState()
        self.metrics: dict[str, Any] = {}
        self._rng = np.random.default_rng([cfg.seed, 0])
        self._pending_refs: list[int] = []

    # ---- per-step verbs -------------------------------------------------------------------
    def begin_step(self) -> list[int]:
        """Start step ``self.step + 1``; returns the reference questions to roll out now (maybe none)."""
        self.step += 1
        self._rng = np.random.default_rng([self.cfg.seed, self.step])
        self.metrics = {"step": self.step}
        self._pending_refs = []
        if not self.state.blocks and self.cfg.uses_selection:
            p = self.cfg.predictor
            strata = (np.array([q.metadata.get("level", 0) for q in self.pool])
                      if p.reference_strategy == "stratified" else None)
            self._pending_refs = [int(i) for i in choose_reference_set(
                p.reference_strategy, self.embeddings.numpy(), p.reference_set_size, self._rng, strata=strata)]
        return list(self._pending_refs)

    def plan_step(self, reference_difficulty: Optional[Sequence[float]] = None) -> StepPlan:
        """The step's fresh questions and replayed groups; starts a round first when one is due."""
        refs = tuple(self._pending_refs)
        if not self.state.blocks:
            self._start_round(refs, reference_difficulty)
        fresh, fallback = self.state.blocks.pop(0)
        B = self.cfg.grpo.questions_per_step
        replay: list[Group] = []
        want = B - len(fresh)
        if want > 0:
            fresh_ids = {self.pool[i].id for i in fresh}
            available = sum(g.question.id not in fresh_ids for g in self.buffer.eligible())
            if available >= want:
                replay = self.buffer.sample(want, self._rng, exclude_ids=fresh_ids)
            else:
                fresh = fresh + fallback  # the whole step runs fresh (deviation 1)
            self.metrics.update({
                "replay/replayed": float(len(replay)), "replay/shortfall": float(max(0, want - available)),
                "replay/fallback_fresh": float(0 if replay else len(fallback)),
                "replay/fraction_replayed": len(replay) / B,
                "replay/mean_age": float(np.mean([self.step - g.step for g in replay])) if replay else 0.0})
        self.metrics["select/round"] = float(self.round - 1)
        return StepPlan(self.step, self.round - 1, tuple(fresh), tuple((g.question.id, g.step) for g in replay), refs)

    def replay_groups(self, keys: Sequence[tuple[str, int]]) -> list[Group]:
        """The buffered groups named by ``keys`` (every process holds the same buffer)."""
        index = {(g.question.id, g.step): g for g in self.buffer.groups}
        return [index[(qid, int(step))] for qid, step in keys]

    def record_fresh(self, groups: Sequence[Group]) -> None:
        """Call once per step with all processes' fresh groups, in plan order, after their rollouts."""
        cfg, G = self.cfg, self.cfg.grpo.group_size
        actual = np.array([g.difficulty for g in groups])
        zero_var = float(np.mean([not g.has_variance for g in groups])) if groups else 0.0
        self.total_generations += len(groups) * G
        m = self.metrics
        m["rollout/generations"] = m.get("rollout/generations", 0) + len(groups) * G
        m.update({"train/pass_rate": float(np.mean([g.pass_rate for g in groups])),
                  "train/mean_reward": float(np.mean([g.mean_reward for g in groups])),
                  "rollout/frac_zero_std": zero_var, "select/zero_variance_frac": zero_var,
                  "rollout/pass_rate_hist": pass_rate_histogram([g.pass_rate for g in groups], G),
                  "rollout/total_generations": self.total_generations})
        ids = [self.pool.index_of(g.question.id) for g in groups]
        if self.state.prediction is not None:
            predicted = np.clip(np.array(self.state.prediction)[ids], 0, 1)
            m.update(selection_diagnostics(predicted, actual))
            refs = set(self.state.references)
            probe = [k for k, i in enumerate(ids) if i not in refs]
            if len(probe) >= 2:
                quality = prediction_quality(torch.tensor(predicted[probe]), torch.tensor(actual[probe]))
                m.update({f"predictor/{k}": float(v) for k, v in quality.items()})
        if self.predictor is not None:
            self.predictor.observe(self.embeddings[ids], torch.tensor(actual, dtype=torch.float32), self.round - 1)
        if cfg.uses_replay:
            self.buffer.add(groups, keep_before_add=cfg.replay.buffer_capacity - len(groups))
            m.update(self.buffer.stats(self.step))

    # ---- rounds -------------------------------------------------------------------------------
    def _start_round(self, refs: Sequence[int], reference_difficulty: Optional[Sequence[float]]) -> None:
        cfg, rng = self.cfg, self._rng
        mu, B = cfg.selection.steps_per_round, cfg.grpo.questions_per_step
        fresh_target = B if self.round == 0 or not cfg.uses_replay else cfg.fresh_per_step
        n_fresh, n_fallback = mu * fresh_target, mu * (B - fresh_target)
        if cfg.uses_selection:
            if reference_difficulty is None or len(reference_difficulty) != len(refs):
                raise ValueError(f"a DOTS round needs the difficulty of its {len(refs)} reference questions")
            labels = torch.tensor([float(d) for d in reference_difficulty])
            self.predictor.observe(self.embeddings[list(refs)], labels, self.round)
            self.metrics.update(self.predictor.fit())
            pred = self.predictor.predict(self.embeddings, self.embeddings[list(refs)], labels,
                                          ref_index_in_pool=torch.as_tensor(list(refs)))
            d_hat = np.asarray(self.broadcast(pred.difficulty.numpy().tolist()), dtype=np.float64)
            alpha, tau = cfg.selection.target_difficulty, cfg.selection.selection_temperature
            chosen = dots_sample(d_hat, n_fresh, alpha, tau, rng)
            rest = d_hat.copy()
            rest[chosen] = np.inf  # never drawn twice in a round
            fallback = dots_sample(rest, n_fallback, alpha, tau, rng) if n_fallback else np.zeros(0, int)
            self.state.prediction, self.state.references = d_hat.tolist(), [int(i) for i in refs]
            self.total_generations += len(refs) * cfg.grpo.group_size
            self.metrics.update({"predictor/used_adapter": float(pred.used_adapter),
                                 "predictor/reference_pass_rate": float(1 - labels.mean()),
                                 "rollout/generations": len(refs) * cfg.grpo.group_size})
        else:
            chosen = self.uniform.draw(n_fresh)
            rest = np.setdiff1d(np.arange(len(self.pool)), chosen)
            fallback = rng.choice(rest, size=n_fallback, replace=False) if n_fallback else np.zeros(0, int)
        self.state.blocks = [([int(i) for i in a], [int(i) for i in b])
                             for a, b in zip(np.array_split(np.asarray(chosen), mu), np.array_split(fallback, mu))]
        self.round += 1

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "round": self.round, "total_generations": self.total_generations,
                "blocks": self.state.blocks, "prediction": self.state.prediction,
                "references": self.state.references, "buffer": self.buffer.state_dict(),
                "uniform": self.uniform.state_dict(),
                "predictor": self.predictor.state_dict() if self.predictor is not None else None}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.step, self.round, self.total_generations = int(d["step"]), int(d["round"]), int(d["total_generations"])
        self.state = _RoundState(list(d["blocks"]), d["prediction"], list(d["references"]))
        self.buffer.load_state_dict(d["buffer"])
        self.uniform.load_state_dict(d["uniform"])
        if self.predictor is not None and d["predictor"] is not None:
            self.predictor.load_state_dict(d["predictor"])

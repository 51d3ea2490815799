"""The round logic of DOTS + rollout replay: which questions each step rolls out and which it replays.

Sun et al., arXiv 2506.05316, Alg. 1 and §3 (prediction §3.1, selection §3.2, replay §3.3), in the
round structure of docs/method.md §6. One :class:`RoundPlanner` serves both trainers: dotslab's own loop
(:func:`dotslab.trainer.train`) and TRL's (:class:`dotslab.integrations.trl.DOTSGRPOTrainer`). It
does no generation and no optimisation; a trainer calls its verbs once per step, in this order:

    start = planner.begin_step()                     # the step; reference questions to roll out now (maybe none)
    plan, plan_metrics = planner.plan_step(start, reference_groups=...)   # fresh questions, replay picks
    ... roll out plan.fresh ...; fresh += planner.reused_groups(plan)
    replayed = planner.replay_groups(plan.replay)
    ... update on fresh + replayed ...
    fresh_metrics = planner.record_fresh(plan, fresh)  # labels to the predictor, groups to the buffer
    record = step_metrics(plan_metrics, fresh_metrics)

Each call returns its part of the step's selection / predictor / replay / rollout record (with
``time/prediction``, ``time/selection`` and ``time/replay`` of the planner's own work);
:func:`step_metrics` joins the parts. The difficulty model is any
:class:`~dotslab.difficulty.DifficultyModel` (``predictor_mode`` picks which).

Randomness comes only from ``numpy.random.default_rng([seed, step])`` (and ``[seed, step, 1]`` for
fallback questions), the uniform sampler's seeded stream and the predictor's own generator, never a
global RNG, so every process of a distributed run draws the same plan.

Deviations / decisions:
  1. The round's draw is shuffled before it is cut into ν batches (docs/method.md §3): the Gumbel-top-k draw
     comes out ordered by its keys, which would give step 1 the questions nearest α.
  2. Replay shortfall is a named option. ``replay_shortfall="partial"`` (dotslab's trainer, docs/method.md §4)
     replays what the buffer has and logs the gap. ``"fresh"`` (TRL, whose batches have a fixed
     shape) replays only when the buffer holds all (1-δ)B groups the step asks for, else the step
     runs fully fresh on fallback questions drawn with the round ([paper]: "only replays once the buffer
     holds (1-δ)B groups"). Fallbacks come from their own RNG stream, so both options give the same
     plans whenever the buffer is full enough.
  3. ``reuse_reference_rollouts`` [paper App. A.1]: up to half of a round's budget is filled with
     reference groups that have reward spread, nearest α first; they count as fresh groups of the
     step they land in, not extra ones. It needs the reference groups (``reference_groups=``).
  4. d̂ passes through ``broadcast`` (rank 0's copy wins in a distributed run) before selection, so
     floating-point noise on different hardware cannot split the processes' plans.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .config import Config, ConfigError
from .data import DataError, QuestionSet
from .difficulty import DifficultyModel, Labels
from .metrics import pass_rate_histogram
from .history import HistoryPredictor
from .predictor import OnlinePredictor, choose_reference_set, prediction_quality
from .records import Group
from .replay import RolloutReplayBuffer
from .selector import UniformSampler, dots_sample, selection_diagnostics

SHORTFALL_POLICIES = ("partial", "fresh")
DIFFICULTY_MODELS: dict[str, Callable[[Config, torch.Tensor], DifficultyModel]] = {
    "paper": lambda cfg, emb: OnlinePredictor(cfg.predictor, embed_dim=emb.shape[1], seed=cfg.seed,
                                              pool_embeddings=emb),
    "history": lambda cfg, emb: HistoryPredictor(cfg.predictor, emb),
}
"""``predictor_mode`` -> the difficulty model over the pool's embeddings."""
SUMMED_METRICS = ("rollout/generations", "time/prediction", "time/replay")
"""Keys that more than one planner call contributes to: a step's record holds their sum."""


def step_metrics(*parts: dict[str, Any]) -> dict[str, Any]:
    """One step's record from the parts its calls returned; :data:`SUMMED_METRICS` add up."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out[k] + v if k in SUMMED_METRICS and k in out else v
    return out


@dataclass(frozen=True)
class StepStart:
    """What ``begin_step`` hands the trainer for ``plan_step``: the step, the reference questions to roll
    out now (empty except at DOTS round starts) and the step's generator, which ``plan_step`` continues."""
    step: int
    references: tuple[int, ...]
    rng: np.random.Generator = field(repr=False, compare=False)


@dataclass(frozen=True)
class StepPlan:
    """One step: ``fresh`` pool indices to roll out, ``reused`` pool indices whose reference groups train
    as fresh ones, ``replay`` buffer keys (question id, step), and the ``references`` rolled out for it."""
    step: int
    round: int
    fresh: tuple[int, ...]
    replay: tuple[tuple[str, int], ...]
    references: tuple[int, ...] = ()
    reused: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "round": self.round, "fresh": list(self.fresh), "reused": list(self.reused),
                "replay": [list(k) for k in self.replay], "references": list(self.references)}


@dataclass
class _Batch:
    fresh: list[int]       # pool indices to roll out
    reused: list[int]      # pool indices whose reference groups are reused
    fallback: list[int]    # extra fresh questions if the buffer is short ("fresh" shortfall policy)


@dataclass
class _RoundState:
    batches: list = field(default_factory=list)          # [_Batch] left this round
    prediction: Optional[list] = None                    # d̂ over the pool for this round
    references: list = field(default_factory=list)
    reference_groups: dict = field(default_factory=dict)  # pool index -> Group, for reuse


def check_pool_size(cfg: Config, pool_size: int) -> None:
    """A round draws νB distinct questions and K references from the pool: refuse a pool too small for that."""
    steps_per_round, batch = cfg.selection.steps_per_round, cfg.grpo.questions_per_step
    if steps_per_round * batch > pool_size:
        raise DataError(f"the training pool has {pool_size} questions but one round needs steps_per_round x "
                        f"questions_per_step = {steps_per_round} x {batch} = {steps_per_round * batch} distinct questions")
    if cfg.uses_selection and cfg.predictor.reference_set_size > pool_size:
        raise DataError(f"reference_set_size K = {cfg.predictor.reference_set_size} is larger than the training "
                        f"pool ({pool_size} questions)")


class RoundPlanner:
    """Holds the predictor, the replay buffer, the uniform sampler and the round state of one run."""

    def __init__(self, cfg: Config, pool: QuestionSet, embeddings: Optional[torch.Tensor] = None, *,
                 replay_shortfall: str = "partial", broadcast: Callable[[Any], Any] = lambda obj: obj):
        if replay_shortfall not in SHORTFALL_POLICIES:
            raise ConfigError(f"replay_shortfall must be one of {SHORTFALL_POLICIES}, got {replay_shortfall!r}")
        check_pool_size(cfg, len(pool))
        if cfg.uses_selection and embeddings is None:
            raise ValueError(f"method {cfg.method!r} needs question embeddings for the predictor")
        self.cfg, self.pool, self.embeddings = cfg, pool, embeddings
        self.replay_shortfall, self.broadcast = replay_shortfall, broadcast
        self.predictor: DifficultyModel | None = (DIFFICULTY_MODELS[cfg.predictor.predictor_mode](cfg, embeddings)
                                                  if cfg.uses_selection else None)
        self.buffer = RolloutReplayBuffer(cfg.replay.buffer_capacity, fresh_per_step=cfg.fresh_per_step,
                                          filter_on_write=cfg.replay.filter_on_write)
        self.uniform = UniformSampler(len(pool), cfg.seed)
        self.step, self.round, self.total_generations = 0, 0, 0
        self.state = _RoundState()

    # ---- per-step verbs -------------------------------------------------------------------
    def begin_step(self) -> StepStart:
        """Start step ``self.step + 1``; at a DOTS round start it names the reference questions to roll out."""
        self.step += 1
        rng, refs = np.random.default_rng([self.cfg.seed, self.step]), ()
        if not self.state.batches and self.cfg.uses_selection:
            p = self.cfg.predictor
            k = p.reference_set_size if self.round == 0 or p.later_reference_set_size < 0 else p.later_reference_set_size
            strata = self.pool.strata if p.reference_strategy == "stratified" else None
            refs = tuple(int(i) for i in choose_reference_set(p.reference_strategy, self.embeddings, k, rng,
                                                              strata=strata))
        return StepStart(self.step, refs, rng)

    def plan_step(self, start: StepStart, reference_difficulty: Optional[Sequence[float]] = None, *,
                  reference_groups: Optional[Sequence[Group]] = None) -> tuple[StepPlan, dict[str, Any]]:
        """The step's plan and its metrics; at a round start it first predicts d̂ from the references'
        measured difficulty (``reference_groups``, in ``start.references``' order, or just their
        ``reference_difficulty``)."""
        if start.step != self.step:
            raise ValueError(f"plan_step got the start of step {start.step}, but the planner is at step {self.step}")
        metrics: dict[str, Any] = {"step": self.step}
        if not self.state.batches:
            if reference_groups is not None:
                if [self.pool.index_of(g.question.id) for g in reference_groups] != list(start.references):
                    raise ValueError("reference_groups must be the groups of begin_step()'s questions, in order")
                reference_difficulty = [g.difficulty for g in reference_groups]
            metrics.update(self._start_round(start, reference_difficulty, reference_groups))
        batch = self.state.batches.pop(0)
        t0 = time.perf_counter()
        fresh, replay, replay_metrics = self._replay_picks(batch, start.rng)
        metrics.update({**replay_metrics, "select/round": float(self.round - 1),
                        "time/replay": time.perf_counter() - t0})
        return StepPlan(self.step, self.round - 1, tuple(fresh), tuple((g.question.id, g.step) for g in replay),
                        start.references, tuple(batch.reused)), metrics

    def _replay_picks(self, batch: _Batch, rng: np.random.Generator) -> tuple[list[int], list[Group], dict[str, float]]:
        """The step's fresh questions and replayed groups under the shortfall policy (deviation 2)."""
        fresh, replay, metrics = list(batch.fresh), [], {}
        want = self.cfg.grpo.questions_per_step - len(batch.fresh) - len(batch.reused)
        if want <= 0:
            return fresh, replay, metrics
        fresh_ids = {self.pool[i].id for i in batch.fresh + batch.reused}
        available = sum(g.question.id not in fresh_ids for g in self.buffer.eligible())
        if self.replay_shortfall == "partial" or available >= want:
            replay = self.buffer.sample(want, rng, exclude_ids=fresh_ids)
        else:
            fresh = fresh + batch.fallback  # the whole step runs fresh (deviation 2)
        metrics.update({
            "replay/replayed": float(len(replay)), "replay/shortfall": float(want - len(replay)),
            "replay/fraction_replayed": len(replay) / (len(fresh) + len(batch.reused) + len(replay)),
            "replay/mean_age": float(np.mean([self.step - g.step for g in replay])) if replay else 0.0})
        if self.replay_shortfall == "fresh":
            metrics["replay/fallback_fresh"] = float(0 if replay else len(batch.fallback))
        return fresh, replay, metrics

    def refill(self, n: int, exclude_ids: set[str]) -> list[int]:
        """Method 'dapo': ``n`` more uniform questions for this step, none of ``exclude_ids`` (drawn from the
        epoch sampler, so the refills use up the pool as the step's own draws do)."""
        out: list[int] = []
        for _ in range(4):  # an epoch boundary can repeat a question of this step: draw again
            out += [int(i) for i in self.uniform.draw(n - len(out)) if self.pool[int(i)].id not in exclude_ids
                    and int(i) not in out]
            if len(out) == n:
                break
        return out

    def record_discarded(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Method 'dapo': groups generated this step and dropped by the filter count as generations;
        returns their metrics."""
        G = self.cfg.grpo.group_size
        self.total_generations += len(groups) * G
        return {"rollout/generations": len(groups) * G, "rollout/discarded_groups": float(len(groups))}

    def reused_groups(self, plan: StepPlan) -> list[Group]:
        """The reference groups that ``plan`` trains on as fresh groups (``reuse_reference_rollouts``)."""
        return [self.state.reference_groups[i] for i in plan.reused]

    def replay_groups(self, keys: Sequence[tuple[str, int]]) -> list[Group]:
        """The buffered groups named by ``keys`` (every process holds the same buffer)."""
        index = {(g.question.id, g.step): g for g in self.buffer.groups}
        return [index[(qid, int(step))] for qid, step in keys]

    def record_fresh(self, plan: StepPlan, groups: Sequence[Group]) -> dict[str, Any]:
        """Call once per step after the rollouts (and the update) with all of ``plan``'s fresh groups;
        returns the step's rollout, prediction-quality and buffer metrics.

        Scores the round's prediction on them before they become labels (references excluded,
        docs/method.md §2 "Quality metric"), then feeds them to the predictor and the replay buffer.
        """
        G = self.cfg.grpo.group_size
        reused = {self.pool[i].id for i in plan.reused}
        rolled = [g for g in groups if g.question.id not in reused]  # counted at the round start
        zero_var = float(np.mean([not g.has_variance for g in groups])) if groups else 0.0
        self.total_generations += len(rolled) * G
        m: dict[str, Any] = {
            "rollout/generations": len(rolled) * G,
            "train/pass_rate": float(np.mean([g.pass_rate for g in groups])) if groups else float("nan"),
            "train/mean_reward": float(np.mean([g.mean_reward for g in groups])) if groups else float("nan"),
            "rollout/frac_zero_std": zero_var, "select/zero_variance_frac": zero_var,
            "rollout/pass_rate_hist": pass_rate_histogram([g.pass_rate for g in groups], G),
            "rollout/total_generations": self.total_generations}
        labels = Labels.measured([self.pool.index_of(g.question.id) for g in groups], [g.difficulty for g in groups],
                                 [len(g.rollouts) for g in groups], [g.step for g in groups], round=plan.round)
        t0 = time.perf_counter()
        if self.state.prediction is not None:
            m.update(self._prediction_quality(labels))
        if self.predictor is not None:  # a reused reference group keeps the step it was measured at
            self.predictor.observe(labels)
        m["time/prediction"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.cfg.uses_replay:
            self.buffer.add(groups)
            m.update(self.buffer.stats(self.step))
        m["time/replay"] = time.perf_counter() - t0
        return m

    def _prediction_quality(self, labels: Labels) -> dict[str, Any]:
        """The round's d̂ against the fresh groups' measured difficulty (references left out of the quality)."""
        predicted = np.clip(np.array(self.state.prediction)[labels.pool_index], 0, 1)
        actual = labels.difficulty
        m = selection_diagnostics(predicted, actual)
        refs = set(self.state.references)
        probe = [k for k, i in enumerate(labels.pool_index) if i not in refs]
        if len(probe) >= 2:
            quality = prediction_quality(torch.tensor(predicted[probe]), torch.tensor(actual[probe]))
            m.update({f"predictor/{k}": float(v) for k, v in quality.items()})
            m["predictor/probe_pairs"] = [[round(float(predicted[k]), 5), float(actual[k])] for k in probe]
        return m

    # ---- rounds -------------------------------------------------------------------------------
    def _start_round(self, start: StepStart, reference_difficulty: Optional[Sequence[float]],
                     reference_groups: Optional[Sequence[Group]]) -> dict[str, Any]:
        """Draw the round's questions (DOTS or uniform) and cut them into its batches; returns the metrics."""
        cfg, metrics = self.cfg, {}
        steps_per_round, batch = cfg.selection.steps_per_round, cfg.grpo.questions_per_step
        fresh_target = batch if self.round == 0 or not cfg.uses_replay else cfg.fresh_per_step
        budget, n_fallback = steps_per_round * fresh_target, steps_per_round * (batch - fresh_target)
        reused: list[int] = []
        if cfg.uses_selection:
            reference_difficulty = [] if reference_difficulty is None else reference_difficulty
            if len(reference_difficulty) != len(start.references):
                raise ValueError(f"a DOTS round needs the difficulty of its {len(start.references)} reference questions")
            t0 = time.perf_counter()
            d_hat, metrics = self._predict(start, reference_difficulty)
            metrics["time/prediction"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if cfg.selection.reuse_reference_rollouts:
                reused = self._reusable_references(reference_groups, budget // 2)
            chosen, fallback = self._dots_draw(d_hat, reused, budget, n_fallback, start.rng)
            self.state.prediction, self.state.references = d_hat.tolist(), list(start.references)
            self.total_generations += len(start.references) * cfg.grpo.group_size
            metrics["rollout/generations"] = len(start.references) * cfg.grpo.group_size
        else:
            t0 = time.perf_counter()
            chosen = self.uniform.draw(budget)
            rest = np.setdiff1d(np.arange(len(self.pool)), chosen)
            fallback = (self._fallback_rng().choice(rest, size=n_fallback, replace=False)
                        if n_fallback and self.replay_shortfall == "fresh" else np.zeros(0, int))
        self.state.batches = self._cut_into_batches(chosen, reused, fallback, start.rng)
        metrics["time/selection"] = time.perf_counter() - t0
        self.round += 1
        return metrics

    def _reusable_references(self, reference_groups: Optional[Sequence[Group]], limit: int) -> list[int]:
        """Up to ``limit`` reference groups with reward spread, nearest α first (deviation 3); kept in the
        round state and returned as pool indices."""
        if reference_groups is None:
            raise ConfigError("reuse_reference_rollouts needs the reference groups, not only their "
                              "difficulty (this trainer does not support it)")
        alpha = self.cfg.selection.target_difficulty
        useful = sorted((g for g in reference_groups if g.has_variance), key=lambda g: abs(g.difficulty - alpha))[:limit]
        reused = [self.pool.index_of(g.question.id) for g in useful]
        self.state.reference_groups = dict(zip(reused, useful))
        return reused

    def _dots_draw(self, d_hat: np.ndarray, reused: list[int], budget: int, n_fallback: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The round's DOTS draw of ``budget - len(reused)`` questions and, under the "fresh" shortfall
        policy, its fallback questions; never a question twice in a round."""
        alpha, tau = self.cfg.selection.target_difficulty, self.cfg.selection.selection_temperature
        candidates = d_hat.copy()
        candidates[reused] = np.inf
        chosen = dots_sample(candidates, budget - len(reused), alpha, tau, rng)
        candidates[chosen] = np.inf
        fallback = (dots_sample(candidates, n_fallback, alpha, tau, self._fallback_rng())
                    if n_fallback and self.replay_shortfall == "fresh" else np.zeros(0, int))
        return chosen, fallback

    def _cut_into_batches(self, chosen: Any, reused: list[int], fallback: Any, rng: np.random.Generator) -> list[_Batch]:
        """Deviation 1: shuffle the round's draw, then cut it (and the fallbacks) into ν equal batches."""
        steps_per_round = self.cfg.selection.steps_per_round
        draw = [(int(i), False) for i in chosen] + [(i, True) for i in reused]
        draw = [draw[k] for k in rng.permutation(len(draw))]
        parts = np.array_split(np.arange(len(draw)), steps_per_round)
        extras = np.array_split(np.asarray(fallback, dtype=int), steps_per_round)
        return [_Batch([draw[k][0] for k in part if not draw[k][1]], [draw[k][0] for k in part if draw[k][1]],
                       [int(i) for i in extra]) for part, extra in zip(parts, extras)]

    def _fallback_rng(self) -> np.random.Generator:
        """Fallback questions' own stream, so drawing them leaves the plan's stream untouched."""
        return np.random.default_rng([self.cfg.seed, self.step, 1])

    def _predict(self, start: StepStart, reference_difficulty: Sequence[float]) -> tuple[np.ndarray, dict[str, Any]]:
        """The difficulty model learns the references' labels and predicts d̂ for the whole pool; (N,)."""
        labels = torch.tensor([float(d) for d in reference_difficulty])  # float32, as both models store them
        metrics = {"predictor/reference_pass_rate": float(1 - labels.mean())} if start.references else {}
        references = Labels.measured(start.references, labels.numpy(), self.cfg.grpo.group_size, start.step,
                                     round=self.round)
        pred = self.predictor.predict_pool(references, start.step)
        metrics.update(pred.metrics)
        d_hat = np.asarray(self.broadcast(pred.difficulty.numpy().tolist()), dtype=np.float64)
        metrics["predictor/flat"] = float(d_hat.max() - d_hat.min() < 1e-6)  # a collapse: the draw is then uniform
        return d_hat, metrics

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "round": self.round, "total_generations": self.total_generations,
                "round_state": self.state, "buffer": self.buffer.state_dict(), "uniform": self.uniform.state_dict(),
                "predictor": self.predictor.state_dict() if self.predictor is not None else None}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.step, self.round, self.total_generations = int(d["step"]), int(d["round"]), int(d["total_generations"])
        self.state = d["round_state"]
        self.buffer.load_state_dict(d["buffer"])
        self.uniform.load_state_dict(d["uniform"])
        if self.predictor is not None and d["predictor"] is not None:
            self.predictor.load_state_dict(d["predictor"])

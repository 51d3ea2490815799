"""The training loop: DOTS selection + rollout replay around GRPO, as in paper Alg. 1.

Sun et al., arXiv 2506.05316, Alg. 1 and §3; the round structure follows docs/method.md §6. ``train`` is
orchestration only: which questions a step rolls out and replays is decided by
:class:`~dotslab.planner.RoundPlanner` (shared with the TRL integration), and every formula lives
in ``grpo``, ``predictor``, ``selector`` and ``replay``.

Deviations / decisions:
  1. Every RNG is reseeded from (seed, step) at the top of each step, so a run resumed from a
     checkpoint reproduces an uninterrupted run's metrics exactly on CPU.
  2. ``time/elapsed`` excludes evaluation and checkpointing (they are not training cost) and
     includes reference rollouts (they are); time-to-target is read off it.
  3. Predictor quality is measured on the fresh batch before its rollouts label it, excluding
     questions that were references this round (docs/method.md §2 "Quality metric"; done by the planner).
"""
from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import Config
from .data import QuestionSet
from .learner import large_blocks_from_the_os, policy_update, release_freed_memory
from .metrics import JsonlLogger, OutOfRangeCounter, clean_record, read_jsonl, truncate_after_step
from .planner import RoundPlanner, step_metrics
from .prepare import prepare_run
from .records import Group
from .rewards import RewardFn, SafeReward, get_reward_fn
from .rollout import HFGenerateEngine, evaluate_pass_rate, rollout_groups
from .timing import Stopwatch

Hook = Callable[[dict[str, Any]], None]


@dataclass
class RunState:
    """The trainer's own counters (the planner keeps the round state); saved in every checkpoint."""
    step: int = 0
    elapsed: float = 0.0
    bad_steps: int = 0
    to_target: dict | None = None


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict[str, Any]]
    stopped_early: bool = False


def choose_threads(setting: int) -> int:
    """The torch thread count for ``Config.threads``: the setting, or for 0 whichever of 1 thread and
    all cores runs a short matmul of the policy's size faster right now (on a busy machine one thread
    can be several times faster than two; on a quiet one all cores win). Sets it and returns it."""
    cores = os.cpu_count() or 1
    if setting > 0 or cores == 1:
        torch.set_num_threads(setting or 1)
        return torch.get_num_threads()
    a, b = torch.randn(64, 576), torch.randn(576, 1536)  # one decode step's MLP matmul at B·G = 64 rows
    best = None
    for threads in (1, cores):
        torch.set_num_threads(threads)
        a @ b  # warm-up
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.05:
            a @ b
            n += 1
        per_op = (time.perf_counter() - t0) / n
        if best is None or per_op < best[0]:
            best = (per_op, threads)
    torch.set_num_threads(best[1])
    return best[1]


def seed_everything(seed: int, step: int) -> None:
    """Seed python, numpy and torch from (seed, step)."""
    s = (seed * 1_000_003 + step) % 2**31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def make_engine(cfg: Config, model, tokenizer, run_dir: Path):
    """The configured rollout engine; vLLM keeps its copy of the policy in the run folder."""
    gcfg = cfg.grpo
    if gcfg.rollout_engine == "vllm":
        from .vllm_engine import VLLMEngine
        return VLLMEngine.from_policy(model, tokenizer, max_new_tokens=gcfg.max_new_tokens,
                                      temperature=gcfg.temperature, top_p=gcfg.top_p, seed=cfg.seed,
                                      model_dir=str(run_dir / "vllm-policy"))
    return HFGenerateEngine(model, tokenizer, max_new_tokens=gcfg.max_new_tokens, temperature=gcfg.temperature,
                            top_p=gcfg.top_p, autocast=gcfg.bf16_autocast)


@dataclass
class TrainingRun:
    """Everything one training run holds: data, policy, engine, optimizer, planner, log and counters."""
    cfg: Config
    run_dir: Path
    train_set: QuestionSet
    eval_set: QuestionSet
    model: Any
    tokenizer: Any
    engine: Any
    optimizer: torch.optim.Optimizer
    planner: RoundPlanner
    reward: SafeReward
    clamped: OutOfRangeCounter
    logger: JsonlLogger
    records: list[dict[str, Any]]
    hooks: Sequence[Hook] = ()
    ref_model: Any = None
    state: RunState = field(default_factory=RunState)

    @classmethod
    def open(cls, cfg: Config, guard: ckpt.RunGuard, *, resume: bool, reward_fn: RewardFn | None,
             hooks: Sequence[Hook]) -> "TrainingRun":
        """Load data and policy, build the planner, lock the run folder (``guard``) and restore the newest
        usable checkpoint when resuming. Bad input fails before anything is written."""
        choose_threads(cfg.threads)
        seed_everything(cfg.seed, 0)
        prepared = prepare_run(cfg, to_device=True)
        train_set, eval_set, model, tokenizer = prepared.train_set, prepared.eval_set, prepared.model, prepared.tokenizer
        planner = RoundPlanner(cfg, train_set, prepared.embeddings, replay_shortfall="partial")
        run_dir = guard.open(cfg, resume=resume)
        gcfg = cfg.grpo
        # foreach=False: the multi-tensor step would hold a temporary copy of every parameter at once
        optimizer = torch.optim.AdamW(model.parameters(), lr=gcfg.learning_rate, weight_decay=gcfg.weight_decay,
                                      foreach=False)
        ref_model = copy.deepcopy(model).eval() if gcfg.kl_coef > 0 else None
        clamped = OutOfRangeCounter(reward_fn or get_reward_fn(cfg.reward, cfg.task))
        run = cls(cfg, run_dir, train_set, eval_set, model, tokenizer, make_engine(cfg, model, tokenizer, run_dir),
                  optimizer, planner, SafeReward(clamped), clamped, logger=None, records=[], hooks=hooks,
                  ref_model=ref_model)
        metrics_path = run_dir / "metrics.jsonl"
        identity = ckpt.data_identity(train_set, eval_set)
        if resume:
            ckpt.check_same_data(run_dir, identity, cfg.task)
        found = ckpt.load_for_resume(run_dir, cfg) if resume else None
        ckpt.write_data_identity(run_dir, identity)
        if found is not None:
            saved = found[1]
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            planner.load_state_dict(saved["planner"])
            run.state = RunState(**saved["state"])
            truncate_after_step(metrics_path, run.state.step)
            run.engine.sync_weights()
        else:
            metrics_path.unlink(missing_ok=True)
        run.logger, run.records = JsonlLogger(metrics_path), read_jsonl(metrics_path)
        if found is not None and not any(r.get("step") == run.state.step for r in run.records):
            run.emit(found[1]["record"], replay_hooks=False)  # killed after the checkpoint, before its record
        return run

    # ---- the step's phases ----------------------------------------------------------------
    def rollout(self, pool_indices: Sequence[int], step: int, clock: Stopwatch, *,
                behaviour_logprobs: bool = False) -> list[Group]:
        """G completions per question with rewards (reward time to its own phase); μ only when asked for,
        since the update computes it for the fresh rows it trains."""
        gcfg = self.cfg.grpo
        questions = self.train_set.subset(pool_indices, allow_empty=True)
        return rollout_groups(self.engine, self.model, self.tokenizer, questions, gcfg.group_size, self.reward,
                              step=step, temperature=gcfg.temperature, micro_batch_size=gcfg.micro_batch_size,
                              autocast=gcfg.bf16_autocast, stopwatch=clock, behaviour_logprobs=behaviour_logprobs,
                              checkpointing=gcfg.gradient_checkpointing)

    def refill(self, fresh: list[Group], step: int, clock: Stopwatch) -> tuple[list[Group], dict[str, Any]]:
        """Method 'dapo' (DAPO's dynamic sampling, docs/method.md §6): drop groups without reward spread and
        roll out more uniform questions until B groups have spread or ``max_refills`` rounds ran; every
        dropped group's generations count (``planner.record_discarded``). Returns (kept groups, metrics)."""
        B, planner = self.cfg.grpo.questions_per_step, self.planner
        kept, dropped, rounds = [g for g in fresh if g.has_variance], [g for g in fresh if not g.has_variance], 0
        while len(kept) < B and rounds < self.cfg.selection.max_refills:
            more = self.rollout(planner.refill(B - len(kept), {g.question.id for g in kept + dropped}), step, clock)
            kept += [g for g in more if g.has_variance]
            dropped += [g for g in more if not g.has_variance]
            rounds += 1
        return kept, {**planner.record_discarded(dropped), "rollout/refill_rounds": float(rounds),
                      "rollout/filter_shortfall": float(max(0, B - len(kept)))}

    def update(self, fresh: list[Group], replayed: list[Group], step: int):
        """The policy update, on a heap cleared of what sampling freed; then the gradients and the heap
        pages they held are freed, so sampling and evaluation do not run on top of the update's peak."""
        release_freed_memory()
        with large_blocks_from_the_os():
            result = policy_update(self.model, self.optimizer, fresh, replayed, self.cfg.grpo, step=step,
                                   rng=np.random.default_rng([self.cfg.seed, step, 2]), ref_model=self.ref_model)
        self.optimizer.zero_grad(set_to_none=True)
        release_freed_memory()
        self.engine.sync_weights()
        return result

    def evaluate(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        seed_everything(self.cfg.seed + 7919, step)  # eval sampling must not shift the training RNG stream
        cfg = self.cfg
        rate, se = evaluate_pass_rate(self.engine, self.tokenizer, list(self.eval_set), cfg.eval_samples, self.reward,
                                      greedy=cfg.eval_greedy, temperature=cfg.eval_temperature, top_p=cfg.eval_top_p)
        out = {"eval/pass_rate": rate, "eval/pass_rate_se": se, "time/eval": time.perf_counter() - t0,
               "eval/reward_errors": self.reward.pop_error_count(), "eval/reward_clamped": self.clamped.pop_count()}
        s = self.state
        if self.cfg.target_pass_rate > 0 and s.to_target is None and rate >= self.cfg.target_pass_rate:
            s.to_target = {"time/to_target": s.elapsed, "step": step,
                           "rollout/generations_to_target": self.planner.total_generations}
            out.update({k: v for k, v in s.to_target.items() if k != "step"})
        return out

    def save(self, step: int, record: dict[str, Any]) -> float:
        """Checkpoint with the step's record, so a kill between the two writes loses no metrics."""
        t0 = time.perf_counter()
        ckpt.save_checkpoint(self.run_dir, step, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "planner": self.planner.state_dict(), "state": vars(self.state).copy(), "record": clean_record(record)},
            cfg=self.cfg)
        return time.perf_counter() - t0

    def emit(self, record: dict[str, Any], *, replay_hooks: bool = True) -> None:
        record = clean_record(record)
        self.logger.log(record)
        self.records.append(record)
        for hook in self.hooks if replay_hooks else ():
            hook(record)

    def finish_step(self, step: int, clock: Stopwatch, planned: dict[str, Any], update, fresh: list[Group],
                    started: float) -> dict[str, Any]:
        """The step's record from the planner's ``planned`` metrics and the update; evaluation and
        checkpoint when due (excluded from ``time/elapsed``)."""
        cfg, s = self.cfg, self.state
        s.step, s.bad_steps = step, (s.bad_steps + 1 if update.skipped else 0)
        record = {**planned, **update.metrics(), **clock.seconds,
                  "train/completion_tokens": float(np.mean([len(r.completion_ids) for g in fresh for r in g.rollouts])),
                  "rollout/reward_errors": self.reward.pop_error_count(), "rollout/reward_clamped": self.clamped.pop_count()}
        record["time/step"] = time.perf_counter() - started
        s.elapsed += record["time/step"]
        record["time/elapsed"] = s.elapsed
        is_last = step == cfg.total_steps or s.bad_steps >= cfg.max_bad_steps
        if cfg.eval_every > 0 and self.eval_set and (step % cfg.eval_every == 0 or is_last):
            record.update(self.evaluate(step))
        if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or is_last):
            record["time/checkpoint"] = self.save(step, record)
        self.emit(record)
        return record


def train(cfg: Config, *, hooks: Sequence[Hook] = (), resume: bool = False, progress: bool | str = True,
          reward_fn: RewardFn | None = None) -> RunResult:
    """Run ``cfg.total_steps`` training steps; with ``resume`` continue the run folder's checkpoint.

    ``hooks`` receive every metrics record as it is logged (live plots); ``reward_fn`` replaces the
    configured reward (any ``(completion, question) -> float in [0, 1]``; errors count as 0).
    ``progress``: True (a notebook widget or terminal bar, whichever fits), "text" (a plain bar on
    stderr, which papermill relays to the terminal), or False.
    """
    with ckpt.RunGuard() as guard:  # the run folder's lock for the whole run; Ctrl-C stops cleanly
        return _train(cfg, guard, hooks=hooks, resume=resume, progress=progress, reward_fn=reward_fn)


def _train(cfg: Config, guard: ckpt.RunGuard, *, hooks: Sequence[Hook], resume: bool, progress: bool | str,
           reward_fn: RewardFn | None) -> RunResult:
    from tqdm.std import tqdm as text_tqdm
    from tqdm.auto import tqdm as auto_tqdm
    run = TrainingRun.open(cfg, guard, resume=resume, reward_fn=reward_fn, hooks=hooks)
    planner, state = run.planner, run.state
    if state.step == 0 and cfg.eval_every > 0 and run.eval_set:
        run.emit({"step": 0, **run.evaluate(0), "rollout/total_generations": 0, "time/elapsed": 0.0,
                  "run/threads": torch.get_num_threads()})
    bar = (text_tqdm if progress == "text" else auto_tqdm)(total=cfg.total_steps, initial=state.step,
                                                          desc=cfg.resolved_run_name, disable=not progress)
    while state.step < cfg.total_steps:
        step, started, clock = state.step + 1, time.perf_counter(), Stopwatch()
        seed_everything(cfg.seed, step)
        # --- 1. predict difficulty: at a round start (DOTS methods) roll out and label the reference set
        start = planner.begin_step()
        with clock("time/reference"):  # μ only if a reference group may train later in the round
            reference_groups = run.rollout(start.references, step, clock,
                                           behaviour_logprobs=cfg.selection.reuse_reference_rollouts)
        # --- 2. select questions: d̂ for the pool, the round's DOTS draw (or uniform batches), replay picks
        plan, planned = planner.plan_step(start, reference_groups=reference_groups)
        # --- 3. rollout: G completions per fresh question (their μ comes with the update's first forward)
        with clock("time/generation"):
            fresh, filtered = run.rollout(plan.fresh, step, clock) + planner.reused_groups(plan), {}
            if cfg.filters_groups:  # DAPO's baseline: only groups with reward spread train
                fresh, filtered = run.refill(fresh, step, clock)
        # --- 4. score & advantages: rewards came with the rollouts; advantages are recomputed in the update
        # --- 5. mix with replay: stored groups with their μ, corrected by c = π_old/μ in the loss
        replayed = planner.replay_groups(plan.replay)
        # --- 6. policy update; then the fresh groups label the predictor and enter the buffer
        with clock("time/update"):
            update = run.update(fresh, replayed, step)
        recorded = planner.record_fresh(plan, update.fresh)  # with the μ the update computed, for the buffer
        # --- 7. log / eval / checkpoint
        record = run.finish_step(step, clock, step_metrics(planned, filtered, recorded), update, fresh, started)
        bar.update(1)
        zero_var = record["rollout/frac_zero_std"]
        bar.set_postfix({"pass": f"{record['train/pass_rate']:.2f}",
                         **({"eval": f"{record['eval/pass_rate']:.2f}"} if "eval/pass_rate" in record else {}),
                         "zero_var": f"{zero_var:.2f}" + (" (no signal!)" if zero_var == 1.0 else "")})
        if state.bad_steps >= cfg.max_bad_steps:
            bar.write(f"stopping: {state.bad_steps} consecutive steps with non-finite loss or gradients")
            break
    bar.close()
    return RunResult(run.run_dir, run.records, stopped_early=state.bad_steps >= cfg.max_bad_steps)

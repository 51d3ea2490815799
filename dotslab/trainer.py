"""The training loop: DOTS selection + rollout replay around GRPO, as in paper Alg. 1.

Sun et al., arXiv 2506.05316, Alg. 1 and §3; the round structure follows METHOD §6. ``train`` is
orchestration only: every formula lives in ``grpo``, ``predictor``, ``selector`` and ``replay``.

Deviations / decisions:
  1. Every RNG is reseeded from (seed, step) at the top of each step, so a run resumed from a
     checkpoint reproduces an uninterrupted run's metrics exactly on CPU.
  2. ``time/elapsed`` excludes evaluation and checkpointing (they are not training cost) and
     includes reference rollouts (they are); time-to-target is read off it.
  3. Predictor quality is measured on the fresh batch before its rollouts label it, excluding
     questions that were references this round (METHOD §2 "Quality metric").
"""
from __future__ import annotations

import copy
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import Config
from .data import DataError, load_task
from .embed import make_embedder
from .learner import policy_update
from .metrics import JsonlLogger, OutOfRangeCounter, clean_record, pass_rate_histogram, read_jsonl, truncate_after_step
from .models import cache_root, check_prompt_lengths, load_policy
from .predictor import OnlinePredictor, choose_reference_set, prediction_quality
from .replay import RolloutReplayBuffer
from .rewards import RewardFn, SafeReward, get_reward_fn
from .rollout import HFGenerateEngine, evaluate_pass_rate, rollout_groups
from .selector import UniformSampler, dots_sample, selection_diagnostics

Hook = Callable[[dict[str, Any]], None]


@dataclass
class RunState:
    """Everything besides model/optimizer/buffer/predictor that a resume needs."""
    step: int = 0
    round: int = 0
    round_batches: list = field(default_factory=list)   # [(pool indices, pre-rolled groups)] left this round
    round_prediction: list | None = None                # d̂ over the pool for this round
    round_references: list = field(default_factory=list)
    total_generations: int = 0
    elapsed: float = 0.0
    bad_steps: int = 0
    to_target: dict | None = None


@dataclass
class RunResult:
    run_dir: Path
    records: list[dict[str, Any]]
    stopped_early: bool = False


def seed_everything(seed: int, step: int) -> np.random.Generator:
    """Seed python, numpy and torch from (seed, step); returns the step's numpy Generator."""
    s = (seed * 1_000_003 + step) % 2**31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return np.random.default_rng([seed, step])


def _check_sizes(cfg: Config, pool_size: int) -> None:
    mu, B = cfg.selection.steps_per_round, cfg.grpo.questions_per_step
    if mu * B > pool_size:
        raise DataError(f"the training pool has {pool_size} questions but one round needs "
                        f"steps_per_round x questions_per_step = {mu} x {B} = {mu * B} distinct questions")
    if cfg.uses_selection and cfg.predictor.reference_set_size > pool_size:
        raise DataError(f"reference_set_size K = {cfg.predictor.reference_set_size} is larger than the "
                        f"training pool ({pool_size} questions)")


def make_engine(cfg: Config, model, tokenizer, run_dir: Path):
    """The configured rollout engine; vLLM keeps its copy of the policy in the run folder."""
    g = cfg.grpo
    if g.rollout_engine == "vllm":
        from .vllm_engine import VLLMEngine
        return VLLMEngine.from_policy(model, tokenizer, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                      top_p=g.top_p, seed=cfg.seed, model_dir=str(run_dir / "vllm-policy"))
    return HFGenerateEngine(model, tokenizer, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                            top_p=g.top_p, autocast=g.bf16_autocast)


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
    if progress == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm

    seed_everything(cfg.seed, 0)
    train_set, eval_set = load_task(cfg)
    _check_sizes(cfg, len(train_set))
    model, tokenizer = load_policy(cfg.policy, seed=cfg.seed)
    check_prompt_lengths(tokenizer, model, (train_set, eval_set), cfg.grpo.max_new_tokens)
    run_dir = guard.open(cfg, resume=resume)
    model.to(cfg.torch_device)
    g = cfg.grpo
    clamped = OutOfRangeCounter(reward_fn or get_reward_fn(cfg.reward, cfg.task))
    reward = SafeReward(clamped)
    optimizer = torch.optim.AdamW(model.parameters(), lr=g.learning_rate, weight_decay=g.weight_decay)
    ref_model = copy.deepcopy(model).eval() if g.kl_coef > 0 else None
    buffer = RolloutReplayBuffer(cfg.replay.buffer_capacity, filter_on_write=cfg.replay.filter_on_write)
    sampler = UniformSampler(len(train_set), cfg.seed)
    state = RunState()
    pool_emb, predictor = None, None
    if cfg.uses_selection:
        embedder = make_embedder(cfg.predictor.embedder, policy=model, tokenizer=tokenizer,
                                 cache_dir=cache_root() / "embeddings")
        pool_emb = embedder.embed(train_set.prompts)  # (N, D), cached per question
        predictor = OnlinePredictor(cfg.predictor, embed_dim=pool_emb.shape[1], seed=cfg.seed)

    engine = make_engine(cfg, model, tokenizer, run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    found = ckpt.load_for_resume(run_dir, cfg) if resume else None
    if found is not None:
        _, saved = found
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        buffer.load_state_dict(saved["buffer"])
        sampler.load_state_dict(saved["sampler"])
        if predictor is not None:
            predictor.load_state_dict(saved["predictor"])
        state = RunState(**saved["state"])
        truncate_after_step(metrics_path, state.step)
        engine.sync_weights()
    else:
        metrics_path.unlink(missing_ok=True)
    logger = JsonlLogger(metrics_path)
    records = read_jsonl(metrics_path)
    if found is not None and not any(r.get("step") == state.step for r in records):
        logger.log(found[1]["record"])  # killed after the checkpoint, before its record was written
        records.append(found[1]["record"])

    def emit(record: dict[str, Any]) -> None:
        record = clean_record(record)
        logger.log(record)
        records.append(record)
        for hook in hooks:
            hook(record)

    def evaluate(step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        seed_everything(cfg.seed + 7919, step)  # eval sampling must not shift the training RNG stream
        rate = evaluate_pass_rate(engine, tokenizer, list(eval_set), cfg.eval_samples, reward)
        out = {"eval/pass_rate": rate, "time/eval": time.perf_counter() - t0,
               "eval/reward_errors": reward.pop_error_count(), "eval/reward_clamped": clamped.pop_count()}
        if cfg.target_pass_rate > 0 and state.to_target is None and rate >= cfg.target_pass_rate:
            state.to_target = {"time/to_target": state.elapsed,
                               "rollout/generations_to_target": state.total_generations, "step": step}
            out.update({k: v for k, v in state.to_target.items() if k != "step"})
        return out

    def save(step: int, record: dict[str, Any]) -> float:
        """Checkpoint with the step's record, so a kill between the two writes loses no metrics."""
        t0 = time.perf_counter()
        ckpt.save_checkpoint(run_dir, step, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "buffer": buffer.state_dict(),
            "sampler": sampler.state_dict(), "predictor": predictor.state_dict() if predictor else None,
            "state": vars(state).copy(), "record": clean_record(record)}, cfg=cfg)
        return time.perf_counter() - t0

    if state.step == 0 and cfg.eval_every > 0 and eval_set:
        emit({"step": 0, **evaluate(0), "rollout/total_generations": 0, "time/elapsed": 0.0})

    bar = tqdm(total=cfg.total_steps, initial=state.step, desc=cfg.resolved_run_name, disable=not progress)
    stopped_early = False
    while state.step < cfg.total_steps:
        rng = seed_everything(cfg.seed, state.step + 1)
        t_step = time.perf_counter()
        times: dict[str, float] = defaultdict(float)
        rec: dict[str, Any] = {"step": state.step + 1}
        generations = 0
        fresh_target = g.questions_per_step if state.round == 0 or not cfg.uses_replay else cfg.fresh_per_step

        # --- 1. predict difficulty (once per round: roll out the reference set, label, predict)
        if not state.round_batches:
            mu = cfg.selection.steps_per_round
            budget = mu * fresh_target
            pre_rolled: list = []
            if cfg.uses_selection:
                t0 = time.perf_counter()
                strata = np.array([q.metadata.get("level", 0) for q in train_set]) \
                    if cfg.predictor.reference_strategy == "stratified" else None
                ref_idx = choose_reference_set(cfg.predictor.reference_strategy, pool_emb.numpy(),
                                               cfg.predictor.reference_set_size, rng, strata=strata)
                scored = times["time/reward"]
                ref_groups = rollout_groups(engine, model, tokenizer, train_set.subset(ref_idx), g.group_size,
                                            reward, step=state.step + 1, temperature=g.temperature,
                                            micro_batch_size=g.micro_batch_size, autocast=g.bf16_autocast,
                                            timings=times)
                generations += len(ref_idx) * g.group_size
                times["time/reference"] += time.perf_counter() - t0 - (times["time/reward"] - scored)
                t0 = time.perf_counter()
                ref_labels = torch.tensor([gr.difficulty for gr in ref_groups])
                predictor.observe(pool_emb[ref_idx], ref_labels, state.round)
                rec.update(predictor.fit())
                pred = predictor.predict(pool_emb, pool_emb[ref_idx], ref_labels,
                                         ref_index_in_pool=torch.as_tensor(ref_idx))
                d_hat = pred.difficulty.numpy()
                rec["predictor/used_adapter"] = float(pred.used_adapter)
                rec["predictor/reference_pass_rate"] = float(1 - ref_labels.mean())
                times["time/prediction"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                if cfg.selection.reuse_reference_rollouts:
                    alpha = cfg.selection.target_difficulty
                    useful = sorted((gr for gr in ref_groups if gr.has_variance),
                                    key=lambda gr: abs(gr.difficulty - alpha))[:budget // 2]
                    pre_rolled = useful
                d_select = d_hat.copy()
                d_select[[train_set.index_of(gr.question.id) for gr in pre_rolled]] = np.inf  # never drawn twice
                chosen = dots_sample(d_select, budget - len(pre_rolled), cfg.selection.target_difficulty,
                                     cfg.selection.selection_temperature, rng)
                state.round_prediction = d_hat.tolist()
                state.round_references = [int(i) for i in ref_idx]
                times["time/selection"] += time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                chosen = sampler.draw(budget)
                times["time/selection"] += time.perf_counter() - t0
            # --- 2. select questions: cut the round's draw into µ batches
            idx_parts = np.array_split(np.asarray(chosen), mu)
            pre_parts = [pre_rolled[i::mu] for i in range(mu)]
            state.round_batches = [([int(i) for i in a], b) for a, b in zip(idx_parts, pre_parts)]
            state.round += 1
        batch_idx, pre_rolled_groups = state.round_batches.pop(0)

        # --- 3. rollout (fresh groups; behaviour log-probs μ)
        t0 = time.perf_counter()
        batch_questions = train_set.subset(batch_idx)
        scored = times["time/reward"]
        fresh = rollout_groups(engine, model, tokenizer, batch_questions, g.group_size, reward,
                               step=state.step + 1, temperature=g.temperature, micro_batch_size=g.micro_batch_size,
                               autocast=g.bf16_autocast, timings=times)
        generations += len(batch_idx) * g.group_size
        times["time/generation"] += time.perf_counter() - t0 - (times["time/reward"] - scored)
        fresh = fresh + list(pre_rolled_groups)

        # --- 4. score & advantages (rewards came with the rollouts; advantages inside the update)
        actual = np.array([gr.difficulty for gr in fresh])
        zero_var = float(np.mean([not gr.has_variance for gr in fresh]))
        rec.update({"train/pass_rate": float(np.mean([gr.pass_rate for gr in fresh])),
                    "train/mean_reward": float(np.mean([gr.mean_reward for gr in fresh])),
                    "train/completion_tokens": float(np.mean([len(r.completion_ids) for gr in fresh for r in gr.rollouts])),
                    "rollout/frac_zero_std": zero_var, "select/zero_variance_frac": zero_var,
                    "rollout/pass_rate_hist": pass_rate_histogram([gr.pass_rate for gr in fresh], g.group_size),
                    "rollout/reward_errors": reward.pop_error_count(), "rollout/reward_clamped": clamped.pop_count()})
        if state.round_prediction is not None and cfg.uses_selection:
            ids = [train_set.index_of(gr.question.id) for gr in fresh]
            predicted = np.array(state.round_prediction)[ids]
            rec.update(selection_diagnostics(np.clip(predicted, 0, 1), actual))
            references = set(state.round_references)
            probe = [k for k, i in enumerate(ids) if i not in references]
            if len(probe) >= 2:
                q = prediction_quality(torch.tensor(np.clip(predicted[probe], 0, 1)), torch.tensor(actual[probe]))
                rec.update({f"predictor/{k}": float(v) for k, v in q.items()})

        # --- 5. mix with replay (not before round 0 is over: the buffer fills during it)
        t0 = time.perf_counter()
        replayed = []
        if cfg.uses_replay:
            want = max(0, g.questions_per_step - len(fresh))
            replayed = buffer.sample(want, rng, exclude_ids={gr.question.id for gr in fresh})
            rec.update({"replay/replayed": float(len(replayed)), "replay/shortfall": float(want - len(replayed)),
                        "replay/fraction_replayed": len(replayed) / max(1, len(replayed) + len(fresh)),
                        "replay/mean_age": float(np.mean([state.step + 1 - gr.step for gr in replayed])) if replayed else 0.0})
        times["time/replay"] += time.perf_counter() - t0

        # --- 6. policy update
        t0 = time.perf_counter()
        upd = policy_update(model, optimizer, fresh + replayed, g, step=state.step + 1, rng=rng, ref_model=ref_model)
        engine.sync_weights()
        times["time/update"] += time.perf_counter() - t0
        rec.update({"train/loss": upd.loss, "train/grad_norm": upd.grad_norm, "train/clip_frac": upd.clip_frac,
                    "train/mean_c": upd.mean_c, "train/mean_abs_log_rho": upd.mean_abs_log_rho, "train/kl": upd.kl,
                    "train/skipped": float(upd.skipped)})
        t0 = time.perf_counter()
        if cfg.uses_replay:
            buffer.add(fresh, keep_before_add=cfg.replay.buffer_capacity - len(fresh))
            rec.update(buffer.stats(state.step + 1))
        times["time/replay"] += time.perf_counter() - t0
        if predictor is not None:
            t0 = time.perf_counter()
            ids = [train_set.index_of(gr.question.id) for gr in fresh]
            predictor.observe(pool_emb[ids], torch.tensor(actual, dtype=torch.float32), state.round - 1)
            times["time/prediction"] += time.perf_counter() - t0

        # --- 7. log / eval / checkpoint
        state.step += 1
        state.total_generations += generations
        step_time = time.perf_counter() - t_step
        state.elapsed += step_time
        state.bad_steps = state.bad_steps + 1 if upd.skipped else 0
        rec.update({"rollout/generations": generations, "rollout/total_generations": state.total_generations,
                    **{k: v for k, v in times.items()}, "time/step": step_time, "time/elapsed": state.elapsed})
        is_last = state.step == cfg.total_steps or state.bad_steps >= cfg.max_bad_steps
        if cfg.eval_every > 0 and eval_set and (state.step % cfg.eval_every == 0 or is_last):
            rec.update(evaluate(state.step))
        if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or is_last):
            rec["time/checkpoint"] = save(state.step, rec)
        emit(rec)
        bar.update(1)
        bar.set_postfix({"pass": f"{rec['train/pass_rate']:.2f}",
                         **({"eval": f"{rec['eval/pass_rate']:.2f}"} if "eval/pass_rate" in rec else {}),
                         "zero_var": f"{zero_var:.2f}" + (" (no signal!)" if zero_var == 1.0 else "")})
        if state.bad_steps >= cfg.max_bad_steps:
            bar.write(f"stopping: {state.bad_steps} consecutive steps with non-finite loss or gradients")
            stopped_early = True
            break
    bar.close()
    return RunResult(run_dir=run_dir, records=records, stopped_early=stopped_early)

"""DOTS selection + rollout replay on Hugging Face TRL's GRPOTrainer (accelerate, DeepSpeed/FSDP, vLLM).

Sun et al., arXiv 2506.05316, Alg. 1: the same selection (§3.2), prediction (§3.1) and replay
(§3.3) as ``dotslab.trainer``, planned by the same :class:`~dotslab.planner.RoundPlanner`, with
TRL doing generation, scoring, distribution and the optimizer. Tests pass with trl 1.10-1.14 and
1.16 (1.15 fails on machines without Triton inside TRL's own log-prob kernel).

How it plugs in (TRL offers no public hook where a step's questions or replayed rows enter):
  1. The train set TRL sees is B placeholder rows, walked by TRL's own ``RepeatSampler`` (the same
     order on every process); the questions are chosen at generation time, inside the one override
     ``_generate_and_score_completions`` — the pattern TRL itself uses when an environment owns the
     data. A sampler cannot choose them: Trainer and accelerate fetch the next generation batch
     before the current one is generated and scored, so a sampler would select one step stale.
  2. That override, per step, on every process in lockstep: reference rollouts via TRL's
     ``_generate`` (vLLM or HF generate) at round starts; the plan (checked equal across
     processes); TRL scores this process's fresh groups; rewards (recorded by the reward function
     wrapper) and behaviour log-probs μ are gathered so every process updates the same predictor
     and buffer; replayed groups are appended.
  3. Replayed rows carry π_old (a fresh forward pass) as ``old_per_token_logps`` and per-token
     advantages A·c with c = π_old/μ from their stored μ. Since c > 0, TRL's clip around 1 then
     computes -c·min(r·A, clip(r, 1-ε, 1+ε)·A) with r = π_θ/π_old, which is docs/method.md §5's clip
     around c exactly (GePPO form). Fresh rows have c = 1.
Deviations from dotslab's trainer (the planner's options are in its docstring: here replay shortfall
"fresh", and ``reuse_reference_rollouts`` is refused):
  1. Loss and advantages are TRL's: aggregation 'token' -> loss_type 'dapo' (normalised by the
     generation batch's mean tokens per optimizer step), 'sequence' -> 'grpo'; advantage eps 1e-4
     (dotslab 1e-6). Minibatches are shuffled rows, not whole groups.
  2. μ is TRL's forward pass at generation time (old_per_token_logps); with vLLM, the
     vLLM-vs-trainer mismatch of fresh rows is TRL's importance-sampling correction, replayed rows
     get ratio 1 there (their c already compares with the stored trainer-side μ).
"""
from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import trl
from accelerate.utils import broadcast_object_list, gather_object
from datasets import Dataset
from packaging.version import Version
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..config import Config, ConfigError
from ..data import QuestionSet, render_prompt, user_message
from ..grpo import group_advantages_mean, group_advantages_std
from ..metrics import JsonlLogger
from ..records import Group, Question, Rollout
from ..rewards import RewardFn, SafeReward, get_reward_fn
from ..planner import RoundPlanner, step_metrics
from ..prepare import embed_pool, prepare_run

TESTED_TRL = ("1.10", "1.17")  # [min, max): _generate, _get_per_token_logps_and_entropies are used as in these
STATE_FILE = "dotslab_state.pt"
if not Version(TESTED_TRL[0]) <= Version(trl.__version__) < Version(TESTED_TRL[1]):
    warnings.warn(f"dotslab.integrations.trl is tested with trl>={TESTED_TRL[0]},<{TESTED_TRL[1]}; "
                  f"found {trl.__version__}", stacklevel=2)
ADVANTAGES = {"group": lambda r: group_advantages_std(r, eps=1e-4), "none": group_advantages_mean}


def grpo_config_from(cfg: Config, *, num_processes: Optional[int] = None, **overrides: Any) -> trl.GRPOConfig:
    """TRL arguments for ``cfg``: one TRL generation batch = one dotslab step of B groups × G.

    Per optimizer step ``minibatch_questions`` × G rows = per_device_train_batch_size × processes ×
    gradient_accumulation_steps; the per-device size defaults to ``micro_batch_size`` when that
    divides evenly, else to the whole per-process share. ``overrides`` are any GRPOConfig fields
    (use_vllm, bf16, gradient_checkpointing, ...) and win.
    """
    g = cfg.grpo
    n = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    if g.questions_per_step % g.minibatch_questions:
        raise ConfigError(f"questions_per_step ({g.questions_per_step}) must be a multiple of "
                          f"minibatch_questions ({g.minibatch_questions}) under TRL")
    rows = g.minibatch_questions * g.group_size
    per_device = overrides.pop("per_device_train_batch_size", None) or (
        g.micro_batch_size if rows % (g.micro_batch_size * n) == 0 else max(1, rows // n))
    if rows % (per_device * n):
        raise ConfigError(f"minibatch_questions x group_size = {rows} rows per optimizer step is not a "
                          f"multiple of per_device_train_batch_size x processes = {per_device} x {n}")
    updates = g.questions_per_step // g.minibatch_questions  # optimizer steps per dotslab step
    on_gpu = getattr(cfg, "device", "auto") != "cpu" and torch.cuda.is_available()
    kw: dict[str, Any] = dict(
        output_dir=str(cfg.run_dir / "trl"), seed=cfg.seed, data_seed=cfg.seed,
        num_generations=g.group_size, generation_batch_size=g.questions_per_step * g.group_size,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=rows // (per_device * n),
        num_iterations=1, max_steps=cfg.total_steps * updates, learning_rate=g.learning_rate,
        weight_decay=g.weight_decay, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=g.max_grad_norm,
        temperature=g.temperature, top_p=g.top_p, top_k=0, max_completion_length=g.max_new_tokens,
        epsilon=g.clip_eps, beta=g.kl_coef, loss_type={"token": "dapo", "sequence": "grpo"}[g.aggregation],
        scale_rewards={"std": "group", "mean": "none"}[g.advantage], mask_truncated_completions=False,
        disable_dropout=True,  # μ, π_old and π_θ must be the same function of the weights
        gradient_checkpointing=g.gradient_checkpointing,
        bf16=g.bf16_autocast or on_gpu, use_cpu=not on_gpu, logging_steps=updates,
        save_strategy="steps" if cfg.checkpoint_every else "no", save_steps=max(1, cfg.checkpoint_every) * updates,
        report_to="none", remove_unused_columns=False, shuffle_dataset=False)
    kw.update(overrides)
    return trl.GRPOConfig(**kw)


def question_rows(questions: Sequence[Question], tokenizer: Any) -> list[dict[str, Any]]:
    """TRL dataset rows: the prompt dotslab renders (as chat messages when there is a template)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    return [{"prompt": [{"role": "user", "content": user_message(q)}] if chat else render_prompt(q, tokenizer),
             "question_id": q.id} for q in questions]


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        content = completion[-1]["content"] if completion else ""
        return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return str(completion)


class RecordingReward:
    """A TRL reward function around a dotslab verifier; keeps (question id, reward, is_correct, text) per row."""

    def __init__(self, reward: SafeReward, questions: dict[str, Question]):
        self.__name__ = "dotslab_reward"  # TRL names the reward metric after it
        self.reward, self.questions, self.rows = reward, questions, []

    def __call__(self, prompts: list, completions: list, question_id: list[str], **kwargs: Any) -> list[float]:
        out = []
        for completion, qid in zip(completions, question_id):
            text = _text(completion)
            r, ok = self.reward(text, self.questions[qid])
            self.rows.append((qid, r, ok, text))
            out.append(r)
        return out


def _share(seq: Sequence, rank: int, n: int) -> list:
    k = len(seq) // n
    return list(seq[rank * k:(rank + 1) * k])


def _pad(rows: Sequence[torch.Tensor], value: float, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D tensors padded to a common length -> (values (n, L), mask (n, L) long)."""
    width = max([len(r) for r in rows] + [1])
    vals = torch.full((len(rows), width), value, dtype=rows[0].dtype if rows else torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        vals[i, sl], mask[i, sl] = r, 1
    return vals, mask


def _widen(x: torch.Tensor, width: int, value: float, left: bool = False) -> torch.Tensor:
    extra = width - x.size(1)
    if extra <= 0:
        return x
    filler = torch.full((x.size(0), extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([filler, x] if left else [x, filler], dim=1)


class DOTSGRPOTrainer(trl.GRPOTrainer):
    """GRPOTrainer whose steps are planned by DOTS (+ rollout replay): ``trainer.train()`` as usual."""

    def __init__(self, cfg: Config, *, model: Any, processing_class: Any, pool: QuestionSet,
                 reward_fn: Optional[RewardFn] = None, args: Optional[trl.GRPOConfig] = None,
                 eval_set: Optional[QuestionSet] = None, embeddings: Optional[torch.Tensor] = None, **kwargs: Any):
        args = args or grpo_config_from(cfg)
        G, B = cfg.grpo.group_size, cfg.grpo.questions_per_step
        if args.num_generations != G or args.generation_batch_size != B * G:
            raise ConfigError(f"args must have num_generations = G = {G} and generation_batch_size = B x G = {B * G}")
        if cfg.filters_groups:
            raise ConfigError("method 'dapo' (the dynamic-sampling filter) runs in dotslab's own trainer only; "
                              "TRL's steps have a fixed size (use method grpo, dots, rr or dots_rr here)")
        if cfg.uses_replay and args.scale_rewards not in ADVANTAGES:
            raise ConfigError(f"replay supports scale_rewards 'group' or 'none', not {args.scale_rewards!r}")
        questions = {q.id: q for q in list(pool) + list(eval_set or [])}
        self.dots_reward = RecordingReward(SafeReward(reward_fn or get_reward_fn(cfg.reward, cfg.task)), questions)
        rows = question_rows(pool, processing_class)
        slots = Dataset.from_list([rows[0]] * B)  # placeholders: the planner picks the questions
        evals = Dataset.from_list(question_rows(eval_set, processing_class)) if eval_set else None
        super().__init__(model=model, reward_funcs=self.dots_reward, args=args, train_dataset=slots,
                         eval_dataset=evals, processing_class=processing_class, **kwargs)
        self.cfg, self.pool, self.pool_rows = cfg, pool, rows
        n = self.accelerator.num_processes
        for what, count in (("questions_per_step", B), ("fresh groups per step", cfg.fresh_per_step),
                            ("reference_set_size", cfg.predictor.reference_set_size if cfg.uses_selection else n)):
            if count % n:
                raise ConfigError(f"{what} ({count}) must be a multiple of the number of processes ({n})")
        if cfg.selection.reuse_reference_rollouts:
            raise ConfigError("reuse_reference_rollouts is not supported on TRL: its generation batches have a "
                              "fixed shape, filled with fresh questions")
        if cfg.uses_selection and embeddings is None:
            with self.accelerator.main_process_first():  # rank 0 fills the cache, the others read it
                embeddings = embed_pool(cfg, pool, self.accelerator.unwrap_model(self.model), processing_class)
        # fixed-shape batches: replay only when the buffer holds all (1-δ)B groups, else run fresh
        self.planner = RoundPlanner(cfg, pool, embeddings, replay_shortfall="fresh", broadcast=self._from_rank0)
        self.dots_records: list[dict[str, Any]] = []
        self.dots_plans: list[dict[str, Any]] = []
        self._dots_pending: dict[str, list] = defaultdict(list)
        self.add_callback(DotsStateCallback(self))

    # ---- the step ------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        G, n, rank = self.num_generations, self.accelerator.num_processes, self.accelerator.process_index
        start = self.planner.begin_step()
        plan, planned = self.planner.plan_step(
            start, self._reference_difficulty(list(start.references)) if start.references else None)
        if n > 1 and any(p != plan.to_dict() for p in gather_object([plan.to_dict()])):
            raise RuntimeError(f"DOTS step plans differ across processes at step {plan.step}; "
                               "the planner state diverged (non-deterministic reward or predictor?)")
        fresh = _share(plan.fresh, rank, n)
        replay = self.planner.replay_groups(_share(plan.replay, rank, n))  # before record_fresh trims the buffer
        self.dots_reward.rows.clear()
        out = super()._generate_and_score_completions([dict(self.pool_rows[i]) for i in fresh for _ in range(G)])
        recorded = self.planner.record_fresh(plan, self._gather_fresh_groups(out, fresh, plan.step))
        replay_c: dict[str, float] = {}
        if replay:
            out, replay_c = self._with_replay(out, replay)
        record = step_metrics(planned, recorded, replay_c,
                              {"rollout/reward_errors": self.dots_reward.reward.pop_error_count()})
        self.dots_records.append(record)
        self.dots_plans.append(plan.to_dict())
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "step":
                self._dots_pending[k].append(float(v))
        return out

    def _reference_difficulty(self, refs: list[int]) -> list[float]:
        """Roll out this process's share of the reference set with TRL's generator; all processes' d."""
        G, n = self.num_generations, self.accelerator.num_processes
        local = _share(refs, self.accelerator.process_index, n)
        completions = self._generate([self.pool_rows[i]["prompt"] for i in local for _ in range(G)])[3]
        correct = [self.dots_reward.reward(_text(c), self.pool[local[j // G]])[1]
                   for j, c in enumerate(completions)]
        rates = [float(np.mean(correct[k * G:(k + 1) * G])) for k in range(len(local))]
        return [1.0 - p for p in (gather_object(rates) if n > 1 else rates)]

    def _token_logps(self, p_ids, p_mask, c_ids, c_mask, model=None) -> torch.Tensor:
        """log π(c_t | ...) at logits / T for every completion position, by TRL's own forward; (n, C)."""
        with torch.no_grad():
            res = self._get_per_token_logps_and_entropies(
                model if model is not None else self.model, torch.cat([p_ids, c_ids], 1),
                torch.cat([p_mask, c_mask], 1), c_ids.size(1), batch_size=self.args.per_device_train_batch_size)
        return (res[0] if isinstance(res, tuple) else res).float()

    def _gather_fresh_groups(self, out: dict[str, Any], fresh: list[int], step: int) -> list[Group]:
        """All processes' fresh groups as dotslab Groups (with token ids and μ when replay needs them)."""
        G, rows, keep = self.num_generations, self.dots_reward.rows, self.cfg.uses_replay
        if [r[0] for r in rows] != [self.pool[i].id for i in fresh for _ in range(G)]:
            raise RuntimeError("reward rows do not line up with the step's fresh questions")
        empty = torch.zeros(0)
        if keep:
            p_ids, p_mask, c_ids, c_mask = (out[k] for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                                             "completion_mask"))
            mu = out.get("old_per_token_logps")
            mu = (self._token_logps(p_ids, p_mask, c_ids, c_mask) if mu is None else mu).float().cpu()
            p_ids, p_mask, c_ids, c_mask = p_ids.cpu(), p_mask.cpu(), c_ids.cpu(), c_mask.cpu()
        payload = []
        for k, q in enumerate(fresh):
            rollouts = []
            for j in range(k * G, (k + 1) * G):
                _, r, ok, text = rows[j]
                toks = ((p_ids[j][p_mask[j].bool()], c_ids[j][c_mask[j].bool()], mu[j][c_mask[j].bool()])
                        if keep else (empty.long(), empty.long(), empty))
                rollouts.append((text, *toks, r, ok))
            payload.append((q, rollouts))
        if self.accelerator.num_processes > 1:
            payload = gather_object(payload)
        return [Group(self.pool[q], tuple(Rollout(self.pool[q].id, *r) for r in rs), step) for q, rs in payload]

    def _with_replay(self, out: dict[str, Any], groups: list[Group]) -> tuple[dict[str, Any], dict[str, float]]:
        """Append replayed rows: stored tokens, π_old as old log-probs, advantages A·c per token; returns the
        batch and the replay c diagnostics."""
        unknown = set(out) - {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
                              "num_items_in_batch", "old_per_token_logps", "sampling_per_token_logps",
                              "importance_sampling_ratio", "ref_per_token_logps"}
        if unknown:
            raise NotImplementedError(f"rollout replay cannot extend TRL batches with {sorted(unknown)}")
        dev = out["prompt_ids"].device
        pad_id = getattr(self, "_tokenizer", self.processing_class).pad_token_id
        rollouts = [r for g in groups for r in g.rollouts]
        p_ids, p_mask = (t.to(dev) for t in _pad([r.prompt_ids for r in rollouts], pad_id, left=True))
        c_ids, c_mask = (t.to(dev) for t in _pad([r.completion_ids for r in rollouts], pad_id, left=False))
        mu = _pad([r.behaviour_logprobs.float() for r in rollouts], 0.0, left=False)[0].to(dev)
        old = self._token_logps(p_ids, p_mask, c_ids, c_mask)                              # (R, C)
        log_c = (old - mu) * c_mask                                                        # (R, C)
        advantage = ADVANTAGES[self.args.scale_rewards]
        adv = torch.cat([advantage(g.rewards[None, :])[0] for g in groups]).to(dev)     # (R,)
        P = max(out["prompt_ids"].size(1), p_ids.size(1))
        C = max(out["completion_ids"].size(1), c_ids.size(1))
        fresh_adv = out["advantages"]
        if fresh_adv.dim() == 1:
            fresh_adv = fresh_adv[:, None].expand(-1, out["completion_ids"].size(1))

        def cat(key, replay_value, fill, left=False):  # fresh rows then replayed rows, padded to one width
            width = P if left else C
            return torch.cat([_widen(out[key], width, fill, left),
                              _widen(replay_value.to(out[key].dtype), width, fill, left)])

        replay_adv = adv[:, None] * log_c.exp() * c_mask                                  # (R, C): A·c
        new = {"prompt_ids": cat("prompt_ids", p_ids, pad_id, left=True),
               "prompt_mask": cat("prompt_mask", p_mask, 0, left=True),
               "completion_ids": cat("completion_ids", c_ids, pad_id),
               "completion_mask": cat("completion_mask", c_mask, 0),
               "advantages": torch.cat([_widen(fresh_adv, C, 0.0), _widen(replay_adv, C, 0.0)]),
               "num_items_in_batch": out["num_items_in_batch"] + self.accelerator.gather(c_mask.sum()).sum()}
        if "old_per_token_logps" in out:
            new["old_per_token_logps"] = cat("old_per_token_logps", old, 0.0)
        if "sampling_per_token_logps" in out:
            new["sampling_per_token_logps"] = cat("sampling_per_token_logps", mu, 0.0)
        if "importance_sampling_ratio" in out:
            ratio = out["importance_sampling_ratio"]  # TRL's vLLM correction; c already covers replayed rows
            new["importance_sampling_ratio"] = (
                torch.cat([ratio, torch.ones(len(rollouts), 1, device=dev)]) if ratio.size(1) == 1
                else cat("importance_sampling_ratio", torch.ones_like(mu), 1.0))
        if "ref_per_token_logps" in out:
            if self.ref_model is None:
                raise NotImplementedError("replay with a KL penalty needs a separate reference model (not PEFT)")
            ref = self._token_logps(p_ids, p_mask, c_ids, c_mask, self.ref_model)
            new["ref_per_token_logps"] = cat("ref_per_token_logps", ref, 0.0)
        c = log_c[c_mask.bool()].exp()  # (n_tok,)
        if not c.numel():
            return new, {}
        # c outside [1-ε, 1+ε]: tokens whose gradient the paper's clip around 1 would zero
        return new, {"replay/mean_c": float(c.mean()), "replay/mean_abs_log_c": float(c.log().abs().mean()),
                     "replay/c_outside_clip_frac": float(((c - 1).abs() > self.args.epsilon).float().mean())}

    # ---- logging, checkpoints -------------------------------------------------------------------
    def _from_rank0(self, obj: Any) -> Any:
        return broadcast_object_list([obj], from_process=0)[0] if self.accelerator.num_processes > 1 else obj

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        if self.model.training and self._dots_pending and "loss" in logs:
            logs.update({"step": self.planner.step, **{k: sum(v) / len(v) for k, v in self._dots_pending.items()}})
            self._dots_pending.clear()
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint: Optional[str | bool] = None, **kwargs: Any):
        """TRL's train; on resume also restores the planner (predictor, buffer, round) from the checkpoint."""
        if resume_from_checkpoint:
            path = resume_from_checkpoint
            if path is True:
                path = get_last_checkpoint(self.args.output_dir)
            state = Path(path or "") / STATE_FILE
            if path and state.exists():
                self.planner.load_state_dict(torch.load(state, map_location="cpu", weights_only=False))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


class DotsStateCallback(TrainerCallback):
    """Saves the planner with every TRL checkpoint and appends every log record to ``metrics.jsonl``."""

    def __init__(self, trainer: DOTSGRPOTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.trainer.planner.state_dict(), folder / STATE_FILE)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.logger = getattr(self, "logger", None) or JsonlLogger(Path(args.output_dir) / "metrics.jsonl")
            self.logger.log({"global_step": state.global_step, **logs})


def build_trainer(cfg: Config, *, model: Any = None, tokenizer: Any = None, reward_fn: Optional[RewardFn] = None,
                  **grpo_overrides: Any) -> DOTSGRPOTrainer:
    """Everything from ``cfg`` as the notebook trainer builds it (task, policy, reward), on TRL; the pool's
    embeddings are computed by the trainer, rank 0 first. (For other question sets, build
    :class:`DOTSGRPOTrainer` with ``pool=``.)"""
    prepared = prepare_run(cfg, embed=False, model=model, tokenizer=tokenizer)
    return DOTSGRPOTrainer(cfg, model=prepared.model, processing_class=prepared.tokenizer, pool=prepared.train_set,
                           eval_set=prepared.eval_set, reward_fn=reward_fn, args=grpo_config_from(cfg, **grpo_overrides))


def train_trl(cfg: Config, **kwargs: Any) -> DOTSGRPOTrainer:
    """Build the trainer and run ``cfg.total_steps`` steps; returns the trainer (``dots_records``, ``state``)."""
    trainer = build_trainer(cfg, **kwargs)
    trainer.train()
    return trainer

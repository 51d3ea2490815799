"""One policy update over fresh and replayed groups (the "update" line of paper Alg. 1).

Paper §2 / §3.3; METHOD §5. Computes group advantages from stored rewards, the π_old pass for
stale rows, then PPO-style minibatch optimizer steps with the loss of :mod:`dotslab.grpo`.

Decisions:
  1. π_old = μ for groups generated at this step with the current parameters (bit-identical, since
     :func:`completion_logprobs` computed μ); stale rows (replayed, reused) get one no-grad pass.
  2. Micro-batches accumulate gradients with weights that make the result equal to the loss over the
     whole minibatch (token- or sequence-level), so memory never limits the math.
  3. A non-finite loss or gradient norm skips the optimizer step (no partial update); the caller
     counts consecutive skips and stops the run after ``max_bad_steps``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .config import GRPOConfig
from .grpo import ADVANTAGES, policy_loss
from .records import Group
from .rollout import completion_logprobs


@dataclass(frozen=True)
class UpdateResult:
    loss: float
    grad_norm: float
    clip_frac: float
    mean_c: float
    mean_abs_log_rho: float
    kl: float
    skipped: bool
    optimizer_steps: int


def policy_update(model, optimizer: torch.optim.Optimizer, groups: Sequence[Group], cfg: GRPOConfig, *,
                  step: int, rng: np.random.Generator, ref_model=None) -> UpdateResult:
    """Train on ``groups`` for one epoch of minibatches of ``cfg.minibatch_questions`` groups."""
    if not groups:
        return UpdateResult(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, True, 0)
    rows = [r for g in groups for r in g.rollouts]
    G = [len(g.rollouts) for g in groups]
    adv_fn = ADVANTAGES[cfg.advantage]
    advantages = torch.cat([adv_fn(g.rewards[None, :])[0] for g in groups])  # (n_rows,)
    mu = [r.behaviour_logprobs for r in rows]

    # --- π_old at the start of this step: a no-grad pass only for rows sampled earlier
    stale = [i for i, g in enumerate(groups) for _ in range(G[i]) if g.step != step]
    old = list(mu)
    prompts, completions = [r.prompt_ids for r in rows], [r.completion_ids for r in rows]
    model.eval()  # dropout off: log-probs must match the sampler's
    with torch.no_grad():
        if stale:
            for i, lp in zip(stale, completion_logprobs(model, [prompts[i] for i in stale],
                                                        [completions[i] for i in stale], cfg.temperature,
                                                        cfg.micro_batch_size, cfg.bf16_autocast)):
                old[i] = lp.float()
        ref = (completion_logprobs(ref_model, prompts, completions, cfg.temperature, cfg.micro_batch_size,
                                   cfg.bf16_autocast) if ref_model is not None and cfg.kl_coef > 0 else None)

    # --- minibatches of whole groups, one epoch
    order = rng.permutation(len(groups))
    starts = np.cumsum([0] + G)
    losses, norms, stats_acc, skipped, n_steps = [], [], [], False, 0
    for mb_start in range(0, len(groups), cfg.minibatch_questions):
        mb_rows = [j for gi in order[mb_start:mb_start + cfg.minibatch_questions]
                   for j in range(starts[gi], starts[gi + 1])]
        lengths = [len(completions[j]) for j in mb_rows]
        denom = (sum(lengths) if cfg.aggregation == "token" else sum(n > 0 for n in lengths))
        if denom == 0:
            continue  # only empty completions: nothing to learn from
        optimizer.zero_grad(set_to_none=True)
        mb_loss, bad = 0.0, False
        for ms in range(0, len(mb_rows), cfg.micro_batch_size):
            part = [j for j in mb_rows[ms:ms + cfg.micro_batch_size] if len(completions[j]) > 0]
            if not part:
                continue
            logp = completion_logprobs(model, [prompts[j] for j in part], [completions[j] for j in part],
                                       cfg.temperature, cfg.micro_batch_size, cfg.bf16_autocast)
            loss, st = policy_loss(logp, [mu[j] for j in part], [old[j] for j in part], advantages[part],
                                   clip_eps=cfg.clip_eps, aggregation=cfg.aggregation,
                                   ref_logp=[ref[j] for j in part] if ref is not None else None,
                                   kl_coef=cfg.kl_coef)
            weight = (sum(len(completions[j]) for j in part) if cfg.aggregation == "token" else len(part)) / denom
            if not torch.isfinite(loss):
                bad = True
                break
            (loss * weight).backward()
            mb_loss += float(loss.detach()) * weight
            stats_acc.append((weight, st))
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if not bad else torch.tensor(float("nan"))
        if bad or not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            skipped = True
            losses.append(float("nan"))
            norms.append(float(norm))
            continue
        optimizer.step()
        n_steps += 1
        losses.append(mb_loss)
        norms.append(float(norm))
    model.train()
    tot_w = sum(w for w, _ in stats_acc) or 1.0

    def wmean(attr: str) -> float:
        return sum(w * getattr(s, attr) for w, s in stats_acc) / tot_w if stats_acc else 0.0

    return UpdateResult(loss=float(np.mean(losses)) if losses else 0.0,
                        grad_norm=float(np.mean(norms)) if norms else 0.0,
                        clip_frac=wmean("clip_frac"), mean_c=wmean("mean_c") if stats_acc else 1.0,
                        mean_abs_log_rho=wmean("mean_abs_log_rho"), kl=wmean("kl"),
                        skipped=skipped, optimizer_steps=n_steps)

"""One policy update over fresh and replayed groups (the "update" line of paper Alg. 1).

Paper §2 / §3.3; METHOD §5. Computes group advantages from stored rewards, the π_old pass for
stale rows, then PPO-style minibatch optimizer steps with the loss of :mod:`dotslab.grpo`.

Decisions:
  1. π_old = μ for groups generated at this step with the current parameters (bit-identical, since
     :func:`completion_logprobs` computed μ); stale rows (replayed groups, and reused reference
     groups from an earlier step of the round) get one no-grad pass at the start of the update.
  2. Micro-batches accumulate gradients with weights that make the result equal to the loss over the
     whole minibatch (token- or sequence-level), so memory never limits the math.
  3. A non-finite loss or gradient norm skips the optimizer step (no partial update); the caller
     counts consecutive skips and stops the run after ``max_bad_steps``.
  4. The replay diagnostics (mean c, mean |log c|, share of c outside [1-ε, 1+ε]) are computed
     over the replayed groups' tokens, where c = π_old/μ is the off-policy correction.
"""
from __future__ import annotations

import math
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
    replay_mean_c: float = float("nan")
    replay_mean_abs_log_c: float = float("nan")
    replay_c_outside_clip_frac: float = float("nan")

    def metrics(self) -> dict[str, float]:
        """The step record's ``train/`` keys (and ``replay/`` c diagnostics when groups were replayed)."""
        out = {"train/loss": self.loss, "train/grad_norm": self.grad_norm, "train/clip_frac": self.clip_frac,
               "train/mean_c": self.mean_c, "train/mean_abs_log_rho": self.mean_abs_log_rho,
               "train/kl": self.kl, "train/skipped": float(self.skipped)}
        if not math.isnan(self.replay_mean_c):
            out.update({"replay/mean_c": self.replay_mean_c, "replay/mean_abs_log_c": self.replay_mean_abs_log_c,
                        "replay/c_outside_clip_frac": self.replay_c_outside_clip_frac})
        return out


def _c_stats(behaviour_logp: Sequence[torch.Tensor], old_logp: Sequence[torch.Tensor], clip_eps: float
             ) -> tuple[float, float, float]:
    """mean c, mean |log c|, share of |c - 1| > ε over all tokens, with log c = log π_old - log μ."""
    if not behaviour_logp or sum(len(x) for x in behaviour_logp) == 0:
        return float("nan"), float("nan"), float("nan")
    log_c = torch.cat([o.float() - m.float() for m, o in zip(behaviour_logp, old_logp)])  # (n_tok,)
    c = log_c.exp()
    return float(c.mean()), float(log_c.abs().mean()), float(((c - 1).abs() > clip_eps).float().mean())


def policy_update(model, optimizer: torch.optim.Optimizer, fresh: Sequence[Group], replayed: Sequence[Group],
                  cfg: GRPOConfig, *, step: int, rng: np.random.Generator, ref_model=None) -> UpdateResult:
    """Train on ``fresh + replayed`` groups for one epoch of minibatches of ``cfg.minibatch_questions`` groups."""
    groups = list(fresh) + list(replayed)
    if not groups:
        return UpdateResult(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, True, 0)
    rows = [r for g in groups for r in g.rollouts]
    group_sizes = [len(g.rollouts) for g in groups]
    row_group = [gi for gi, n in enumerate(group_sizes) for _ in range(n)]     # row -> group index
    advantage_fn = ADVANTAGES[cfg.advantage]
    advantages = torch.cat([advantage_fn(g.rewards[None, :])[0] for g in groups])  # (n_rows,)
    behaviour = [r.behaviour_logprobs for r in rows]
    prompts, completions = [r.prompt_ids for r in rows], [r.completion_ids for r in rows]

    # --- π_old at the start of this step: a no-grad pass only for rows sampled earlier
    stale = [i for i, gi in enumerate(row_group) if groups[gi].step != step]
    old = list(behaviour)
    model.eval()  # dropout off: log-probs must match the sampler's
    with torch.no_grad():
        if stale:
            recomputed = completion_logprobs(model, [prompts[i] for i in stale], [completions[i] for i in stale],
                                             cfg.temperature, cfg.micro_batch_size, cfg.bf16_autocast)
            for i, lp in zip(stale, recomputed):
                old[i] = lp.float()
        ref = (completion_logprobs(ref_model, prompts, completions, cfg.temperature, cfg.micro_batch_size,
                                   cfg.bf16_autocast) if ref_model is not None and cfg.kl_coef > 0 else None)
    replay_rows = range(sum(group_sizes[:len(fresh)]), len(rows))
    replay_c = _c_stats([behaviour[i] for i in replay_rows], [old[i] for i in replay_rows], cfg.clip_eps)

    # --- minibatches of whole groups, one epoch
    order = rng.permutation(len(groups))
    starts = np.cumsum([0] + group_sizes)
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
            loss, st = policy_loss(logp, [behaviour[j] for j in part], [old[j] for j in part], advantages[part],
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
    total_weight = sum(w for w, _ in stats_acc) or 1.0

    def weighted_mean(attr: str) -> float:
        return sum(w * getattr(s, attr) for w, s in stats_acc) / total_weight if stats_acc else 0.0

    return UpdateResult(loss=float(np.mean(losses)) if losses else 0.0,
                        grad_norm=float(np.mean(norms)) if norms else 0.0,
                        clip_frac=weighted_mean("clip_frac"), mean_c=weighted_mean("mean_c") if stats_acc else 1.0,
                        mean_abs_log_rho=weighted_mean("mean_abs_log_rho"), kl=weighted_mean("kl"),
                        skipped=skipped, optimizer_steps=n_steps, replay_mean_c=replay_c[0],
                        replay_mean_abs_log_c=replay_c[1], replay_c_outside_clip_frac=replay_c[2])

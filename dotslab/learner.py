"""One policy update over fresh and replayed groups (the "update" line of paper Alg. 1).

Paper §2 / §3.3; docs/method.md §5. Computes group advantages from stored rewards, the π_old pass for
stale rows, then PPO-style minibatch optimizer steps with the loss of :mod:`dotslab.grpo`.

Decisions:
  1. Fresh rows were sampled by the parameters the update starts from, so their μ and π_old are the
     same numbers: when the rollout did not compute μ, the first minibatch's own forward gives both
     (no extra pass), and fresh rows of later minibatches get one no-grad pass at the start. Stale
     rows (replayed groups, reused reference groups from an earlier step of the round) keep their
     stored μ and get π_old from that no-grad pass.
  2. Micro-batches accumulate gradients with weights that make the result equal to the loss over the
     whole minibatch (token- or sequence-level), so memory never limits the math.
  3. A non-finite loss or gradient norm skips the optimizer step (no partial update); the caller
     counts consecutive skips and stops the run after ``max_bad_steps``.
  4. The replay diagnostics (mean c, mean |log c|, share of c outside [1-ε, 1+ε]) are computed
     over the replayed groups' tokens, where c = π_old/μ is the off-policy correction.
  5. Rows of a group without reward spread have advantage exactly 0 and (with no KL term) no loss
     term, so they get no forward or backward pass; they still count in the aggregation's
     denominator, so the gradient is the same as with them. Loss statistics (clip fraction, mean c,
     mean |log ρ|) are over the trained tokens. A minibatch left with nothing to train still takes
     its optimizer step (zero gradient, Adam momentum), as it would with the rows computed.
  6. Memory: the gradients are freed when the update ends, and freed heap pages go back to the OS,
     so sampling and evaluation do not run on top of the update's peak.
"""
from __future__ import annotations

import ctypes
import dataclasses
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
    fresh: tuple = ()
    """The fresh groups with the behaviour log-probs μ this update computed (what the buffer stores)."""

    def metrics(self) -> dict[str, float]:
        """The step record's ``train/`` keys (and ``replay/`` c diagnostics when groups were replayed)."""
        out = {"train/loss": self.loss, "train/grad_norm": self.grad_norm, "train/clip_frac": self.clip_frac,
               "train/mean_c": self.mean_c, "train/mean_abs_log_rho": self.mean_abs_log_rho,
               "train/kl": self.kl, "train/skipped": float(self.skipped)}
        if not math.isnan(self.replay_mean_c):
            out.update({"replay/mean_c": self.replay_mean_c, "replay/mean_abs_log_c": self.replay_mean_abs_log_c,
                        "replay/c_outside_clip_frac": self.replay_c_outside_clip_frac})
        return out


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc's ``malloc_trim``), so the resident size drops after a
    big phase instead of staying at its peak; a no-op where glibc is absent."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
    """Train on ``fresh + replayed`` groups for one epoch of minibatches of ``cfg.minibatch_questions`` groups.

    Fresh groups (sampled at ``step`` by the current parameters) may come without behaviour log-probs:
    μ is then π_old, computed here (decision 1), and ``UpdateResult.fresh`` returns them with μ filled
    in for the replay buffer. Replayed groups must carry μ.
    """
    groups = list(fresh) + list(replayed)
    if not groups:
        return UpdateResult(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, True, 0)
    rows = [r for g in groups for r in g.rollouts]
    group_sizes = [len(g.rollouts) for g in groups]
    row_group = [gi for gi, n in enumerate(group_sizes) for _ in range(n)]     # row -> group index
    advantage_fn = ADVANTAGES[cfg.advantage]
    advantages = torch.cat([advantage_fn(g.rewards[None, :])[0] for g in groups])  # (n_rows,)
    prompts, completions = [r.prompt_ids for r in rows], [r.completion_ids for r in rows]
    # decision 5: rows of groups without reward spread have A = 0 exactly and no loss term
    trains = [bool(groups[gi].has_variance or cfg.kl_coef > 0) and len(completions[i]) > 0
              for i, gi in enumerate(row_group)]
    is_fresh = [groups[gi].step == step for gi in row_group]
    for i, r in enumerate(rows):
        if trains[i] and not is_fresh[i] and r.behaviour_logprobs is None:
            raise ValueError(f"replayed group of question {r.question_id!r} has no behaviour log-probs")

    # --- minibatches of whole groups, one epoch
    order = rng.permutation(len(groups))
    starts = np.cumsum([0] + group_sizes)
    minibatches = [[j for gi in order[k:k + cfg.minibatch_questions] for j in range(starts[gi], starts[gi + 1])]
                   for k in range(0, len(groups), cfg.minibatch_questions)]
    first = set(minibatches[0])

    # --- π_old at the start of this step (decision 1): fresh rows with μ, and fresh rows in the first
    # minibatch (their first forward runs at these parameters), need no extra pass
    behaviour = [r.behaviour_logprobs for r in rows]
    old: list = [b if f else None for b, f in zip(behaviour, is_fresh)]
    need = [i for i in range(len(rows)) if trains[i] and old[i] is None and not (is_fresh[i] and i in first)]
    model.eval()  # dropout off: log-probs must match the sampler's
    with torch.no_grad():
        if need:
            recomputed = completion_logprobs(model, [prompts[i] for i in need], [completions[i] for i in need],
                                             cfg.temperature, cfg.micro_batch_size, cfg.bf16_autocast)
            for i, lp in zip(need, recomputed):
                old[i] = lp.float()
                if is_fresh[i]:
                    behaviour[i] = old[i]
        trained = [i for i in range(len(rows)) if trains[i]]
        ref = dict(zip(trained, completion_logprobs(
            ref_model, [prompts[i] for i in trained], [completions[i] for i in trained], cfg.temperature,
            cfg.micro_batch_size, cfg.bf16_autocast))) if ref_model is not None and cfg.kl_coef > 0 else None
    replay_rows = [i for i in range(sum(group_sizes[:len(fresh)]), len(rows)) if trains[i]]
    replay_c = _c_stats([behaviour[i] for i in replay_rows], [old[i] for i in replay_rows], cfg.clip_eps)

    losses, norms, stats_acc, skipped, n_steps = [], [], [], False, 0
    for mb_index, mb_rows in enumerate(minibatches):
        lengths = [len(completions[j]) for j in mb_rows]
        denom = (sum(lengths) if cfg.aggregation == "token" else sum(n > 0 for n in lengths))
        if denom == 0:
            continue  # only empty completions: nothing to learn from
        optimizer.zero_grad(set_to_none=True)
        mb_loss, bad = 0.0, False
        train_rows = [j for j in mb_rows if trains[j]]
        for ms in range(0, len(train_rows), cfg.micro_batch_size):
            part = train_rows[ms:ms + cfg.micro_batch_size]
            logp = completion_logprobs(model, [prompts[j] for j in part], [completions[j] for j in part],
                                       cfg.temperature, cfg.micro_batch_size, cfg.bf16_autocast)
            if mb_index == 0:  # the start parameters: a fresh row's μ and π_old are this forward
                for j, lp in zip(part, logp):
                    if old[j] is None:
                        old[j] = behaviour[j] = lp.detach().float()
            loss, st = policy_loss(logp, [behaviour[j] for j in part], [old[j] for j in part], advantages[part],
                                   clip_eps=cfg.clip_eps, aggregation=cfg.aggregation,
                                   ref_logp=[ref[j] for j in part] if ref is not None else None,
                                   kl_coef=cfg.kl_coef, max_c=cfg.max_importance_weight)
            # the loss over the trained rows, rescaled to the aggregation over the whole minibatch
            weight = (sum(len(completions[j]) for j in part) if cfg.aggregation == "token" else len(part)) / denom
            if not torch.isfinite(loss):
                bad = True
                break
            (loss * weight).backward()
            mb_loss += float(loss.detach()) * weight
            stats_acc.append((weight, st))
        if not bad:
            for p in model.parameters():  # a minibatch with nothing to train still takes its (momentum) step
                if p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
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
    optimizer.zero_grad(set_to_none=True)  # gradients are not needed until the next update: free them now
    release_freed_memory()
    model.train()
    total_weight = sum(w for w, _ in stats_acc) or 1.0

    def weighted_mean(attr: str) -> float:
        return sum(w * getattr(s, attr) for w, s in stats_acc) / total_weight if stats_acc else 0.0

    return UpdateResult(loss=float(np.mean(losses)) if losses else 0.0,
                        grad_norm=float(np.mean(norms)) if norms else 0.0,
                        clip_frac=weighted_mean("clip_frac"), mean_c=weighted_mean("mean_c") if stats_acc else 1.0,
                        mean_abs_log_rho=weighted_mean("mean_abs_log_rho"), kl=weighted_mean("kl"),
                        skipped=skipped, optimizer_steps=n_steps, replay_mean_c=replay_c[0],
                        replay_mean_abs_log_c=replay_c[1], replay_c_outside_clip_frac=replay_c[2],
                        fresh=tuple(_with_behaviour(g, behaviour, starts[k]) for k, g in enumerate(fresh)))


def _with_behaviour(group: Group, behaviour: list, start: int) -> Group:
    """``group`` with its rows' behaviour log-probs (None where a row was not trained)."""
    if all(r.behaviour_logprobs is behaviour[start + j] for j, r in enumerate(group.rollouts)):
        return group
    rollouts = tuple(dataclasses.replace(r, behaviour_logprobs=behaviour[start + j])
                     for j, r in enumerate(group.rollouts))
    return dataclasses.replace(group, rollouts=rollouts)

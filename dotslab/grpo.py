"""GRPO: group-normalised advantages and the clipped, importance-corrected policy loss.

Paper §2 (GRPO objective) and §4 (rollout replay: off-policy correction of replayed groups), with
the authors' code's choices where the two differ (docs/method.md §5).

Deviations / decisions:
  1. Advantages default to the code's (r - mean)/(std + 1e-6) with the unbiased std; the paper's
     Dr.GRPO form r - mean is ``advantage='mean'``.
  2. The clip is taken around c = π_old/μ (GePPO form, as in the code): the paper's clip around 1
     would zero the gradient of every stale token whose c lies outside [1-ε, 1+ε].
  3. Aggregation: the code's token-level mean over the minibatch by default; the paper's
     per-sequence mean then mean over sequences is ``aggregation='sequence'``.
  4. An optional k3 KL penalty to a reference policy (β = 0 in the paper, so off by default).
  5. An optional truncation of c at ``max_c`` (truncated importance sampling, as V-trace truncates its
     weights) [ours, off by default = the authors' rule]: a replayed token whose behaviour policy is far
     from π_old cannot scale its gradient without bound (mean c reached 109 on one SmolLM2 step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages_std(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A_ij = (r_ij - mean_j r_ij) / (std_j r_ij + eps), unbiased std over the group; rewards (N, G)."""
    mean = rewards.mean(dim=1, keepdim=True)  # (N, 1)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)  # (N, G)


def group_advantages_mean(rewards: torch.Tensor) -> torch.Tensor:
    """A_ij = r_ij - mean_j r_ij (Dr.GRPO, paper §2); rewards (N, G)."""
    return rewards - rewards.mean(dim=1, keepdim=True)  # (N, G)


ADVANTAGES = {"std": group_advantages_std, "mean": group_advantages_mean}


@dataclass(frozen=True)
class LossStats:
    clip_frac: float
    """Share of tokens where the clipped term was the active (larger) one."""
    mean_c: float
    """Mean c = π_old/μ; 1 on fresh rows, a free check that log-probs agree (docs/method.md §8)."""
    mean_abs_log_rho: float
    """Mean |log ρ| = |log π_θ - log μ|, how far the optimised policy is from the sampler."""
    kl: float


def token_policy_loss(logp: torch.Tensor, behaviour_logp: torch.Tensor, old_logp: torch.Tensor,
                      advantages: torch.Tensor, clip_eps: float, max_c: float = 0.0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate with off-policy correction (docs/method.md §5), all inputs (n_tok,).

        ρ = exp(log π_θ - log μ),  c = exp(log π_old - log μ)
        loss_t = max(-A·ρ, -A·clip(ρ, c(1-ε), c(1+ε)))

    which equals -c·min(r·A, clip(r, 1-ε, 1+ε)·A) with r = π_θ/π_old. With ``max_c`` > 0 the weight c
    is truncated [ours, off by default]: loss_t = -min(c, max_c)·min(r·A, clip(r, 1-ε, 1+ε)·A), i.e. the
    loss above times min(c, max_c)/c. Returns (loss_t, is_clipped).
    """
    rho = torch.exp(logp - behaviour_logp)                       # (n_tok,)
    c = torch.exp(old_logp - behaviour_logp).detach()            # (n_tok,)
    unclipped = -advantages * rho
    clipped = -advantages * torch.clamp(rho, c * (1 - clip_eps), c * (1 + clip_eps))
    loss = torch.maximum(unclipped, clipped)
    if max_c > 0:
        loss = loss * (torch.clamp(c, max=max_c) / c)            # (n_tok,)
    return loss, (clipped > unclipped).detach()


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π_θ || π_ref) per token: exp(ref - logp) - (ref - logp) - 1, http://joschu.net/blog/kl-approx.html"""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def aggregate_token_mean(per_token: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Mean over all completion tokens of the minibatch [code]."""
    return per_token.sum() / max(1, sum(lengths))


def aggregate_sequence_mean(per_token: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Mean over sequences of each sequence's token mean [paper]; empty sequences are skipped."""
    parts = [x.mean() for x in per_token.split(lengths) if x.numel() > 0]
    return torch.stack(parts).mean() if parts else per_token.sum() * 0


AGGREGATIONS = {"token": aggregate_token_mean, "sequence": aggregate_sequence_mean}


def policy_loss(logp: list[torch.Tensor], behaviour_logp: list[torch.Tensor], old_logp: list[torch.Tensor],
                advantages: torch.Tensor, *, clip_eps: float, aggregation: str = "token",
                ref_logp: list[torch.Tensor] | None = None, kl_coef: float = 0.0,
                max_c: float = 0.0) -> tuple[torch.Tensor, LossStats]:
    """The minibatch loss over S sequences: per-sequence token log-prob lists and advantages (S,);
    ``max_c`` > 0 truncates the importance weight c (:func:`token_policy_loss`)."""
    lengths = [len(x) for x in logp]
    cat = torch.cat
    adv = cat([advantages[i].expand(n) for i, n in enumerate(lengths)]) if lengths else advantages[:0]  # (n_tok,)
    lp, behaviour, old = cat(logp), cat(behaviour_logp).to(logp[0]), cat(old_logp).to(logp[0])
    per_token, is_clipped = token_policy_loss(lp, behaviour, old, adv.to(lp), clip_eps, max_c)
    kl = torch.zeros((), dtype=lp.dtype)
    if ref_logp is not None and kl_coef > 0:
        kl_t = k3_kl(lp, cat(ref_logp).to(lp))
        per_token = per_token + kl_coef * kl_t
        kl = kl_t.detach().mean()
    loss = AGGREGATIONS[aggregation](per_token, lengths)
    with torch.no_grad():
        n = max(1, lp.numel())
        stats = LossStats(clip_frac=float(is_clipped.sum()) / n,
                          mean_c=float(torch.exp(old - behaviour).sum()) / n,
                          mean_abs_log_rho=float((lp - behaviour).abs().sum()) / n, kl=float(kl))
    return loss, stats

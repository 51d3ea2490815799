"""One policy update over fresh and replayed groups (the "update" line of paper Alg. 1).

Paper §2 / §3.3; docs/method.md §5. Builds the update's rows once as a :class:`Batch` (group,
token ids, advantage, μ and π_old per completion), fills in π_old for stale rows, then takes
PPO-style minibatch optimizer steps with the loss of :mod:`dotslab.grpo`.

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
  6. The update leaves the gradients in place; freeing them and the heap pages they held is the
     trainer's job (the run's ``update`` in :mod:`dotslab.trainer`). Before each optimizer step the
     heap pages the forward and backward freed go back to the OS, so the step's temporaries do not
     stack on top of the backward's peak.
  7. While the trainer's update runs (:func:`large_blocks_from_the_os`), glibc maps every block of
     1 MB or more straight from the OS and returns it when freed, instead of keeping freed blocks in
     its heap for reuse. A heap grown by the forward's short-lived blocks otherwise stays at its high
     mark through the backward; on the main job this lowered the peak from 3.09 to 2.95 GB, for about
     0.9 s more per update, paid in page faults (docs/benchmarks.md, "The main job under 3 GB").
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .config import GRPOConfig
from .grpo import ADVANTAGES, LossStats, policy_loss
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


@dataclass
class Batch:
    """The update's rows, one per completion, built once from the fresh groups then the replayed ones.

    ``behaviour`` (log μ) and ``old`` (log π_old) start as the rollouts stored them (a fresh row's
    π_old is its μ); the update fills in the rows that lack them (decision 1). ``ref`` holds the
    reference policy's log-probs of the trained rows when there is a KL term.
    """
    groups: tuple[Group, ...]
    group: list[int]                              # (n_rows,) row -> index into ``groups``
    prompts: list[torch.Tensor]                   # (n_rows,) of (P,) prompt ids
    completions: list[torch.Tensor]               # (n_rows,) of (C,) completion ids
    advantages: torch.Tensor                      # (n_rows,)
    is_fresh: list[bool]                          # (n_rows,) sampled at this step by these parameters
    trains: list[bool]                            # (n_rows,) has a loss term (decision 5)
    behaviour: list[Optional[torch.Tensor]]       # (n_rows,) of (C,) log μ
    old: list[Optional[torch.Tensor]]             # (n_rows,) of (C,) log π_old
    n_fresh_rows: int
    ref: Optional[dict[int, torch.Tensor]] = None  # row -> (C,) log π_ref

    @property
    def group_starts(self) -> np.ndarray:
        """(n_groups + 1,) first row of each group, then the row count."""
        return np.cumsum([0] + [len(g.rollouts) for g in self.groups])

    def trained(self, rows: Sequence[int]) -> list[int]:
        return [i for i in rows if self.trains[i]]


def build_batch(fresh: Sequence[Group], replayed: Sequence[Group], cfg: GRPOConfig, step: int) -> Batch:
    """The rows of ``fresh + replayed`` with their group advantages; replayed rows must carry μ."""
    groups = tuple(fresh) + tuple(replayed)
    group = [gi for gi, g in enumerate(groups) for _ in g.rollouts]
    rows = [r for g in groups for r in g.rollouts]
    advantage_fn = ADVANTAGES[cfg.advantage]
    advantages = (torch.cat([advantage_fn(g.rewards[None, :])[0] for g in groups]) if groups
                  else torch.zeros(0))                                          # (n_rows,)
    # decision 5: rows of groups without reward spread have A = 0 exactly and no loss term
    trains = [bool(groups[gi].has_variance or cfg.kl_coef > 0) and len(r.completion_ids) > 0
              for r, gi in zip(rows, group)]
    is_fresh = [groups[gi].step == step for gi in group]
    for r, t, f in zip(rows, trains, is_fresh):
        if t and not f and r.behaviour_logprobs is None:
            raise ValueError(f"replayed group of question {r.question_id!r} has no behaviour log-probs")
    behaviour = [r.behaviour_logprobs for r in rows]
    return Batch(groups, group, [r.prompt_ids for r in rows], [r.completion_ids for r in rows], advantages,
                 is_fresh, trains, behaviour, [b if f else None for b, f in zip(behaviour, is_fresh)],
                 n_fresh_rows=sum(len(g.rollouts) for g in fresh))


def draw_minibatches(batch: Batch, minibatch_questions: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of minibatches of whole groups, in a random group order; each a list of rows."""
    order, starts = rng.permutation(len(batch.groups)), batch.group_starts
    return [[j for gi in order[k:k + minibatch_questions] for j in range(starts[gi], starts[gi + 1])]
            for k in range(0, len(batch.groups), minibatch_questions)]


def _logprobs(model, batch: Batch, rows: Sequence[int], cfg: GRPOConfig) -> list[torch.Tensor]:
    return completion_logprobs(model, [batch.prompts[i] for i in rows], [batch.completions[i] for i in rows],
                               cfg.temperature, cfg.micro_batch_size, cfg.bf16_autocast,
                               checkpointing=cfg.gradient_checkpointing)


@torch.no_grad()
def fill_start_logprobs(model, batch: Batch, first_minibatch: Sequence[int], cfg: GRPOConfig, ref_model=None) -> None:
    """π_old at the start parameters for the trained rows that lack it (decision 1), and π_ref.

    Fresh rows with μ, and fresh rows of the first minibatch (whose first forward runs at these
    parameters), need no extra pass; a fresh row computed here gets μ = π_old.
    """
    first = set(first_minibatch)
    need = [i for i in batch.trained(range(len(batch.group)))
            if batch.old[i] is None and not (batch.is_fresh[i] and i in first)]
    for i, lp in zip(need, _logprobs(model, batch, need, cfg) if need else []):
        batch.old[i] = lp.float()
        if batch.is_fresh[i]:
            batch.behaviour[i] = batch.old[i]
    if ref_model is not None and cfg.kl_coef > 0:
        trained = batch.trained(range(len(batch.group)))
        batch.ref = dict(zip(trained, _logprobs(ref_model, batch, trained, cfg)))


def replay_c_stats(batch: Batch, clip_eps: float) -> tuple[float, float, float]:
    """Over the replayed rows' trained tokens (decision 4): mean c, mean |log c|, share of |c - 1| > ε,
    with log c = log π_old - log μ."""
    rows = batch.trained(range(batch.n_fresh_rows, len(batch.group)))
    if sum(len(batch.completions[i]) for i in rows) == 0:
        return float("nan"), float("nan"), float("nan")
    log_c = torch.cat([batch.old[i].float() - batch.behaviour[i].float() for i in rows])  # (n_tok,)
    c = log_c.exp()
    return float(c.mean()), float(log_c.abs().mean()), float(((c - 1).abs() > clip_eps).float().mean())


def _loss_weight(batch: Batch, rows: Sequence[int], aggregation: str) -> float:
    """A part's share of the minibatch aggregation: its tokens (token-level) or its non-empty rows."""
    return float(sum(len(batch.completions[j]) for j in rows) if aggregation == "token"
                 else sum(len(batch.completions[j]) > 0 for j in rows))


def accumulate_gradients(model, batch: Batch, rows: Sequence[int], cfg: GRPOConfig, *, is_first: bool
                         ) -> tuple[float, list[tuple[float, LossStats]], bool]:
    """Backward the minibatch loss over ``rows`` in micro-batches (decision 2); returns the loss, the
    (weight, stats) of each micro-batch, and whether a loss was non-finite (the backward then stops)."""
    denom, total, stats = _loss_weight(batch, rows, cfg.aggregation), 0.0, []
    train_rows = batch.trained(rows)
    for ms in range(0, len(train_rows), cfg.micro_batch_size):
        part = train_rows[ms:ms + cfg.micro_batch_size]
        logp = _logprobs(model, batch, part, cfg)
        if is_first:  # the start parameters: a fresh row's μ and π_old are this forward
            for j, lp in zip(part, logp):
                if batch.old[j] is None:
                    batch.old[j] = batch.behaviour[j] = lp.detach().float()
        loss, st = policy_loss(logp, [batch.behaviour[j] for j in part], [batch.old[j] for j in part],
                               batch.advantages[part], clip_eps=cfg.clip_eps, aggregation=cfg.aggregation,
                               ref_logp=[batch.ref[j] for j in part] if batch.ref is not None else None,
                               kl_coef=cfg.kl_coef, max_c=cfg.max_importance_weight)
        if not torch.isfinite(loss):
            return total, stats, True
        # the loss over the trained rows, rescaled to the aggregation over the whole minibatch
        weight = _loss_weight(batch, part, cfg.aggregation) / denom
        (loss * weight).backward()
        total += float(loss.detach()) * weight
        stats.append((weight, st))
    return total, stats, False


def optimizer_step(model, optimizer: torch.optim.Optimizer, cfg: GRPOConfig, bad: bool) -> tuple[float, bool]:
    """Clip and step unless the loss or the gradient norm is not finite (decision 3): (norm, stepped)."""
    if bad:
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), False
    for p in model.parameters():  # a minibatch with nothing to train still takes its (momentum) step
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
    if not math.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return norm, False
    release_freed_memory()  # decision 6
    optimizer.step()
    return norm, True


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc's ``malloc_trim``), so the resident size drops after a
    big phase instead of staying at its peak; a no-op where glibc is absent."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


UPDATE_MMAP_THRESHOLD = 1 << 20
"""Bytes from which glibc serves a block straight from the OS during the update (decision 7)."""
_M_MMAP_THRESHOLD, _GLIBC_MAX_THRESHOLD = -3, 32 << 20


@contextlib.contextmanager
def large_blocks_from_the_os(threshold: int = UPDATE_MMAP_THRESHOLD):
    """Decision 7: while open, blocks of ``threshold`` bytes or more are mapped from the OS and go back to
    it when freed; afterwards the threshold is glibc's largest (32 MB). A no-op where glibc is absent."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MAX_THRESHOLD)


@functools.cache
def _glibc():
    """glibc through ctypes, loaded once (None where it is absent)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def policy_update(model, optimizer: torch.optim.Optimizer, fresh: Sequence[Group], replayed: Sequence[Group],
                  cfg: GRPOConfig, *, step: int, rng: np.random.Generator, ref_model=None) -> UpdateResult:
    """Train on ``fresh + replayed`` groups for one epoch of minibatches of ``cfg.minibatch_questions`` groups.

    Fresh groups (sampled at ``step`` by the current parameters) may come without behaviour log-probs:
    μ is then π_old, computed here (decision 1), and ``UpdateResult.fresh`` returns them with μ filled
    in for the replay buffer. Replayed groups must carry μ.
    """
    if not fresh and not replayed:
        return UpdateResult(0.0, 0.0, 0.0, 1.0, 0.0, 0.0, True, 0)
    batch = build_batch(fresh, replayed, cfg, step)
    minibatches = draw_minibatches(batch, cfg.minibatch_questions, rng)
    model.eval()  # dropout off: log-probs must match the sampler's
    fill_start_logprobs(model, batch, minibatches[0], cfg, ref_model)
    replay_c = replay_c_stats(batch, cfg.clip_eps)
    losses, norms, stepped, stats = [], [], [], []
    for k, rows in enumerate(minibatches):
        if _loss_weight(batch, rows, cfg.aggregation) == 0:
            continue  # only empty completions: nothing to learn from
        optimizer.zero_grad(set_to_none=True)
        loss, mb_stats, bad = accumulate_gradients(model, batch, rows, cfg, is_first=k == 0)
        stats += mb_stats
        norm, did_step = optimizer_step(model, optimizer, cfg, bad)
        losses.append(loss if did_step else float("nan"))
        norms.append(norm)
        stepped.append(did_step)
    model.train()
    return summarise(losses, norms, stepped, stats, replay_c, fresh=_with_behaviour(batch, len(fresh)))


def summarise(losses: list[float], norms: list[float], stepped: list[bool], stats: list[tuple[float, LossStats]],
              replay_c: tuple[float, float, float], fresh: tuple[Group, ...]) -> UpdateResult:
    """The update's result: minibatch means of loss and norm, weight-averaged loss statistics."""
    total_weight = sum(w for w, _ in stats) or 1.0

    def weighted_mean(attr: str) -> float:
        return sum(w * getattr(s, attr) for w, s in stats) / total_weight if stats else 0.0

    return UpdateResult(loss=float(np.mean(losses)) if losses else 0.0,
                        grad_norm=float(np.mean(norms)) if norms else 0.0,
                        clip_frac=weighted_mean("clip_frac"), mean_c=weighted_mean("mean_c") if stats else 1.0,
                        mean_abs_log_rho=weighted_mean("mean_abs_log_rho"), kl=weighted_mean("kl"),
                        skipped=not all(stepped), optimizer_steps=sum(stepped), replay_mean_c=replay_c[0],
                        replay_mean_abs_log_c=replay_c[1], replay_c_outside_clip_frac=replay_c[2], fresh=fresh)


def _with_behaviour(batch: Batch, n_fresh: int) -> tuple[Group, ...]:
    """The fresh groups with their rows' behaviour log-probs (None where a row was not trained)."""
    out, starts = [], batch.group_starts
    for k, group in enumerate(batch.groups[:n_fresh]):
        mu = batch.behaviour[starts[k]:starts[k + 1]]
        if all(r.behaviour_logprobs is m for r, m in zip(group.rollouts, mu)):
            out.append(group)
        else:
            out.append(dataclasses.replace(group, rollouts=tuple(
                dataclasses.replace(r, behaviour_logprobs=m) for r, m in zip(group.rollouts, mu))))
    return tuple(out)

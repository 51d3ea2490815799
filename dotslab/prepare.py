"""A run's setup, in one place: load the task, check the pool, load the policy, check the prompts, embed the pool.

Sun et al., arXiv 2506.05316, Alg. 1 starts from a question pool, a policy and, for DOTS (§3.1), frozen
embeddings of the pool's questions (docs/method.md §2 "Embedding"). Every entry point (dotslab's trainer,
the TRL integration and its recipe, the workbench, the benchmarks) gets them from :func:`prepare_run`, in
this order, so bad input (a pool too small for a round, a prompt longer than the context) fails before
anything slow runs or anything is written.

Deviations: none; the paper has no setup code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .config import Config
from .data import QuestionSet
from .embed import pool_embeddings
from .models import check_prompt_lengths, load_policy
from .planner import check_pool_size
from .tasks import load_task


@dataclass(frozen=True)
class Prepared:
    train_set: QuestionSet
    eval_set: QuestionSet
    model: Any                           # None when the policy was not needed
    tokenizer: Any
    embeddings: Optional[torch.Tensor]   # (N, D) of ``train_set``; None when not asked for


def embed_pool(cfg: Config, pool: QuestionSet, model: Any = None, tokenizer: Any = None, *,
               device: str | torch.device | None = None) -> torch.Tensor:
    """The predictor's embeddings of ``pool`` with ``cfg``'s encoder (cached on disk); (N, D)."""
    return pool_embeddings(cfg.predictor.embedder, pool.prompts, policy=model, tokenizer=tokenizer, device=device)


def prepare_run(cfg: Config, *, policy: bool = True, embed: Optional[bool] = None, to_device: bool = False,
                model: Any = None, tokenizer: Any = None, embed_device: str | torch.device | None = None) -> Prepared:
    """Task, checks, policy and pool embeddings for ``cfg``.

    ``policy``: load the policy (False: only when the embedder is the policy itself); a given ``model``
    and ``tokenizer`` are used instead. ``embed``: compute the pool's embeddings (default: when the
    method selects). ``to_device``: move the policy to ``cfg.torch_device`` before embedding.
    """
    train_set, eval_set = load_task(cfg)
    check_pool_size(cfg, len(train_set))
    if model is None and (policy or cfg.predictor.embedder == "policy"):
        model, tokenizer = load_policy(cfg.policy, seed=cfg.seed)
    if model is not None:
        check_prompt_lengths(tokenizer, model, (train_set, eval_set), cfg.grpo.max_new_tokens)
        if to_device:
            model.to(cfg.torch_device)
    embed = cfg.uses_selection if embed is None else embed
    embeddings = embed_pool(cfg, train_set, model, tokenizer, device=embed_device) if embed else None
    return Prepared(train_set, eval_set, model, tokenizer, embeddings)

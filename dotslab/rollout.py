"""Rollouts: sample G completions per question and score them into Group records.

Paper §2 (GRPO groups) and §4 (rollout replay needs the behaviour log-probs μ of every token).

Deviations / decisions:
  1. μ is computed by a forward pass over the sampled tokens at the sampling temperature
     (logits / T), not taken from sampling scores, which top-p alters (docs/method.md §4). The same
     function :func:`~dotslab.prefix.completion_logprobs` gives π_old and π_θ, so all three agree on
     tokenisation, padding and temperature; on fresh rows π_old = μ exactly.
  2. A completion is cut after its first EOS (EOS kept, so the model learns to stop); a completion
     that hits ``max_new_tokens`` is kept as is. An empty completion (C = 0) is scored as "" and
     contributes no tokens to the loss.
  3. Engines implement :class:`RolloutEngine`; ``HFGenerateEngine`` (sampling with the policy, one
     prefill per prompt for its G samples) is the default, a vLLM engine plugs in behind the same
     ``sample`` / ``sync_weights`` verbs.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from .data import render_prompt
from .prefix import completion_logprobs, sample_completions  # noqa: F401  (completion_logprobs: re-exported)
from .records import Group, Question, Rollout
from .rewards import SafeReward
from .timing import Stopwatch


@dataclass(frozen=True)
class Sample:
    prompt_ids: torch.Tensor      # (P,)
    completion_ids: torch.Tensor  # (C,)
    text: str


class RolloutEngine(Protocol):
    def sample(self, prompts: Sequence[str], n: int, *, greedy: bool = False, temperature: float | None = None,
               top_p: float | None = None) -> list[list[Sample]]:
        """Return n samples per prompt (``greedy``: argmax decoding), completions cut after the first EOS;
        ``temperature`` / ``top_p`` replace the engine's own for this call (the evaluation's settings)."""

    def sync_weights(self) -> None:
        """Called after every policy update so the engine samples from the current policy."""


class HFGenerateEngine:
    """Sampling with the policy itself: one prefill per prompt shared by its n samples
    (:func:`dotslab.prefix.sample_completions`), chat template via ``render_prompt``."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float, top_p: float = 1.0,
                 batch_size: int = 256, autocast: bool = False):
        self.model, self.tokenizer, self.autocast = model, tokenizer, autocast
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size = batch_size

    def sync_weights(self) -> None:
        pass  # samples from the live model

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int, *, greedy: bool = False, temperature: float | None = None,
               top_p: float | None = None) -> list[list[Sample]]:
        tok, model = self.tokenizer, self.model
        if not prompts:
            return []
        was_training = model.training
        model.eval()
        ids = [torch.tensor(tok(p, add_special_tokens=False)["input_ids"], dtype=torch.long) for p in prompts]
        completions = sample_completions(model, ids, n, max_new_tokens=self.max_new_tokens,
                                         temperature=self.temperature if temperature is None else temperature,
                                         top_p=self.top_p if top_p is None else top_p,
                                         eos_token_id=tok.eos_token_id, autocast=self.autocast, greedy=greedy,
                                         max_rows=self.batch_size)
        model.train(was_training)
        return [[Sample(p, c, tok.decode(c, skip_special_tokens=True)) for c in group]
                for p, group in zip(ids, completions)]


def rollout_groups(engine: RolloutEngine, model, tokenizer, questions: Sequence[Question], group_size: int,
                   reward: SafeReward, *, step: int, temperature: float, micro_batch_size: int = 16,
                   autocast: bool = False, stopwatch: Stopwatch | None = None,
                   behaviour_logprobs: bool = True, checkpointing: bool = False) -> list[Group]:
    """Sample G completions per question, score them, and attach behaviour log-probs μ.

    With a ``stopwatch``, seconds in the reward function are charged to its 'time/reward' phase.
    ``behaviour_logprobs=False`` skips the μ pass (rollouts carry None): the trainer's update computes
    μ for the fresh rows it trains, and reference groups that are only labels never need it.
    ``checkpointing``: the update's setting, so μ is computed the way the update computes π.
    """
    if not questions:
        return []
    prompts = [render_prompt(q, tokenizer) for q in questions]
    per_prompt = engine.sample(prompts, group_size)
    flat = [s for group in per_prompt for s in group]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        mus = (completion_logprobs(model, [s.prompt_ids for s in flat], [s.completion_ids for s in flat],
                                   temperature, micro_batch_size, autocast, checkpointing=checkpointing)
               if behaviour_logprobs else [None] * len(flat))
    model.train(was_training)
    groups, i = [], 0
    with stopwatch("time/reward") if stopwatch is not None else contextlib.nullcontext():
        for q, samples in zip(questions, per_prompt):
            rollouts = []
            for s in samples:
                r, ok = reward(s.text, q)
                mu = mus[i].detach().float().cpu() if mus[i] is not None else None
                rollouts.append(Rollout(q.id, s.text, s.prompt_ids, s.completion_ids, mu, r, ok))
                i += 1
            groups.append(Group(q, tuple(rollouts), step))
    return groups


def measure_correct(engine: RolloutEngine, tokenizer, questions: Sequence[Question], samples: int,
                    reward: SafeReward, *, greedy: bool = False, temperature: float | None = None,
                    top_p: float | None = None) -> np.ndarray:
    """(N, samples) bool: whether each of ``samples`` completions per question is correct (``greedy``: one
    argmax completion each; ``temperature`` / ``top_p``: sampling settings other than the engine's).
    The one place a question set's pass rates / difficulties are measured."""
    if not questions:
        return np.zeros((0, 1 if greedy else samples), dtype=bool)
    prompts = [render_prompt(q, tokenizer) for q in questions]
    per_prompt = (engine.sample(prompts, 1, greedy=True) if greedy
                  else engine.sample(prompts, samples, temperature=temperature, top_p=top_p))
    return np.array([[reward(s.text, q)[1] for s in group] for q, group in zip(questions, per_prompt)], dtype=bool)


def pass_rate_standard_error(correct: np.ndarray) -> float:
    """Sampling standard error of the mean pass rate of a fixed question set, from (N, k) correctness.

    With p̂_q the share correct of question q's k samples, each p̂_q has variance p_q(1 - p_q)/k, estimated
    without bias by p̂_q(1 - p̂_q)/(k - 1); the mean over N questions has SE = sqrt(Σ_q p̂_q(1 - p̂_q)/(k - 1)) / N.
    With k = 1 (greedy or one sample) per-question spread is unknown: p̄(1 - p̄)/N is used instead
    (binomial over all completions). The question set itself is fixed, so its choice adds no term.
    """
    n, k = correct.shape
    if n == 0:
        return float("nan")
    if k == 1:
        p = float(correct.mean())
        return math.sqrt(p * (1 - p) / n)
    p_q = correct.mean(axis=1)                                                   # (N,)
    return math.sqrt(float((p_q * (1 - p_q)).sum()) / (k - 1)) / n


def evaluate_pass_rate(engine: RolloutEngine, tokenizer, questions: Sequence[Question], samples: int,
                       reward: SafeReward, *, greedy: bool = False, temperature: float | None = None,
                       top_p: float | None = None) -> tuple[float, float]:
    """Held-out (pass rate, its standard error): mean share of correct completions over ``samples`` per
    question, sampled at ``temperature`` / ``top_p`` (``greedy``: one argmax completion per question)."""
    if not questions:
        return float("nan"), float("nan")
    correct = measure_correct(engine, tokenizer, questions, samples, reward, greedy=greedy,
                              temperature=temperature, top_p=top_p)
    return float(correct.mean()), pass_rate_standard_error(correct)

"""Rollouts: sample G completions per question and score them into Group records.

Paper §2 (GRPO groups) and §4 (rollout replay needs the behaviour log-probs μ of every token).

Deviations / decisions:
  1. μ is computed by a forward pass over the sampled tokens at the sampling temperature
     (logits / T), not taken from ``generate`` scores, which top-p may alter (METHOD §4). The same
     function :func:`completion_logprobs` later gives π_old and π_θ, so all three agree on
     tokenisation, padding and temperature; on fresh rows π_old = μ exactly.
  2. A completion is cut after its first EOS (EOS kept, so the model learns to stop); a completion
     that hits ``max_new_tokens`` is kept as is. An empty completion (C = 0) is scored as "" and
     contributes no tokens to the loss.
  3. Engines implement :class:`RolloutEngine`; ``HFGenerateEngine`` is the default, a vLLM engine
     plugs in behind the same ``sample`` / ``sync_weights`` verbs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .data import render_prompt
from .records import Group, Question, Rollout
from .rewards import SafeReward
from .timing import Stopwatch


@dataclass(frozen=True)
class Sample:
    prompt_ids: torch.Tensor      # (P,)
    completion_ids: torch.Tensor  # (C,)
    text: str


class RolloutEngine(Protocol):
    def sample(self, prompts: Sequence[str], n: int) -> list[list[Sample]]:
        """Return n samples per prompt, completions cut after the first EOS."""

    def sync_weights(self) -> None:
        """Called after every policy update so the engine samples from the current policy."""


def completion_logprobs(model, prompt_ids: Sequence[torch.Tensor], completion_ids: Sequence[torch.Tensor],
                        temperature: float, micro_batch_size: int = 16,
                        autocast: bool = False) -> list[torch.Tensor]:
    """log π(c_t | prompt, c_<t) at logits / T for every completion token; grads flow if enabled.

    Sequences are right-padded so positions start at 0 for every row; the LM head is applied only
    to the positions that predict completion tokens (full-vocab logits for prompts are never built).
    """
    out: list[torch.Tensor] = []
    base, head = model.base_model, model.get_output_embeddings()
    device = next(model.parameters()).device
    for start in range(0, len(prompt_ids), micro_batch_size):
        ps, cs = prompt_ids[start:start + micro_batch_size], completion_ids[start:start + micro_batch_size]
        seqs = [torch.cat([p, c]) for p, c in zip(ps, cs)]
        ids = pad_sequence(seqs, batch_first=True, padding_value=0).to(device)  # (b, T)
        mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, T, H)
            # position P+t-1 predicts completion token t
            rows = torch.cat([torch.full((len(c),), i) for i, c in enumerate(cs)]).long()
            cols = torch.cat([torch.arange(len(p) - 1, len(p) - 1 + len(c)) for p, c in zip(ps, cs)]).long()
            logits = head(hidden[rows, cols]).float() / temperature  # (n_tok, V)
        targets = torch.cat(list(cs)).to(device)
        lp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (n_tok,)
        out.extend(lp.split([len(c) for c in cs]))
    return out


class HFGenerateEngine:
    """Sampling with ``model.generate`` (left padding, chat template via ``render_prompt``)."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float, top_p: float = 1.0,
                 batch_size: int = 64, autocast: bool = False):
        self.model, self.tokenizer, self.autocast = model, tokenizer, autocast
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size = batch_size

    def sync_weights(self) -> None:
        pass  # samples from the live model

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int) -> list[list[Sample]]:
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        flat = [p for p in prompts for _ in range(n)]
        samples: list[Sample] = []
        eos = tok.eos_token_id
        for start in range(0, len(flat), self.batch_size):
            enc = tok(flat[start:start + self.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(model.device)
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                gen = model.generate(**enc, do_sample=True, temperature=self.temperature, top_p=self.top_p,
                                     top_k=0, max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id,
                                     eos_token_id=eos)
            width = enc.input_ids.shape[1]
            for row in range(gen.shape[0]):
                prompt = enc.input_ids[row][enc.attention_mask[row].bool()].cpu()
                completion = gen[row, width:].cpu()
                hits = (completion == eos).nonzero()
                if len(hits):
                    completion = completion[: int(hits[0]) + 1]
                samples.append(Sample(prompt, completion, tok.decode(completion, skip_special_tokens=True)))
        model.train(was_training)
        return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]


def rollout_groups(engine: RolloutEngine, model, tokenizer, questions: Sequence[Question], group_size: int,
                   reward: SafeReward, *, step: int, temperature: float, micro_batch_size: int = 16,
                   autocast: bool = False, stopwatch: Stopwatch | None = None,
                   behaviour_logprobs: bool = True) -> list[Group]:
    """Sample G completions per question, score them, and attach behaviour log-probs μ.

    With a ``stopwatch``, seconds in the reward function are charged to its 'time/reward' phase.
    ``behaviour_logprobs=False`` skips the μ pass (rollouts carry None): the trainer's update computes
    μ for the fresh rows it trains, and reference groups that are only labels never need it.
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
                                   temperature, micro_batch_size, autocast) if behaviour_logprobs else [None] * len(flat))
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


def evaluate_pass_rate(engine: RolloutEngine, tokenizer, questions: Sequence[Question], samples: int,
                       reward: SafeReward) -> float:
    """Held-out pass rate: mean share of correct completions over ``samples`` per question."""
    if not questions:
        return float("nan")
    per_prompt = engine.sample([render_prompt(q, tokenizer) for q in questions], samples)
    correct = [reward(s.text, q)[1] for q, group in zip(questions, per_prompt) for s in group]
    return sum(correct) / len(correct)

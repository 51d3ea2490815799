"""Shared-prompt passes against plain full forward passes and HF generate.

Run: .venv/bin/python -m pytest tests/test_prefix.py
"""
import numpy as np
import pytest
import torch

from dotslab.models import load_policy
from dotslab.prefix import _common_prefix_length, completion_logprobs, sample_completions

T = 0.7


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_policy("tiny", seed=2)
    return model.eval(), tok


def full_forward_logprobs(model, prompt, completion):
    """One plain ``model(ids).logits`` pass over prompt + completion; (C,)."""
    ids = torch.cat([prompt, completion])[None]
    logits = model(input_ids=ids).logits[0].float() / T
    p, c = len(prompt), len(completion)
    return torch.log_softmax(logits[p - 1:p - 1 + c], -1)[torch.arange(c), completion]


def rows_with_shared_prompts():
    g = torch.Generator().manual_seed(0)
    system = torch.randint(3, 40, (6,), generator=g)     # like a chat template's system turn: shared by all prompts
    prompts = [torch.cat([system, torch.randint(3, 40, (n,), generator=g)]) for n in (3, 1, 7)]
    prompts.append(prompts[1][:-1].clone())              # a prompt that is the others' common prefix
    rows = []
    for k, p in enumerate(prompts):            # groups of 3 rows, completions of different lengths, one empty
        for c in (5, 1, 7 if k else 0):
            rows.append((p, torch.randint(3, 40, (c,), generator=g)))
    rows.append((torch.randint(3, 40, (5,), generator=g), torch.randint(3, 40, (4,), generator=g)))  # no shared start
    return rows


@pytest.mark.parametrize("micro_batch_size", [2, 4, 16])
def test_logprobs_and_gradients_match_full_passes(tiny, micro_batch_size):
    model, _ = tiny
    rows = rows_with_shared_prompts()
    order = [4, 0, 12, 7, 2, 9, 8, 1, 11, 6, 3, 10, 5]   # groups interleaved: rows are matched by prompt, not position
    rows = [rows[i] for i in order]
    model.zero_grad()
    expected = [full_forward_logprobs(model, p, c) for p, c in rows]
    sum(e.sum() for e in expected).backward()
    expected_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = completion_logprobs(model, [p for p, _ in rows], [c for _, c in rows], T, micro_batch_size)
    for e, x in zip(expected, got):
        assert x.shape == e.shape and torch.allclose(x, e, atol=1e-5)
    sum(x.sum() for x in got).backward()
    for e, p in zip(expected_grad, model.parameters()):
        assert torch.allclose(p.grad, e, atol=1e-5)


def test_greedy_sampling_matches_hf_generate(tiny):
    model, tok = tiny
    texts = ("What is 3+4?", "Hi", "Compute 12 - 5 + 3 please.")
    system = [f"You are a careful calculator. {t}" for t in texts]   # like a chat template's shared system turn
    for batch in (texts, system):
        prompts = [tok(text, add_special_tokens=False, return_tensors="pt").input_ids[0] for text in batch]
        got = sample_completions(model, prompts, 2, max_new_tokens=8, temperature=T, top_p=1.0,
                                 eos_token_id=tok.eos_token_id, greedy=True)
        for p, group in zip(prompts, got):
            ref = model.generate(p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                                 max_new_tokens=8, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)[0, len(p):]
            hits = (ref == tok.eos_token_id).nonzero()
            ref = ref[: int(hits[0]) + 1] if len(hits) else ref
            assert all(torch.equal(c, ref) for c in group)
    assert _common_prefix_length(prompts) > 5    # the second batch did share its first tokens


@pytest.mark.parametrize("top_p", [1.0, 0.6])
def test_first_token_frequencies_follow_the_tempered_distribution(tiny, top_p):
    model, tok = tiny
    prompt = tok("What is 2+2?", add_special_tokens=False, return_tensors="pt").input_ids[0]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=prompt[None]).logits[0, -1].float() / T, -1)
    if top_p < 1:  # the nucleus: most likely tokens until their mass reaches top_p
        sorted_p, order = probs.sort(descending=True)
        keep = order[(sorted_p.cumsum(0) - sorted_p) < top_p]
        probs = torch.zeros_like(probs).index_fill(0, keep, 1.0) * probs
        probs /= probs.sum()
    torch.manual_seed(0)
    n = 4000
    firsts = torch.stack([c[0] for c in sample_completions(model, [prompt], n, max_new_tokens=1, temperature=T,
                                                            top_p=top_p, eos_token_id=tok.eos_token_id,
                                                            max_rows=n)[0]])
    freq = torch.bincount(firsts, minlength=len(probs)).double() / n
    assert float(freq[probs == 0].sum()) == 0.0                      # nothing outside the nucleus
    se = torch.sqrt(probs.double() * (1 - probs.double()) / n)
    assert bool(((freq - probs.double()).abs() <= 5 * se + 1e-9).all())

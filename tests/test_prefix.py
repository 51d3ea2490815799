"""Shared-prompt passes against plain full forward passes and HF generate.

Run: .venv/bin/python -m pytest tests/test_prefix.py
"""
import numpy as np
import pytest
import torch

from dotslab.models import load_policy
import dotslab.prefix as prefix
from dotslab.prefix import TargetLogprobs, _common_prefix_length, completion_logprobs, sample_completions

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


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("micro_batch_size", [2, 4, 16])
def test_logprobs_and_gradients_match_full_passes(tiny, micro_batch_size, checkpointing, monkeypatch):
    model, _ = tiny
    monkeypatch.setattr(prefix, "HEAD_CHUNK", 4)   # several head chunks per pass, the last one short
    monkeypatch.setattr(prefix, "VOCAB_BLOCK", 7)
    rows = rows_with_shared_prompts()
    order = [4, 0, 12, 7, 2, 9, 8, 1, 11, 6, 3, 10, 5]   # groups interleaved: rows are matched by prompt, not position
    rows = [rows[i] for i in order]
    model.zero_grad()
    expected = [full_forward_logprobs(model, p, c) for p, c in rows]
    sum(e.sum() for e in expected).backward()
    expected_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = completion_logprobs(model, [p for p, _ in rows], [c for _, c in rows], T, micro_batch_size,
                              checkpointing=checkpointing)
    for e, x in zip(expected, got):
        assert x.shape == e.shape and torch.allclose(x, e, atol=1e-5)
    sum(x.sum() for x in got).backward()
    for e, p in zip(expected_grad, model.parameters()):
        assert torch.allclose(p.grad, e, atol=1e-5)


def test_checkpointing_keeps_less_and_runs_every_layer_again_in_the_backward(tiny, monkeypatch):
    """Decision 4 at work: what the forward keeps for the backward (counted by an outer saved-tensor hook,
    which sees what checkpointed regions do not hand to their own) shrinks, and the backward runs every
    decoder layer of every pass once more."""
    model, _ = tiny
    rows = rows_with_shared_prompts()
    layer_type = type(model.base_model.layers[0])
    calls = {"n": 0}
    plain_forward = layer_type.forward

    def counted(self, *a, **kw):
        calls["n"] += 1
        return plain_forward(self, *a, **kw)
    monkeypatch.setattr(layer_type, "forward", counted)
    kept, runs = {}, {}
    for checkpointing in (False, True):
        nbytes = []

        def pack(t):
            nbytes.append(t.untyped_storage().nbytes())
            return t
        calls["n"] = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            got = completion_logprobs(model, [p for p, _ in rows], [c for _, c in rows], T, 16,
                                      checkpointing=checkpointing)
        forward_calls = calls["n"]
        sum(x.sum() for x in got).backward()
        model.zero_grad()
        kept[checkpointing], runs[checkpointing] = sum(nbytes), (forward_calls, calls["n"] - forward_calls)
    n_layers = len(model.base_model.layers)
    assert runs[False][1] == 0 and runs[True][0] == runs[False][0] > 0
    assert runs[True][1] == runs[True][0], "the backward recomputes each layer run once"
    assert runs[True][0] % n_layers == 0
    assert kept[True] < 0.5 * kept[False], kept


def test_with_checkpointing_passes_with_and_without_grads_give_the_same_numbers(tiny, monkeypatch):
    """μ and π_old come from no-grad passes and π_θ from a pass with grads: under bf16 autocast they must
    be the same numbers at the same weights (so c and ρ are exactly 1 before any step), which takes the
    same head computation in both (a matmul over other row counts may round differently)."""
    model, _ = tiny
    calls = []
    forward = TargetLogprobs.forward

    def counted(ctx, *a):
        calls.append(torch.is_grad_enabled())
        return forward(ctx, *a)
    monkeypatch.setattr(TargetLogprobs, "forward", staticmethod(counted))
    rows = rows_with_shared_prompts()
    args = ([p for p, _ in rows], [c for _, c in rows], T, 16)
    with torch.no_grad():
        no_grad = completion_logprobs(model, *args, autocast=True, checkpointing=True)
    n_passes = len(calls)
    with_grad = completion_logprobs(model, *args, autocast=True, checkpointing=True)
    assert n_passes > 0 and len(calls) == 2 * n_passes, "the chunked head runs in both"
    assert all(torch.equal(a, b.detach()) for a, b in zip(no_grad, with_grad))


def test_checkpointing_a_model_without_a_layers_list_names_the_setting_to_turn_off():
    model = load_policy("tiny", seed=2)[0].eval()
    model.base_model.h = model.base_model.layers             # like GPT-2, whose blocks are `h`
    del model.base_model.layers
    rows = rows_with_shared_prompts()[:3]
    with pytest.raises(ValueError, match="-p gradient_checkpointing false"):
        completion_logprobs(model, [p for p, _ in rows], [c for _, c in rows], T, 16, checkpointing=True)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_chunked_head_logprobs_and_gradients_by_hand(monkeypatch, dtype):
    """TargetLogprobs against log_softmax over the full logits, differentiated by autograd, with the
    matmul in the same precision; chunks of 3 tokens and vocabulary blocks of 4 (both with a short last one)."""
    monkeypatch.setattr(prefix, "HEAD_CHUNK", 3)
    monkeypatch.setattr(prefix, "VOCAB_BLOCK", 4)
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(10, 6, generator=g), torch.randn(11, 6, generator=g)
    targets, upstream = torch.randint(0, 11, (10,), generator=g), torch.randn(10, generator=g)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    got = TargetLogprobs.apply(h1, w1, targets, 0.7, dtype)
    (got * upstream).sum().backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    low = dtype or torch.float32
    logits = (h2.to(low) @ w2.to(low).T).float() / 0.7
    expected = torch.log_softmax(logits, -1)[torch.arange(10), targets]
    (expected * upstream).sum().backward()
    tol = dict(atol=1e-5, rtol=1e-5) if dtype is None else dict(atol=2e-2, rtol=2e-2)
    assert torch.allclose(got, expected, **tol)
    assert torch.allclose(h1.grad, h2.grad, **tol) and torch.allclose(w1.grad, w2.grad, **tol)
    assert h1.grad.abs().min() > 0 and (w1.grad != 0).sum() > 50    # the gradients are not trivially zero


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

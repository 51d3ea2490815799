"""Shared-prompt forward passes: a group's G completions reuse one pass over their common prompt.

Not from the paper; a cost decision for CPU (and any HF-generate run). In a GRPO group the G rows
share the prompt, and with a chat template the prompt is most of each row (about 50 of 70 tokens
for the arithmetic tasks). Attention is causal, so the prompt's keys and values do not depend on
what follows; computing them once per group and letting every completion attend to them gives
the same log-probs and the same gradients as G full forward passes (the gradient through the
shared prompt is the sum over the rows, exactly as in separate passes), for P + G·C tokens of work
instead of G·(P + C).

  - :func:`completion_logprobs`: log π(c_t | prompt, c_<t) at logits / T, with or without grad;
    it gives μ, π_old and π_θ alike (docs/method.md §5), so all three use the same numerics.
  - :func:`sample_completions`: temperature / top-p sampling (or greedy) of n completions per
    prompt, prefilling each prompt once.

Decisions:
  1. Within a pass, the tokens every prompt starts with (the chat template's system turn, about half
     of each prompt here) are encoded once; the rest of each prompt follows right-padded, then the
     completions. Position ids are each row's true positions and padding is masked, so no padding
     changes a number that reaches a real token.
  2. The LM head runs only at positions that predict completion tokens (the last prompt position and
     the completion's own positions), never over prompt positions.
  3. Top-p keeps the most likely tokens until their mass reaches p (at least one); no top-k.
  4. With ``checkpointing`` (and grads on), a pass keeps only what it needs to recompute. Every decoder
     layer runs under activation checkpointing, and autocast does not cache its bfloat16 weight copies
     (a layer's copies then live only while that layer runs); the backward runs each layer forward
     again, so the numbers are the same and the update costs one more forward. The LM head and log
     softmax run in chunks of ``HEAD_CHUNK`` tokens (:class:`TargetLogprobs`), so no pass holds the
     logits of every token at once. An input embedding that shares its weight with the head gives
     sparse gradients (the rows looked up) instead of a dense (V, H) one per pass.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

HEAD_CHUNK = 128
"""Tokens per LM-head chunk under checkpointing (decision 4): a chunk's fp32 logits are 128 × V × 4 bytes
(25 MB for SmolLM2's V = 49,152)."""
VOCAB_BLOCK = 8192
"""Vocabulary rows per block when :class:`TargetLogprobs` adds a chunk's weight gradient."""


def _cache_keyword(base) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); accept both."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_kwargs(base, cache) -> dict:
    """The keyword that hands ``cache`` to ``base`` (none when there is no cache yet)."""
    return {_cache_keyword(base): cache} if cache is not None else {}


def _returned_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _common_prefix_length(prompts: Sequence[torch.Tensor]) -> int:
    """Tokens every prompt starts with (a chat template's system turn), leaving each at least one of its own."""
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts)
    first = prompts[0][:shortest]
    same = torch.stack([p[:shortest] == first for p in prompts]).all(0)       # (shortest,)
    differ = (~same).nonzero()
    return min(int(differ[0]) if len(differ) else shortest, shortest - 1)


def encode_prompts(base, prompts: Sequence[torch.Tensor], device, cache=None):
    """One pass over U prompts: (last prompt hidden state (U, H), cache, prompt mask (U, P), lengths (U,)).

    The tokens all prompts start with are encoded once and shared (decision 1); the rest of each
    prompt follows, right-padded, so the mask may have holes that position ids step over. ``cache``:
    an empty cache to fill (None: the model makes one).
    """
    shared = _common_prefix_length(prompts)
    rest = [p[shared:] for p in prompts]
    width = max(len(r) for r in rest)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    rest_mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, r in enumerate(rest):
        ids[i, :len(r)], rest_mask[i, :len(r)] = r, 1
    ids, rest_mask = ids.to(device), rest_mask.to(device)
    owner = torch.zeros(len(prompts), dtype=torch.long, device=device)
    prefix_mask = torch.ones(len(prompts), shared, dtype=torch.long, device=device)
    if shared:
        out = base(input_ids=prompts[0][None, :shared].to(device), use_cache=True, **_cache_kwargs(base, cache))
        cache = _returned_cache(out)
        cache.batch_select_indices(owner)
    start = torch.full((len(prompts),), shared, dtype=torch.long, device=device)
    hidden, cache = continue_from(base, cache, prefix_mask, ids, rest_mask, start)  # (U, width, H)
    lengths = rest_mask.sum(-1)                                                 # (U,)
    last = hidden[torch.arange(len(prompts), device=device), lengths - 1]      # (U, H)
    return last, cache, torch.cat([prefix_mask, rest_mask], dim=1), shared + lengths


def continue_from(base, cache, prompt_mask: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor,
                  start: torch.Tensor) -> tuple[torch.Tensor, object]:
    """(hidden states (R, L, H) of ``tokens`` (R, L) after the cached tokens, the grown cache); ``cache``
    None: nothing cached yet. ``start`` (R,) is each row's position of ``tokens[:, 0]``, which need not
    be the mask's width when the mask has holes."""
    mask = torch.cat([prompt_mask, token_mask], dim=1)                          # (R, P + L)
    positions = start[:, None] + torch.arange(tokens.shape[1], device=tokens.device)
    out = base(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True,
               **_cache_kwargs(base, cache))
    return out.last_hidden_state, _returned_cache(out)


def _units(prompt_ids: Sequence[torch.Tensor], limit: int) -> list[tuple[torch.Tensor, list[int]]]:
    """Rows grouped by identical prompt, in first-seen order; a group larger than ``limit`` is split."""
    by_prompt: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompt_ids):
        by_prompt.setdefault(tuple(p.tolist()), []).append(i)
    return [(prompt_ids[rows[0]], rows[k:k + limit]) for rows in by_prompt.values() for k in range(0, len(rows), limit)]


def completion_logprobs(model, prompt_ids: Sequence[torch.Tensor], completion_ids: Sequence[torch.Tensor],
                        temperature: float, micro_batch_size: int = 16,
                        autocast: bool = False, checkpointing: bool = False) -> list[torch.Tensor]:
    """log π(c_t | prompt, c_<t) at logits / T for every completion token, one (C_i,) tensor per row.

    Grads flow if enabled. Rows with the same prompt share one prompt pass; a pass holds at most
    ``micro_batch_size`` rows. Empty completions give empty tensors. ``checkpointing``: decision 4;
    without grads only the chunked head applies, so passes with and without grads (μ, π_old, π_θ)
    compute the same numbers.
    """
    base, head = model.base_model, model.get_output_embeddings()
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(prompt_ids)
    for i, c in enumerate(completion_ids):
        if len(c) == 0:
            out[i] = torch.zeros(0, device=device)
    live = [i for i in range(len(prompt_ids)) if len(completion_ids[i]) > 0]
    units = [(p, [live[j] for j in rows]) for p, rows in _units([prompt_ids[i] for i in live], micro_batch_size)]
    batch: list = []
    for unit in units + [None]:
        if batch and (unit is None or sum(len(r) for _, r in batch) + len(unit[1]) > micro_batch_size):
            _logprobs_pass(base, head, batch, completion_ids, temperature, autocast, checkpointing, device, out)
            batch = []
        if unit is not None:
            batch.append(unit)
    return out


def _logprobs_pass(base, head, units, completion_ids, temperature, autocast, checkpointing, device, out) -> None:
    recompute = checkpointing and torch.is_grad_enabled()
    rows = [i for _, r in units for i in r]
    owner = torch.tensor([u for u, (_, r) in enumerate(units) for _ in r], device=device)   # (R,)
    comps = [completion_ids[i].to(device) for i in rows]
    width = max(len(c) for c in comps)
    tokens = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    token_mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for k, c in enumerate(comps):
        tokens[k, :len(c)], token_mask[k, :len(c)] = c, 1
    cache = DynamicCache(config=base.config) if recompute else None
    with (torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=not recompute),
          _recomputed_layers(base, cache) if recompute else contextlib.nullcontext(),
          _sparse_lookups(base, head) if recompute else contextlib.nullcontext()):
        last, cache, prompt_mask, lengths = encode_prompts(base, [p for p, _ in units], device, cache)
        cache.batch_select_indices(owner)
        hidden, _ = continue_from(base, cache, prompt_mask[owner], tokens, token_mask, lengths[owner])  # (R, L, H)
        # completion token t is predicted by the last prompt position (t = 0) or by completion position t - 1
        picked = torch.cat([torch.cat([last[owner[k]][None], hidden[k, :len(c) - 1]]) for k, c in enumerate(comps)])
    targets = torch.cat(comps)                                                                      # (n_tok,)
    if checkpointing and isinstance(head, torch.nn.Linear) and head.bias is None:  # with or without grads
        logp = TargetLogprobs.apply(picked, head.weight, targets, temperature,
                                    torch.bfloat16 if autocast else None)                           # (n_tok,)
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = head(picked)
        logits = logits.float() / temperature                                                       # (n_tok, V)
        logp = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)      # (n_tok,)
    for i, part in zip(rows, logp.split([len(c) for c in comps])):
        out[i] = part


class TargetLogprobs(torch.autograd.Function):
    """log softmax(h Wᵀ / T)[target] per token, ``HEAD_CHUNK`` tokens at a time (decision 4).

    (n_tok, H) hidden states, (V, H) head weight, (n_tok,) targets -> (n_tok,). Neither pass holds more
    than one chunk's (HEAD_CHUNK, V) logits: the backward recomputes them from the saved hidden states
    and log-normalisers. With the derivative of log softmax, for upstream gradient g of a token with
    target y:
        ∂/∂logit_v = g·(1[v = y] − softmax_v) / T,   ∂h = (∂logits) W,   ∂W = Σ_tokens (∂logits)ᵀ h.
    ``dtype`` bfloat16: the two matmuls run in bfloat16 and their results are taken back to fp32, as
    under autocast; None: fp32 throughout.

    When the weight is a parameter (a leaf), its gradient is added chunk by chunk into ``weight.grad``
    itself and autograd gets none. Handed to autograd, that (V, H) gradient would wait in a buffer until
    the backward reaches the input embedding the head shares its weight with, at the very end, and sit
    beside the full gradients there (113 MB for SmolLM2). So this function is for ``.backward()``:
    ``torch.autograd.grad`` would not see the weight's gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, dtype):
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.detach().to(dtype or weight.dtype)
            out, lse = torch.empty(len(targets), device=hidden.device), torch.empty(len(targets), device=hidden.device)
            for k in range(0, len(targets), HEAD_CHUNK):
                logits = _chunk_logits(hidden[k:k + HEAD_CHUNK], w, temperature)                    # (n, V)
                lse[k:k + HEAD_CHUNK] = torch.logsumexp(logits, dim=-1)
                out[k:k + HEAD_CHUNK] = logits.gather(1, targets[k:k + HEAD_CHUNK, None]).squeeze(1) - lse[k:k + HEAD_CHUNK]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.temperature, ctx.dtype = temperature, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, lse = ctx.saved_tensors
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.detach().to(ctx.dtype or weight.dtype)
            grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
            need_w = ctx.needs_input_grad[1]
            direct = need_w and weight.is_leaf   # a parameter: add into its .grad (see above)
            if direct and weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            grad_w = weight.grad if direct else torch.zeros_like(weight) if need_w else None
            for k in range(0, len(targets), HEAD_CHUNK):
                h, g, t = hidden[k:k + HEAD_CHUNK], grad_out[k:k + HEAD_CHUNK], targets[k:k + HEAD_CHUNK]
                d = _chunk_logits(h, w, ctx.temperature).sub_(lse[k:k + HEAD_CHUNK, None]).exp_()     # softmax (n, V)
                d.mul_(-g[:, None])
                d[torch.arange(len(t), device=d.device), t] += g
                d = d.div_(ctx.temperature).to(w.dtype)                                             # ∂logits (n, V)
                grad_h[k:k + HEAD_CHUNK] = d @ w
                if need_w:
                    h = h.to(w.dtype)
                    for v in range(0, len(w), VOCAB_BLOCK):  # no (V, H) temporary in the matmul dtype
                        grad_w[v:v + VOCAB_BLOCK].add_(d[:, v:v + VOCAB_BLOCK].T @ h)
        return grad_h, None if direct else grad_w, None, None, None


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, H) hidden states, (V, H) weight in the matmul dtype -> fp32 logits / T, (n, V)."""
    return (h.to(w.dtype) @ w.T).float().div_(temperature)


@contextlib.contextmanager
def _sparse_lookups(base, head):
    """Decision 4: a tied input embedding gives sparse gradients (only the rows looked up) while the block is open."""
    embedding = base.get_input_embeddings()
    tied = isinstance(embedding, torch.nn.Embedding) and embedding.weight is getattr(head, "weight", None)
    before = embedding.sparse if tied else None
    if tied:
        embedding.sparse = True
    try:
        yield
    finally:
        if tied:
            embedding.sparse = before


@contextlib.contextmanager
def _recomputed_layers(base, cache):
    """Decision 4: every decoder layer of ``base`` runs under activation checkpointing while the block is open.

    Layer i reads and extends cache layer i. Its first run writes the cache as usual; when the backward
    runs it again, the cache layer is put back, for that run only, to what the first run found there,
    so the recomputed layer sees the same keys and the cache is not extended twice. When the block
    closes, each cache layer goes back to what the last pass found: what that pass added is read by
    nothing after it, and a recompute gets its keys from what it found.
    """
    layers, cache_layers = list(getattr(base, "layers", None) or []), list(cache.layers)
    if not layers or len(layers) != len(cache_layers):
        raise ValueError(f"gradient_checkpointing needs a decoder with one `layers` entry per cache layer; "
                         f"{type(base).__name__} has {len(layers)} for {len(cache_layers)} cache layers. "
                         "Run with -p gradient_checkpointing false.")
    last_found: list[dict] = [dict(vars(c)) for c in cache_layers]
    for i, (layer, cache_layer) in enumerate(zip(layers, cache_layers)):
        layer.forward = _checkpointed(layer.forward, cache_layer, last_found, i)
    try:
        yield
    finally:  # the instance attribute goes; the class's forward shows through again
        for layer, cache_layer, found in zip(layers, cache_layers, last_found):
            del layer.forward
            _set_state(cache_layer, found)


def _checkpointed(forward, cache_layer, last_found: list[dict], i: int):
    def run(*args, **kwargs):
        found = last_found[i] = dict(vars(cache_layer))   # the state this run finds (tensors are not copied)
        first = [True]

        def body(*a, **kw):
            if first[0]:
                first[0] = False
                return forward(*a, **kw)
            now = dict(vars(cache_layer))
            _set_state(cache_layer, found)
            try:
                return forward(*a, **kw)
            finally:
                _set_state(cache_layer, now)
        return checkpoint(body, *args, use_reentrant=False, **kwargs)
    return run


def _set_state(obj, state: dict) -> None:
    vars(obj).clear()
    vars(obj).update(state)


def _sample_token(logits: torch.Tensor, temperature: float, top_p: float, greedy: bool) -> torch.Tensor:
    """One token per row from softmax(logits / T) restricted to the top-p mass (or the argmax); (R,)."""
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)                         # (R, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p                          # mass before it already >= p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        return order.gather(1, torch.multinomial(sorted_p, 1)).squeeze(1)
    return torch.multinomial(probs, 1).squeeze(1)


@torch.no_grad()
def sample_completions(model, prompt_ids: Sequence[torch.Tensor], n: int, *, max_new_tokens: int,
                       temperature: float, top_p: float, eos_token_id: int, autocast: bool = False,
                       greedy: bool = False, max_rows: int = 64) -> list[list[torch.Tensor]]:
    """n completions per prompt (token ids, cut after the first EOS, which is kept); one prefill per prompt.

    Uses torch's global RNG (seeded by the trainer each step). ``max_rows`` bounds the rows decoded together.
    """
    base, head = model.base_model, model.get_output_embeddings()
    device = next(model.parameters()).device
    per_chunk = max(1, max_rows // n)
    results: list[list[torch.Tensor]] = []
    for start in range(0, len(prompt_ids), per_chunk):
        chunk = prompt_ids[start:start + per_chunk]
        owner = torch.arange(len(chunk), device=device).repeat_interleave(n)    # (R,)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            last, cache, prompt_mask, lengths = encode_prompts(base, chunk, device)
            cache.batch_select_indices(owner)
            logits = head(last).float()[owner]                                  # (R, V)
            mask, position = prompt_mask[owner], lengths[owner]
            done = torch.zeros(len(owner), dtype=torch.bool, device=device)
            steps = []
            for _ in range(max_new_tokens):
                token = _sample_token(logits, temperature, top_p, greedy)
                token = torch.where(done, torch.full_like(token, eos_token_id), token)
                steps.append(token)
                alive = ~done
                done = done | (token == eos_token_id)
                if bool(done.all()) or len(steps) == max_new_tokens:
                    break
                hidden, cache = continue_from(base, cache, mask, token[:, None], alive.long()[:, None], position)
                mask, position = torch.cat([mask, alive.long()[:, None]], dim=1), position + 1
                logits = head(hidden[:, -1]).float()
        tokens = torch.stack(steps, dim=1).cpu() if steps else torch.zeros(len(owner), 0, dtype=torch.long)
        for u in range(len(chunk)):
            group = []
            for row in tokens[u * n:(u + 1) * n]:
                hits = (row == eos_token_id).nonzero()
                group.append(row[: int(hits[0]) + 1] if len(hits) else row)
            results.append(group)
    return results

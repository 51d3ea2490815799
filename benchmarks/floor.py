"""The compute floor of a GRPO step: its FLOPs over the machine's measured matrix-multiply rate.

Not from the paper; the yardstick of the peer benchmark (:mod:`benchmarks.peer`). A step samples its
completions (2P FLOPs per generated token, P the parameter count), computes the behaviour log-probs
μ (2P per prompt + completion token) and trains (6P per prompt + completion token: forward and
backward). The rate is what ``torch.mm`` reaches on the policy's own matrix shapes, measured in the
process being judged, at its thread count, so a multiple of the floor compares implementations and
machines on the same footing.

Decisions:
  1. P counts tied weights once (``model.parameters()`` yields a shared tensor once): the tied
     embedding is the LM head's matmul, and the lookup costs no FLOPs. Attention scores are left out
     (short sequences: a few percent of the MLP at 100 tokens).
  2. The rate is Σ FLOPs / Σ best seconds over the given shapes (best of ``repeats`` after a warm-up
     call): the floor is a lower bound on time, so it takes the machine at its best.
"""
from __future__ import annotations

import time
from typing import Any, Sequence


def step_floor_flops(params: int, generated: int, prompt_completion: int) -> float:
    """FLOPs of a step: 2·P per generated token, 2·P per μ-pass token, 6·P per trained token (forward + backward)."""
    return 2.0 * params * generated + 2.0 * params * prompt_completion + 6.0 * params * prompt_completion


def matmul_rate(shapes: Sequence[tuple[int, int, int]], dtype: str = "fp32", repeats: int = 5) -> dict[str, Any]:
    """``torch.mm`` rate on (m × k) @ (k × n) for each shape, at the current torch thread count.

    Each shape: one warm-up call, then the best of ``repeats`` timed calls; 2·m·k·n FLOPs per call.
    ``gflops`` is the rate of the whole set, Σ FLOPs / Σ best seconds / 1e9.
    """
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=gen).to(torch_dtype)   # (m, k)
        b = torch.randn(k, n, generator=gen).to(torch_dtype)   # (k, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        flops = 2 * m * k * n
        rows.append({"m": m, "k": k, "n": n, "flops": flops, "best_seconds": best, "gflops": flops / best / 1e9})
    flops, seconds = sum(r["flops"] for r in rows), sum(r["best_seconds"] for r in rows)
    return {"dtype": dtype, "threads": torch.get_num_threads(), "repeats": repeats, "shapes": rows,
            "flops": flops, "seconds": seconds, "gflops": flops / seconds / 1e9}


def policy_size(policy: str) -> dict[str, int]:
    """Parameter count (tied weights once), hidden and MLP sizes, from a meta-device copy (no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dotslab.models import smollm2_path, tiny_policy, tiny_tokenizer

    with torch.device("meta"):
        model = (tiny_policy(tiny_tokenizer()) if policy == "tiny"
                 else AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(smollm2_path())))
    return {"params": sum(p.numel() for p in model.parameters()), "hidden": model.config.hidden_size,
            "intermediate": model.config.intermediate_size}

"""Where one training step's time and memory go: per-phase seconds and per-call peak RSS.

Not from the paper. Issue "Every rollout is a label" §3 asks for s/step and peak RSS per phase before
and after removing waste, so this runs ``dotslab.trainer.train`` for a few steps of a given config and
reports (1) the trainer's own ``time/*`` split per step and (2) the peak RSS of the calls that hold
the big tensors: sampling (``HFGenerateEngine.sample``), log-prob passes (``completion_logprobs``
outside the update) and the update (``policy_update``), each measured by resetting the kernel's
peak mark (``/proc/self/clear_refs``) before the call and reading ``VmHWM`` after it. It only wraps
names that exist in both the current and older trainers, so the same script profiles an older
checkout: make a folder holding only a link ``dotslab`` to that checkout's package, and run from any
other folder (not a checkout) with ``PYTHONPATH=<that folder>:<this checkout>``, so that ``dotslab``
comes from the old checkout and ``benchmarks`` from this one.

    python -m benchmarks.profile_step --method dots_rr --steps 4 --warmup 1 --threads 2 --out profile.json

``--bf16-momentum`` measures one memory option of issue 18 (item 13) without adding it to dotslab: the
run's AdamW is replaced by :class:`BF16MomentumAdamW`, which keeps the first moment in bfloat16 (the
second stays fp32: its (1 - β2) increments are below bfloat16's resolution and would be lost). glibc's
``MALLOC_MMAP_THRESHOLD_`` environment variable, the other option measured, needs no code.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Callable

import torch

from benchmarks.peer import _status_mb

PEAKS: dict[str, list[float]] = defaultdict(list)
SECONDS: dict[str, list[float]] = defaultdict(list)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def measured(name: str, fn: Callable) -> Callable:
    """``fn`` with its peak RSS (MB) and seconds recorded under ``name``; nested calls are not double reset."""
    depth = {"n": 0}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outer = depth["n"] == 0
        if outer:
            _reset_peak()
        depth["n"] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth["n"] -= 1
            if outer:
                SECONDS[name].append(time.perf_counter() - t0)
                PEAKS[name].append(_status_mb("VmHWM"))
    return wrapper


def instrument() -> Callable[[], None]:
    """Wrap the measured calls; returns the function that puts the originals back."""
    import dotslab.rollout as rollout
    import dotslab.trainer as trainer
    targets = [(rollout.HFGenerateEngine, "sample", "sampling"), (trainer, "policy_update", "update")]
    if hasattr(rollout, "completion_logprobs"):  # older trainers: a separate μ pass at rollout
        targets.append((rollout, "completion_logprobs", "logprob pass at rollout"))
    originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]
    for owner, attr, name in targets:
        setattr(owner, attr, measured(name, getattr(owner, attr)))

    def undo() -> None:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)
    return undo


class BF16MomentumAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias correction, eps outside the root) with exp_avg in bfloat16."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8,
                 foreach: bool | None = None):  # foreach: accepted as the trainer passes it; always per tensor
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p, dtype=torch.bfloat16),
                                 exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t = state["step"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m = state["exp_avg"].float().lerp_(p.grad, 1 - beta1)
                state["exp_avg"].copy_(m)
                v = state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1 ** t))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="dots_rr")
    ap.add_argument("--policy", default="smollm2")
    ap.add_argument("--steps", type=int, default=4, help="timed steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="any other config key, read as `dotslab train -p` reads it")
    ap.add_argument("--bf16-momentum", action="store_true", help="AdamW's first moment in bfloat16 (see above)")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    adamw = torch.optim.AdamW
    if a.bf16_momentum:  # the trainer builds its optimizer as torch.optim.AdamW(...); put back below
        torch.optim.AdamW = BF16MomentumAdamW
    if a.threads:
        torch.set_num_threads(a.threads)
    from dotslab.config import Config
    from dotslab.trainer import train
    extra = {}
    if a.p:  # older checkouts have no dotslab.params; they are profiled without -p
        from dotslab.params import parse_value
        extra = {k: parse_value(v, k) for k, v in a.p}
    PEAKS.clear()
    SECONDS.clear()
    base_rss = _status_mb("VmRSS")
    undo = instrument()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Config.from_flat({"method": a.method, "policy": a.policy, "seed": a.seed,
                                    "total_steps": a.warmup + a.steps, "eval_every": 0, "checkpoint_every": 0,
                                    "run_root": tmp, "run_name": "profile", **extra})
            t0 = time.perf_counter()
            records = train(cfg, progress=False).records
            wall = time.perf_counter() - t0
    finally:
        undo()
        torch.optim.AdamW = adamw
    steps = [r for r in records if r.get("step", 0) > a.warmup and "time/step" in r]
    keys = sorted({k for r in steps for k in r if k.startswith("time/") and k not in ("time/elapsed",)})
    out = {"method": a.method, "policy": a.policy, "bf16_momentum": a.bf16_momentum,
           "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "threads": torch.get_num_threads(),
           "config": cfg.to_flat(),
           "timed_steps": len(steps), "wall_seconds": wall, "rss_after_imports_mb": base_rss,
           "peak_rss_mb": max([_status_mb("VmHWM")] + [max(v) for v in PEAKS.values()]),
           "seconds_per_phase": {k: sum(r.get(k, 0.0) for r in steps) / len(steps) for k in keys},
           "peak_rss_per_call_mb": {k: max(v) for k, v in PEAKS.items()},
           "seconds_per_call": {k: sum(v) / len(v) for k, v in SECONDS.items()},
           "calls": {k: len(v) for k, v in SECONDS.items()},
           "frac_zero_std": sum(r.get("rollout/frac_zero_std", 0.0) for r in steps) / len(steps)}
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

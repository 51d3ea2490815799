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
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Callable

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
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    import torch
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
    steps = [r for r in records if r.get("step", 0) > a.warmup and "time/step" in r]
    keys = sorted({k for r in steps for k in r if k.startswith("time/") and k not in ("time/elapsed",)})
    out = {"method": a.method, "policy": a.policy, "threads": torch.get_num_threads(), "config": cfg.to_flat(),
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

"""Several methods over several seeds, trained back to back, and their held-out curves as mean and band.

Not from the paper's code; the paper reports means over 3 seeds (arXiv 2506.05316 §5). One seed of a
small run says nothing either way, so the quickstart shows GRPO and DOTS+RR over a few seeds of the
miniature world (docs/method.md §9) with the spread between seeds drawn as a band.

Decisions:
  1. Each (method, seed) is an ordinary run folder named from its config, trained with ``resume=True``:
     running the cell again reads finished runs back instead of training them again.
  2. Curves are compared at the evaluation steps all seeds share; the band is the lowest and highest seed
     (with a few seeds a min-max band shows every seed's curve honestly, where a ±SE band would not).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .config import Config
from .report import final_pass_rate, first_pass_rate
from .trainer import train

Records = Sequence[Mapping[str, Any]]


def train_methods(cfg: Config, methods: Sequence[str], seeds: Sequence[int], *,
                  on_run: Callable[[str, int, Records], None] | None = None) -> dict[str, dict[int, list[dict]]]:
    """Records of ``cfg`` trained with each method and seed (seed-major), ``on_run(method, seed, records)``
    after each run."""
    out: dict[str, dict[int, list[dict]]] = {m: {} for m in methods}
    for seed in seeds:
        for method in methods:
            run_cfg = dataclasses.replace(cfg, method=method, seed=seed, run_name="")
            out[method][seed] = list(train(run_cfg, resume=True, progress=False).records)
            if on_run is not None:
                on_run(method, seed, out[method][seed])
    return out


def eval_bands(records: Mapping[int, Records]) -> dict[str, np.ndarray]:
    """For one method's runs by seed: the shared evaluation steps, mean training seconds at them, and the
    mean, lowest and highest held-out pass rate over seeds; each (n_evals,)."""
    per_seed = [{r["step"]: r for r in recs if r.get("eval/pass_rate") is not None} for recs in records.values()]
    steps = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
    rates = np.array([[d[s]["eval/pass_rate"] for s in steps] for d in per_seed])           # (seeds, n_evals)
    seconds = np.array([[d[s].get("time/elapsed", 0.0) for s in steps] for d in per_seed])  # (seeds, n_evals)
    empty = np.zeros(0)
    return {"step": np.array(steps), "seconds": seconds.mean(0) if len(steps) else empty,
            "mean": rates.mean(0) if len(steps) else empty, "low": rates.min(0) if len(steps) else empty,
            "high": rates.max(0) if len(steps) else empty}


def describe_methods(runs: Mapping[str, Mapping[int, Records]]) -> str:
    """A few computed sentences: per method, held-out pass rate at the first and last shared evaluation
    (mean and range over seeds), training seconds, and in how many seeds it rose."""
    lines = []
    for method, by_seed in runs.items():
        b = eval_bands(by_seed)
        if len(b["step"]) < 2:
            lines.append(f"- `{method}`: fewer than two evaluations; nothing to compare.")
            continue
        rose = sum(final_pass_rate(recs) > first_pass_rate(recs) for recs in by_seed.values())
        lines.append(f"- `{method}`: held-out pass rate {b['mean'][0]:.3f} at step {b['step'][0]} → "
                     f"{b['mean'][-1]:.3f} at step {b['step'][-1]} (mean of {len(by_seed)} seeds; range "
                     f"{b['low'][-1]:.3f}–{b['high'][-1]:.3f}), in {b['seconds'][-1]:.0f} s of training on "
                     f"average; it rose in {rose} of {len(by_seed)} seeds.")
    return "\n".join(lines)


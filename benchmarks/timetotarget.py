"""Part 1: time-to-target of DOTS, RR and DOTS+RR against GRPO (paper Table 1, docs/method.md §7).

Sun et al., arXiv 2506.05316, §5 / Table 1: wall-clock (and steps) each method needs to reach
GRPO's final accuracy. Every method trains for the same number of steps on the same task, policy
and seed, evaluated on the same held-out set at the same steps.

Decisions:
  1. The target is per seed: GRPO's final held-out pass rate in that seed (a paired comparison,
     as the paper compares runs that share everything but the method). A method reaches it at its
     first evaluation with ``eval/pass_rate >= target``; seconds are ``time/elapsed`` (training only,
     evaluation excluded, reference rollouts included) and rollouts ``rollout/total_generations``
     (reference rollouts included) of that record (:func:`dotslab.report.time_to_target`).
  2. "Not reached" counts as +inf: the median over seeds is finite only if at least half of the
     seeds reached the target, and a ratio is +inf when the method missed and GRPO did not.
  3. A seed where GRPO's final pass rate does not exceed its step-0 pass rate makes the target
     trivial (reached at step 0 by everyone); it is flagged ``trivial`` and its ratio is undefined.
  4. Ratios (time, generations, steps to target, arm / GRPO, per seed) are summarised by their
     median over the usable seeds and a percentile bootstrap 95% CI of that median (seeds resampled
     with replacement, 10,000 times), as benchmarks/README.md's protocol fixes in advance.
  5. An interrupted benchmark can be finished with ``--resume <runs folder>``: a run whose folder
     holds the same config and a record of its last step is read back instead of trained again
     (:func:`finished_records`); anything else is trained from scratch. Timings are the ones
     recorded while that run trained. (Its checkpoint is gone; the predictor part trains its own.)
"""
from __future__ import annotations

import gc
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dotslab.config import config_diff
from dotslab.metrics import read_jsonl
from dotslab.report import final_pass_rate, run_figures
from dotslab.trainer import train

Records = Sequence[Mapping[str, Any]]


# ---- pure summaries ----------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median and min-max over seeds; nan (not reached) counts as +inf, reported as None."""
    vals = [math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "reached": 0}
    med = float(np.median(vals)) if sum(map(math.isinf, vals)) * 2 <= len(vals) else math.inf

    def fin(x: float) -> float | None:
        return None if math.isinf(x) or math.isnan(x) else x

    return {"median": fin(med), "min": fin(min(vals)), "max": fin(max(vals)), "n": len(vals),
            "reached": sum(not math.isinf(v) for v in vals)}


def ratio(value: float, baseline: float) -> float:
    """value / baseline with 'not reached' (nan) = +inf; nan when undefined (baseline 0, inf or both missing)."""
    v = math.inf if math.isnan(value) else value
    b = math.inf if math.isnan(baseline) else baseline
    if math.isinf(b) or b <= 0:
        return math.nan
    return v / b


def median_ratio(ratios: Sequence[float]) -> dict[str, Any]:
    """Median and min-max of per-seed ratios; undefined (nan) seeds are dropped, +inf = not reached."""
    defined = [r for r in ratios if not math.isnan(r)]
    out = spread(defined)
    out["undefined"] = len(ratios) - len(defined)
    return out


def bootstrap_median_ci(values: Sequence[float], *, resamples: int = 10_000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the median over seeds (resampled with replacement); +inf allowed.

    Each resample's median is taken without interpolation between the two middle values when one
    is +inf (it is then +inf: the method missed in half the resample); the CI ends are order
    statistics of the resampled medians, so +inf stays +inf instead of becoming nan.
    """
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(v), size=(resamples, len(v)))
    draws = np.sort(v[idx], axis=1)
    n = len(v)
    medians = draws[:, n // 2] if n % 2 else np.where(np.isinf(draws[:, n // 2]), np.inf,
                                                        (draws[:, n // 2 - 1] + draws[:, n // 2]) / 2)
    medians = np.sort(medians)
    lo = medians[int(np.floor((1 - level) / 2 * (resamples - 1)))]
    hi = medians[int(np.ceil((1 + level) / 2 * (resamples - 1)))]
    return float(lo), float(hi)


def ratio_summary(ratios: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """:func:`median_ratio` plus its bootstrap 95% CI (``ci_low``/``ci_high``; None = not reached)."""
    out = median_ratio(ratios)
    lo, hi = bootstrap_median_ci(ratios, seed=seed)
    out["ci_low"] = None if math.isinf(lo) or math.isnan(lo) else lo
    out["ci_high"] = None if math.isinf(hi) or math.isnan(hi) else hi
    out["ci_high_inf"] = bool(math.isinf(hi))
    out["per_seed"] = [None if math.isinf(r) or math.isnan(r) else r for r in ratios]
    return out


def summarise(records_by_method_seed: Mapping[str, Mapping[int, Records]],
              baseline: str = "grpo") -> dict[str, Any]:
    """Targets, per-seed reach and per-arm medians (with bootstrap CIs of the ratios) from the runs' records."""
    seeds = sorted(records_by_method_seed[baseline])
    targets, trivial, initial = {}, {}, {}
    for s in seeds:
        recs = records_by_method_seed[baseline][s]
        evals = [r["eval/pass_rate"] for r in recs if r.get("eval/pass_rate") is not None]
        targets[s] = final_pass_rate(recs)
        initial[s] = evals[0] if evals else math.nan
        trivial[s] = not (targets[s] > initial[s])
    per_seed = {method: {s: run_figures(by_seed.get(s, []), targets[s]) for s in seeds}
                for method, by_seed in records_by_method_seed.items()}
    methods: dict[str, Any] = {}
    nontrivial = [s for s in seeds if not trivial[s]]
    for method, by_seed in per_seed.items():
        base = per_seed[baseline]
        finals = [by_seed[s]["final_pass_rate"] for s in seeds if not math.isnan(by_seed[s]["final_pass_rate"])]
        methods[method] = {
            "seconds": spread([by_seed[s]["seconds"] for s in seeds]),
            "generations": spread([by_seed[s]["generations"] for s in seeds]),
            "steps": spread([by_seed[s]["step"] for s in seeds]),
            "seconds_ratio": ratio_summary([ratio(by_seed[s]["seconds"], base[s]["seconds"]) for s in nontrivial]),
            "generations_ratio": ratio_summary([ratio(by_seed[s]["generations"], base[s]["generations"])
                                                for s in nontrivial]),
            "steps_ratio": ratio_summary([ratio(by_seed[s]["step"], base[s]["step"]) for s in nontrivial]),
            "final_pass_rate": spread([by_seed[s]["final_pass_rate"] for s in seeds]),
            "final_pass_rate_mean": float(np.mean(finals)) if finals else None,
            "final_pass_rate_se": float(np.std(finals, ddof=1) / math.sqrt(len(finals))) if len(finals) > 1 else None,
            "seconds_per_step": spread([by_seed[s]["seconds_per_step"] for s in seeds]),
            "generations_per_step": spread([by_seed[s]["generations_per_step"] for s in seeds]),
            "total_generations": spread([by_seed[s]["total_generations"] for s in seeds]),
            "effective_frac": spread([by_seed[s]["effective_frac"] for s in seeds]),
        }
    return {"baseline": baseline, "seeds": seeds, "targets": targets, "initial_pass_rate": initial,
            "trivial_target": trivial, "grpo_improved": {s: not trivial[s] for s in seeds},
            "usable_seeds": nontrivial, "per_seed": per_seed, "methods": methods}


DIAGNOSTIC_TIMES = ("time/generation", "time/reference", "time/update")


def step_diagnostics(records_by_method_seed: Mapping[str, Mapping[int, Records]]) -> dict[str, dict[str, Any]]:
    """Why an arm is fast or slow, pooled over its seeds' training steps: mean seconds per step in
    generation, reference rollouts, update and the rest; the share of fresh groups with reward spread;
    replay's c (mean of the per-step ``replay/mean_c``, its largest value, steps with mean c > 2); the
    pre-clip gradient norm (mean, largest); and the largest fall of the held-out pass rate between two
    consecutive evaluations (mean over seeds), a sign of unstable updates."""
    out: dict[str, dict[str, Any]] = {}
    for arm, by_seed in records_by_method_seed.items():
        steps = [r for recs in by_seed.values() for r in recs if r.get("step", 0) > 0 and "time/step" in r]
        if not steps:
            continue
        mean = lambda key: float(np.mean([r.get(key) or 0.0 for r in steps]))  # noqa: E731
        times = {k: mean(k) for k in DIAGNOSTIC_TIMES}
        times["other"] = mean("time/step") - sum(times.values())
        cs = [r["replay/mean_c"] for r in steps if r.get("replay/mean_c") is not None and np.isfinite(r["replay/mean_c"])]
        norms = [r["train/grad_norm"] for r in steps if r.get("train/grad_norm") is not None
                 and np.isfinite(r["train/grad_norm"])]
        falls = []
        for recs in by_seed.values():
            ev = [r["eval/pass_rate"] for r in recs if r.get("eval/pass_rate") is not None]
            falls.append(max([a - b for a, b in zip(ev, ev[1:])] + [0.0]))
        out[arm] = {"seconds": times, "step_seconds": mean("time/step"),
                    "spread_share": float(np.mean([1 - r.get("rollout/frac_zero_std", 0.0) for r in steps])),
                    "mean_c": float(np.mean(cs)) if cs else None, "max_c": float(np.max(cs)) if cs else None,
                    "steps_c_over_2": float(np.mean([c > 2 for c in cs])) if cs else None,
                    "grad_norm_mean": float(np.mean(norms)) if norms else None,
                    "grad_norm_max": float(np.max(norms)) if norms else None,
                    "largest_eval_fall": float(np.mean(falls)) if falls else None}
    return out


def eval_curves(records_by_method_seed: Mapping[str, Mapping[int, Records]]) -> dict[str, dict[int, list]]:
    """[(step, time/elapsed, rollout/total_generations, eval/pass_rate)] per method and seed (for the plot)."""
    return {m: {s: [(r["step"], r.get("time/elapsed", 0.0), r.get("rollout/total_generations", 0),
                     r["eval/pass_rate"]) for r in recs if r.get("eval/pass_rate") is not None]
                for s, recs in by_seed.items()}
            for m, by_seed in records_by_method_seed.items()}


# ---- running ----------------------------------------------------------------------------------
def finished_records(run_dir: Path, cfg: Any) -> list[dict[str, Any]] | None:
    """The records of a run that finished in ``run_dir`` with exactly ``cfg``; None if there is none.

    Finished means: config.json equals ``cfg`` (as JSON) and metrics.jsonl has a record for step
    ``cfg.total_steps``.
    """
    try:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if config_diff(saved, cfg, ignore=()):  # the resume check's comparison, run-only keys included
        return None
    records = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    if not records or records[-1].get("step") != cfg.total_steps:
        return None
    return records


def run_methods(bench: Any, arms: Sequence[Any], seeds: Sequence[int], run_root: Path, task: str | None,
                keep_checkpoint: Callable[[str, int], bool] = lambda m, s: False,
                log: Callable[[str], None] = print, reuse: bool = False,
                ) -> tuple[dict[str, dict[int, list]], dict[str, dict[int, str]]]:
    """Train every (seed, arm), seed-major so machine-load drift hits all arms alike.

    Checkpoints are deleted after each run (they are GBs for SmolLM2) unless ``keep_checkpoint(arm, seed)``.
    With ``reuse``, a run already finished in ``run_root`` with the same config is read back, not
    trained (decision 5). Returns records and run folders by arm name and seed.
    """
    records: dict[str, dict[int, list]] = {a.name: {} for a in arms}
    run_dirs: dict[str, dict[int, str]] = {a.name: {} for a in arms}
    for seed in seeds:
        for arm in arms:
            cfg = bench.run_config(arm, seed, str(run_root), task)
            run_dir = Path(cfg.run_root) / cfg.resolved_run_name
            done = finished_records(run_dir, cfg) if reuse else None
            if done is not None:
                records[arm.name][seed], run_dirs[arm.name][seed] = done, str(run_dir)
                evals = [r["eval/pass_rate"] for r in done if r.get("eval/pass_rate") is not None]
                log(f"  {arm.name:14s} seed {seed}: read back from {run_dir.name} (finished earlier), eval "
                    f"pass rate {evals[0] if evals else float('nan'):.3f} -> {evals[-1] if evals else float('nan'):.3f}, "
                    f"train {done[-1].get('time/elapsed', 0.0):.1f}s")
                continue
            if run_dir.exists():  # a previous benchmark's folder with the same timestamp-free name
                shutil.rmtree(run_dir)
            t0 = time.perf_counter()
            result = train(cfg, progress=False, reward_fn=bench.reward_fn)
            wall = time.perf_counter() - t0
            records[arm.name][seed] = list(result.records)
            run_dirs[arm.name][seed] = str(result.run_dir)
            evals = [r["eval/pass_rate"] for r in result.records if r.get("eval/pass_rate") is not None]
            log(f"  {arm.name:14s} seed {seed}: {cfg.total_steps} steps, eval pass rate "
                f"{evals[0] if evals else float('nan'):.3f} -> {evals[-1] if evals else float('nan'):.3f}, "
                f"{result.records[-1].get('rollout/total_generations', 0)} generations, "
                f"train {result.records[-1].get('time/elapsed', 0.0):.1f}s, wall {wall:.1f}s")
            if not keep_checkpoint(arm.name, seed):
                shutil.rmtree(Path(result.run_dir) / "checkpoints", ignore_errors=True)
            del result
            gc.collect()
    return records, run_dirs

"""Summaries of run folders: before/after pass rates, step-time split, time-to-target, comparisons
of several runs, the replay buffer of a checkpoint, and attention tables (pandas, for notebooks).

Not from the paper; it computes the paper's comparison (Table 1: time to reach GRPO's final
accuracy) from our metrics logs. Time-to-target counts every generation, reference rollouts
included (METHOD §7).

Decisions:
  1. ``compare_runs`` defaults the target to the baseline's mean final eval pass rate, as Table 1
     does, and divides by the baseline runs' mean time to it (seeds averaged, not paired).
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .metrics import TIME_KEYS, read_jsonl


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config dict, metrics records) of a run folder."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return cfg, read_jsonl(run_dir / "metrics.jsonl")


def _evals(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("eval/pass_rate") is not None]


def run_summary(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One-column table: eval pass rate first/last, mean train pass rate, mean step-time split."""
    evals = _evals(records)
    steps = [r for r in records if r.get("time/step") is not None]
    rows: dict[str, Any] = {
        "steps": len(steps),
        "eval pass rate (first)": evals[0]["eval/pass_rate"] if evals else np.nan,
        "eval pass rate (last)": evals[-1]["eval/pass_rate"] if evals else np.nan,
        "train pass rate (first 3 steps)": float(np.mean([r["train/pass_rate"] for r in steps[:3]])) if steps else np.nan,
        "train pass rate (last 3 steps)": float(np.mean([r["train/pass_rate"] for r in steps[-3:]])) if steps else np.nan,
        "zero-variance share (mean)": float(np.mean([r["rollout/frac_zero_std"] for r in steps])) if steps else np.nan,
        "generations": steps[-1]["rollout/total_generations"] if steps else 0,
        "training seconds": steps[-1]["time/elapsed"] if steps else 0.0,
    }
    for key in (*TIME_KEYS, "time/step"):
        vals = [r.get(key, 0.0) or 0.0 for r in steps]
        rows[f"{key} (mean s)"] = float(np.mean(vals)) if vals else np.nan
    return pd.DataFrame({"value": rows})


def time_to_target(records: Sequence[dict[str, Any]], target: float) -> dict[str, float]:
    """First eval whose pass rate >= target: its training seconds, generations and step (nan if never)."""
    for r in _evals(records):
        if r["eval/pass_rate"] >= target:
            return {"seconds": float(r.get("time/elapsed", np.nan)),
                    "generations": float(r.get("rollout/total_generations", np.nan)), "step": float(r["step"])}
    return {"seconds": np.nan, "generations": np.nan, "step": np.nan}


def final_pass_rate(records: Sequence[dict[str, Any]]) -> float:
    evals = _evals(records)
    return float(evals[-1]["eval/pass_rate"]) if evals else float("nan")


# ---- several runs (notebook 20) -----------------------------------------------------------------
def load_runs(patterns: str | Sequence[str]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Run folders matching glob ``patterns`` (a list, or one string with comma-separated globs).

    Only folders holding both config.json and metrics.jsonl are kept; keys are folder names.
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    found: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for pattern in patterns:
        for folder in map(Path, sorted(glob.glob(os.path.expanduser(pattern)))):
            if (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file():
                found.setdefault(folder.name, load_run(folder))
    return found


def compare_runs(runs: Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]], *, baseline: str = "grpo",
                 target: float = 0.0) -> tuple[pd.DataFrame, float]:
    """One row per run: final pass rate, cost, and time-to-target against the ``baseline`` method.

    ``target`` <= 0 means the paper's choice (Table 1): the baseline runs' mean final eval pass rate.
    Ratios divide a run's seconds / generations to target by the baseline runs' mean; < 1 is faster.
    Returns (table, target used).
    """
    base = [records for cfg, records in runs.values() if cfg.get("method") == baseline]
    if target <= 0:
        finals = [final_pass_rate(r) for r in base]
        target = float(np.nanmean(finals)) if base and not np.all(np.isnan(finals)) else float("nan")
    base_hits = [time_to_target(r, target) for r in base] if np.isfinite(target) else []
    base_s = float(np.nanmean([h["seconds"] for h in base_hits])) if base_hits else np.nan
    base_g = float(np.nanmean([h["generations"] for h in base_hits])) if base_hits else np.nan
    rows = []
    for name, (cfg, records) in runs.items():
        steps = [r for r in records if r.get("time/step") is not None]
        hit = time_to_target(records, target) if np.isfinite(target) else time_to_target([], 0)
        rows.append({
            "run": name, "method": cfg.get("method"), "seed": cfg.get("seed"), "steps": len(steps),
            "final eval pass rate": final_pass_rate(records),
            "generations": steps[-1]["rollout/total_generations"] if steps else 0,
            "training seconds": round(steps[-1]["time/elapsed"], 1) if steps else 0.0,
            "seconds / step": float(np.mean([r["time/step"] for r in steps])) if steps else np.nan,
            "step to target": hit["step"], "seconds to target": hit["seconds"],
            "generations to target": hit["generations"],
            "time ratio vs " + baseline: hit["seconds"] / base_s if base_s else np.nan,
            "generation ratio vs " + baseline: hit["generations"] / base_g if base_g else np.nan,
        })
    table = pd.DataFrame(rows).set_index("run").round(3) if rows else pd.DataFrame()
    return table, target


# ---- replay buffer and attention tables (notebooks 02, 03) --------------------------------------
def buffer_contents(run_dir: str | Path) -> pd.DataFrame:
    """The replay buffer saved in a run's latest checkpoint, one row per group, newest last.

    Columns: question, step (generated at), age (steps before the checkpoint), pass_rate,
    has_variance, replayable (newest group of its question and has_variance, METHOD §4).
    """
    from .checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir)
    columns = ["question", "step", "age", "pass_rate", "has_variance", "replayable"]
    if found is None or not found[1].get("buffer"):
        return pd.DataFrame(columns=columns)
    path, saved = found
    step = int(saved["state"]["step"])
    groups = list(saved["buffer"]["groups"])
    newest = {g.question.id: i for i, g in enumerate(groups)}  # later groups of a question win
    return pd.DataFrame([{"question": g.question.prompt, "step": g.step, "age": step - g.step,
                          "pass_rate": g.pass_rate, "has_variance": g.has_variance,
                          "replayable": g.has_variance and newest[g.question.id] == i}
                         for i, g in enumerate(groups)], columns=columns)


def top_references(weights: Sequence[float], ref_texts: Sequence[str], ref_difficulty: Sequence[float],
                   top: int = 8) -> pd.DataFrame:
    """The ``top`` references by attention weight: text, weight, measured difficulty, contribution a_i·y_i."""
    w, d = np.asarray(weights, float), np.asarray(ref_difficulty, float)
    order = np.argsort(-w, kind="stable")[:top]
    return pd.DataFrame({"reference": [ref_texts[i] for i in order], "weight a_i": w[order].round(3),
                         "difficulty y_i": d[order].round(3), "a_i·y_i": (w[order] * d[order]).round(3)},
                        index=pd.Index(order, name="ref"))

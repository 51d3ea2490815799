"""Summaries of run folders: before/after pass rates, step-time split, time-to-target.

Not from the paper; it computes the paper's comparison (Table 1: time to reach GRPO's final
accuracy) from our metrics logs. Time-to-target counts every generation, reference rollouts
included (METHOD §7).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .metrics import read_jsonl
from .viz import TIME_KEYS


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

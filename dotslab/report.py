"""Summaries of run folders: before/after pass rates, step-time split, time-to-target, the replay
buffer of a checkpoint, and attention tables (pandas, for notebooks); several runs: ``compare``.

Not from the paper; it computes the paper's comparison (Table 1: time to reach GRPO's final
accuracy) from our metrics logs. Time-to-target counts every generation, reference rollouts
included (docs/method.md §7).

Decisions:
  1. Tables hold integers as integers and round floats; :func:`styled` shows them without empty
     header rows and without wrapping row names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .config import Config
from .metrics import TIME_KEYS, TIME_NAMES, read_jsonl


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config dict, metrics records) of a run folder."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return cfg, read_jsonl(run_dir / "metrics.jsonl")


def _evals(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("eval/pass_rate") is not None]


def _rounded(value: Any, digits: int = 3) -> Any:
    return round(float(value), digits) if isinstance(value, (float, np.floating)) else value


def run_summary(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One-column table: eval pass rate first/last, mean train pass rate, mean step-time split (only the
    parts the run has: a GRPO run shows no reference, prediction or replay rows).

    The column holds integers as integers and floats rounded to 3 decimals (object dtype).
    """
    evals = _evals(records)
    steps = [r for r in records if r.get("time/step") is not None]
    rows: dict[str, Any] = {
        "steps": len(steps),
        "eval pass rate (first)": evals[0]["eval/pass_rate"] if evals else np.nan,
        "eval pass rate (last)": evals[-1]["eval/pass_rate"] if evals else np.nan,
        "train pass rate (first 3 steps)": float(np.mean([r["train/pass_rate"] for r in steps[:3]])) if steps else np.nan,
        "train pass rate (last 3 steps)": float(np.mean([r["train/pass_rate"] for r in steps[-3:]])) if steps else np.nan,
        "fresh groups without reward spread (mean share)":
            float(np.mean([r["rollout/frac_zero_std"] for r in steps])) if steps else np.nan,
        "generations": int(steps[-1]["rollout/total_generations"]) if steps else 0,
        "training seconds": steps[-1]["time/elapsed"] if steps else 0.0,
    }
    for key in (*TIME_KEYS, "time/step"):
        vals = [r.get(key, 0.0) or 0.0 for r in steps]
        if key != "time/step" and not any(vals):
            continue  # a part this method does not have (GRPO: no reference rollouts, prediction, replay)
        name = "whole step" if key == "time/step" else TIME_NAMES[key]
        rows[f"seconds per step: {name} (mean)"] = float(np.mean(vals)) if vals else np.nan
    return pd.DataFrame({"value": pd.Series({k: _rounded(v) for k, v in rows.items()}, dtype=object)})


def _is_missing(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and not np.isfinite(x))


def _decimals(magnitude: float) -> int:
    """Decimals for a float of this size: 3 below 10 (pass rates, seconds per step), 1 below 1000, else 0."""
    return 3 if magnitude < 10 else 1 if magnitude < 1000 else 0


def _number(x: Any) -> str:
    """A table cell on its own: integers without decimals, floats with :func:`_decimals`, missing as '–'."""
    if _is_missing(x):
        return "–"
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    return f"{x:,.{_decimals(abs(x))}f}"


def _column_format(column: pd.Series) -> Callable[[Any], str]:
    """One format for a whole column, so its numbers line up: integers if every number in it is a
    whole number, else the decimals its largest number needs (0.150 beside 0.293, 1.000 beside 0.500).
    A column of mixed kinds (a one-column summary) is formatted cell by cell."""
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return _number
    values = np.array([float(v) for v in column if not _is_missing(v)], dtype=float)
    if values.size == 0 or np.all(values == np.round(values)):
        return lambda x: "–" if _is_missing(x) else f"{int(round(float(x))):,}"
    digits = _decimals(float(np.max(np.abs(values))))
    return lambda x: "–" if _is_missing(x) else f"{float(x):,.{digits}f}"


def styled(table: pd.DataFrame) -> "pd.io.formats.style.Styler":
    """``table`` for display: numbers one format per column (:func:`_column_format`), one header row,
    row names kept on one line."""
    out = table.copy()
    out.index.name = out.columns.name = None  # a named index adds an empty header row
    style = out.style.format_index(str, axis=0)
    for i, name in enumerate(out.columns):
        style = style.format(_column_format(out.iloc[:, i]), subset=[name])
    return style.set_table_styles([{"selector": "th.row_heading", "props": "white-space: nowrap; text-align: left"},
                                   {"selector": "td", "props": "white-space: nowrap"}])


def describe_run(records: Sequence[dict[str, Any]], *, eval_completions: int | None = None) -> str:
    """What a short run did, as Markdown bullets computed from its records (a notebook's "what we saw").

    ``eval_completions`` (held-out questions x samples, n) adds the standard error of an evaluation,
    √(p(1-p)/n) at the mean p of the first and last (kept within [1/n, 1-1/n]), and whether the
    held-out change exceeds two of them.
    """
    steps = [r for r in records if r.get("time/step") is not None]
    if not steps:
        return "No training step was logged."
    k = max(1, min(3, len(steps) // 2))
    train_first = np.mean([r["train/pass_rate"] for r in steps[:k]])
    train_last = np.mean([r["train/pass_rate"] for r in steps[-k:]])
    span = "step" if k == 1 else f"{k} steps"
    lines = [f"- **Train-batch pass rate**: {train_first:.2f} over the first {span}, {train_last:.2f} over "
             f"the last {span} ({len(steps)} steps in all)."]
    evals = _evals(records)
    if evals:
        seen = ", ".join(f"{r['eval/pass_rate']:.2f} (step {r['step']})" for r in evals)
        line = f"- **Held-out pass rate**: {seen}."
        if eval_completions and len(evals) >= 2:
            first, last = evals[0]["eval/pass_rate"], evals[-1]["eval/pass_rate"]
            n = eval_completions
            p = min(max((first + last) / 2, 1 / n), 1 - 1 / n)  # at 0 or 1 the formula would claim no noise
            se = float(np.sqrt(p * (1 - p) / n))
            verdict = "inside" if abs(last - first) < 2 * se else "beyond"
            line += (f" On {eval_completions} completions one standard error is about ±{se:.2f}, so the change "
                     f"of {last - first:+.2f} is {verdict} two standard errors.")
        lines.append(line)
    half = max(1, len(steps) // 2)
    zero_first = np.mean([r["rollout/frac_zero_std"] for r in steps[:half]])
    zero_last = np.mean([r["rollout/frac_zero_std"] for r in steps[half:] or steps[-1:]])
    lines.append(f"- **Fresh groups with no reward spread**: {zero_first:.0%} in the first half of the run, "
                 f"{zero_last:.0%} in the second.{_flat_steps_text(steps)}")
    pearson = [r["predictor/pearson"] for r in steps if r.get("predictor/pearson") is not None]
    if pearson:
        lines.append(f"- **Predictor Pearson r** on each step's fresh questions: from {min(pearson):.2f} to "
                     f"{max(pearson):.2f} over {len(pearson)} steps.")
    return "\n".join(lines)


def _flat_steps_text(steps: Sequence[dict[str, Any]]) -> str:
    """Where the no-spread share peaked and which steps had no fresh group with spread: a step whose
    fresh groups all share one reward has zero advantage everywhere and, without replay, trains nothing."""
    shares = [float(r["rollout/frac_zero_std"]) for r in steps]
    peak = max(shares)
    at = [int(r["step"]) for r, z in zip(steps, shares) if z == peak]
    text = f" It peaked at {peak:.0%} (step{'s' if len(at) > 1 else ''} {_step_list(at)})"
    flat = [int(r["step"]) for r, z in zip(steps, shares) if z >= 1.0]
    if flat:
        text += (f"; at step{'s' if len(flat) > 1 else ''} {_step_list(flat)} no fresh group had spread, so "
                 f"only replayed groups, if any, gave those steps a gradient")
    return text + "."


def _step_list(steps: Sequence[int], show: int = 6) -> str:
    """'3, 4 and 9', or the first ``show`` and how many more."""
    if len(steps) > show:
        return ", ".join(map(str, steps[:show])) + f" and {len(steps) - show} more"
    return ", ".join(map(str, steps[:-1])) + (" and " if len(steps) > 1 else "") + str(steps[-1])


def describe_sweep_noise(rows: Sequence[dict[str, Any]], n_probes: int) -> str:
    """Markdown: how far Pearson r spread over a reference-set sweep, against its sampling noise.

    The standard error of a correlation r on P pairs is about (1 - r²)/√(P - 1) (taken at the best r).
    """
    r = [row["pearson"] for row in rows if row.get("pearson") is not None and np.isfinite(row["pearson"])]
    if not r:
        return ("No reference set gave a correlation: their difficulties (or the probes') were all equal, "
                "so there was no ranking to measure.")
    se = (1 - max(r) ** 2) / np.sqrt(max(n_probes - 1, 1))
    return (f"Across the {len(r)} reference sets with a ranking, Pearson r ran from {min(r):.2f} to {max(r):.2f}. "
            f"With P = {n_probes} probes one standard error of r is about (1 − r²)/√(P − 1) ≈ {se:.2f} even at "
            f"the best r, so gaps smaller than about {2 * se:.2f} between strategies are noise.")


def describe_buffer(buffer: pd.DataFrame) -> str:
    """Markdown: how many groups a buffer table (:func:`buffer_contents`) holds, their ages, how many replayable."""
    if buffer.empty:
        return "The buffer is empty (this run does not replay, or has no checkpoint yet)."
    ages = ", ".join(str(a) for a in sorted(set(buffer["age"])))
    return (f"The buffer holds {len(buffer)} groups of ages {ages} (steps); {int(buffer['replayable'].sum())} "
            f"of them can be replayed.")


def time_to_target(records: Sequence[dict[str, Any]], target: float) -> dict[str, float]:
    """First eval whose pass rate >= target: its training seconds, generations and step (nan if never)."""
    for r in _evals(records):
        if r["eval/pass_rate"] >= target:
            return {"seconds": float(r.get("time/elapsed", np.nan)),
                    "generations": float(r.get("rollout/total_generations", np.nan)), "step": float(r["step"])}
    return {"seconds": np.nan, "generations": np.nan, "step": np.nan}


def first_pass_rate(records: Sequence[dict[str, Any]]) -> float:
    evals = _evals(records)
    return float(evals[0]["eval/pass_rate"]) if evals else float("nan")


def final_pass_rate(records: Sequence[dict[str, Any]]) -> float:
    evals = _evals(records)
    return float(evals[-1]["eval/pass_rate"]) if evals else float("nan")


def run_figures(recs: Sequence[dict[str, Any]], target: float) -> dict[str, float]:
    """One run's figures: seconds, generations and step at which it first reached ``target`` (nan if
    never), its final pass rate, totals, per-step means and the share of fresh groups with reward spread."""
    hit = time_to_target(recs, target) if recs else {"seconds": float("nan"), "generations": float("nan"), "step": float("nan")}
    steps = [r for r in recs if r.get("time/step") is not None]
    if not steps:
        return {**hit, "final_pass_rate": final_pass_rate(recs), **{k: float("nan") for k in (
            "total_seconds", "total_generations", "seconds_per_step", "generations_per_step", "effective_frac")}}
    return {**hit, "final_pass_rate": final_pass_rate(recs),
            "total_seconds": steps[-1]["time/elapsed"], "total_generations": steps[-1]["rollout/total_generations"],
            "seconds_per_step": float(np.mean([r["time/step"] for r in steps])),
            "generations_per_step": float(np.mean([r["rollout/generations"] for r in steps
                                                   if r.get("rollout/generations") is not None])),
            "effective_frac": float(np.mean([1 - r["rollout/frac_zero_std"] for r in steps]))}


# ---- replay buffer and attention tables (notebooks 02, 03) --------------------------------------
def buffer_contents(run_dir: str | Path) -> pd.DataFrame:
    """The replay buffer saved in a run's latest checkpoint, one row per group, newest last.

    Columns, named for reading: question, step (generated at), age (steps before the checkpoint),
    pass rate, reward spread (rewards not all equal), replayable (newest group of its question and
    with reward spread, docs/method.md §4).
    """
    from .checkpoint import latest_checkpoint
    from .replay import replayable

    found = latest_checkpoint(run_dir)
    columns = ["question", "step", "age", "pass rate", "reward spread", "replayable"]
    buffer = (found[1].get("planner") or {}).get("buffer") if found is not None else None
    if not buffer:
        return pd.DataFrame(columns=columns)
    step = int(found[1]["state"]["step"])
    groups = list(buffer["groups"])
    readable = {id(g) for g in replayable(groups)}
    return pd.DataFrame([{"question": g.question.prompt, "step": g.step, "age": step - g.step,
                          "pass rate": g.pass_rate, "reward spread": g.has_variance, "replayable": id(g) in readable}
                         for g in groups], columns=columns)


def top_references(weights: Sequence[float], ref_texts: Sequence[str], ref_difficulty: Sequence[float],
                   top: int = 8) -> pd.DataFrame:
    """The ``top`` references by attention weight: text, weight, measured difficulty, contribution a_i·y_i."""
    w, d = np.asarray(weights, float), np.asarray(ref_difficulty, float)
    order = np.argsort(-w, kind="stable")[:top]
    return pd.DataFrame({"reference": [ref_texts[i] for i in order], "weight a_i": w[order].round(3),
                         "difficulty y_i": d[order].round(3), "a_i·y_i": (w[order] * d[order]).round(3)},
                        index=pd.Index(order, name="ref"))


def history_keys(prediction: Any, row: int, pool_texts: Sequence[str], top: int = 8) -> pd.DataFrame:
    """Pool question ``row``'s ``top`` keys in a history-mode prediction (``dotslab.history``): each key's
    question, measured difficulty, age in steps and attention weight, plus the prior pseudo-key's weight."""
    weights = np.asarray(prediction.attention[row], float)                   # (M + 1,)
    keys = np.asarray(prediction.key_index, int)
    order = [i for i in np.argsort(-weights[:-1], kind="stable") if keys[i] != row][:top]
    table = pd.DataFrame({"key": [pool_texts[keys[i]] for i in order],
                          "difficulty y_i": np.asarray(prediction.key_label, float)[order].round(3),
                          "age (steps)": np.asarray(prediction.key_age, float)[order].astype(int),
                          "weight a_i": weights[order].round(3)})
    prior = pd.DataFrame({"key": ["prior pseudo-key (an unrelated question)"], "difficulty y_i": [0.5],
                          "age (steps)": [pd.NA], "weight a_i": [round(float(weights[-1]), 3)]})
    return pd.concat([table, prior], ignore_index=True)


def history_contents(run_dir: str | Path) -> dict[str, Any] | None:
    """History mode's label store in a run's latest checkpoint, as :func:`dotslab.viz.history_figure` takes it
    (``label``, ``measured_at``, ``step``, ``window``, ``predicted``: the last round's d̂ of the pool, and
    ``texts``); None when the run has no checkpoint or predicts in the paper's mode."""
    from .checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir)
    if found is None:
        return None
    saved = found[1]
    predictor = (saved.get("planner") or {}).get("predictor") or {}
    if "history" not in predictor:
        return None
    cfg = Config.from_dict(json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8")))
    from .tasks import load_task
    pool, _ = load_task(cfg)
    history, state = predictor["history"], saved["planner"]["round_state"]
    return {"label": history["label"], "measured_at": history["step"], "step": int(saved["state"]["step"]),
            "window": cfg.predictor.history_window, "predicted": state.prediction, "texts": pool.prompts}

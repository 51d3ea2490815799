"""Several runs side by side (notebook 20): load run folders, keep the runs that compare, and compute
the paper's Table 1 (time and generations to reach the baseline's final accuracy) from their logs.

Not from the paper's code; the comparison is the paper's (Sun et al., arXiv 2506.05316, Table 1).

Decisions:
  1. The target defaults to the baseline's mean final eval pass rate, as Table 1 does, and ratios
     divide by the baseline runs' mean time to it (seeds averaged, not paired).
  2. Runs compare only when they differ in nothing but method and seed (the predictor and selection
     settings count only for methods that select, the replay settings only for methods that replay)
     and have evaluated at least once. :func:`compare_runs` refuses anything else;
     :func:`comparable_runs` picks the largest such set (one holding the baseline first) and says why
     each other run is left out.
  3. Runs are keyed by folder (its name, or parent/name where two folders share a name), so two runs
     of the same name under different roots both stay.
  4. Without a baseline run and without an explicit target there is no target: the table then has no
     to-target or ratio columns (rather than columns of NaN), and the notes say which run is missing.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .config import Config, ConfigError
from .report import final_pass_rate, load_run, run_figures, time_to_target

RunLog = tuple[dict[str, Any], list[dict[str, Any]]]  # (config.json as a dict, metrics records)

NOT_COMPARED = ("method", "seed", "run_name", "run_root", "checkpoint_every", "max_bad_steps", "target_pass_rate")
"""Config keys in which runs may differ and still be compared (what is compared, or bookkeeping)."""


class RunMismatchError(ValueError):
    """Runs that differ in more than method and seed, or that never evaluated, were asked to be compared."""


def _labels(folders: Sequence[Path]) -> list[str]:
    """The folder's name; parent/name where names collide; the full path where that collides too."""
    names = [f.name for f in folders]
    out = [n if names.count(n) == 1 else f"{f.parent.name}/{f.name}" for n, f in zip(names, folders)]
    return [o if out.count(o) == 1 else str(f) for o, f in zip(out, folders)]


def load_runs(patterns: str | Sequence[str]) -> dict[str, RunLog]:
    """Run folders matching glob ``patterns`` (a list, or one string with comma-separated globs).

    Only folders holding both config.json and metrics.jsonl are kept, each once however many globs
    match it; keys are the folders' labels (decision 3).
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    folders: dict[Path, Path] = {}
    for pattern in patterns:
        for folder in map(Path, sorted(glob.glob(os.path.expanduser(pattern)))):
            if (folder / "config.json").is_file() and (folder / "metrics.jsonl").is_file():
                folders.setdefault(folder.resolve(), folder)
    found = list(folders.values())
    return {label: load_run(folder) for label, folder in zip(_labels(found), found)}


def run_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A run's flat settings that must match for a fair comparison (decision 2)."""
    try:
        method = Config(method=cfg.get("method", ""))
        used = {"predictor": method.uses_selection, "selection": method.uses_selection, "replay": method.uses_replay}
    except (ConfigError, TypeError):  # a method this version does not know: every section counts
        used = {}
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            if used.get(key, True):
                flat.update(value)
        elif key not in NOT_COMPARED:
            flat[key] = value
    return flat


def run_differences(runs: Mapping[str, RunLog]) -> dict[str, dict[str, Any]]:
    """Setting -> {run: value} for every setting on which the runs that have it disagree."""
    settings = {name: run_settings(cfg) for name, (cfg, _) in runs.items()}
    keys = sorted({k for s in settings.values() for k in s})
    diff = {}
    for key in keys:
        values = {name: s[key] for name, s in settings.items() if key in s}
        if len({repr(v) for v in values.values()}) > 1:
            diff[key] = values
    return diff


def _steps_done(records: Sequence[dict[str, Any]]) -> int:
    steps = [int(r["step"]) for r in records if r.get("time/step") is not None]
    return max(steps) if steps else 0


def comparable_runs(runs: Mapping[str, RunLog], *, baseline: str = "grpo") -> tuple[dict[str, RunLog], list[str]]:
    """The largest set of runs that :func:`compare_runs` accepts, and notes on everything else.

    Sets holding a ``baseline`` run come first, then larger sets, then longer runs. Notes name each
    run left out and why, runs stopped before their last step, and a missing baseline.
    """
    notes: list[str] = []
    evaluated = {}
    for name, run in runs.items():
        if any(r.get("eval/pass_rate") is not None for r in run[1]):
            evaluated[name] = run
        else:
            notes.append(f"`{name}` is left out: it never evaluated (eval_every = {run[0].get('eval_every')}), so it "
                         f"has no pass rate to compare.")
    groups: list[dict[str, RunLog]] = []
    for name, run in evaluated.items():
        home = next((g for g in groups if not run_differences({**g, name: run})), None)
        if home is None:
            groups.append({name: run})
        else:
            home[name] = run
    if not groups:
        return {}, notes
    best = max(groups, key=lambda g: (any(c.get("method") == baseline for c, _ in g.values()), len(g),
                                      max(_steps_done(r) for _, r in g.values())))
    for group in groups:
        if group is not best:
            for name, run in group.items():
                diff = run_differences({**best, name: run})
                shown = "; ".join(f"{k} = {v[name]!r} here, {sorted({repr(x) for n, x in v.items() if n != name})[0]}"
                                  f" in the compared runs" for k, v in list(diff.items())[:3])
                more = list(diff)[3:]
                if more:
                    shown += f"; and {len(more)} more setting{'s' if len(more) > 1 else ''}: {', '.join(more)}"
                notes.append(f"`{name}` is left out: it differs from the compared runs in more than method and seed "
                             f"({shown}).")
    twins: dict[tuple, list[str]] = {}
    for name, (cfg, _) in best.items():
        twins.setdefault((cfg.get("method"), cfg.get("seed")), []).append(name)
    for (method, seed), names in twins.items():
        if len(names) > 1:
            notes.append(f"{' and '.join(f'`{n}`' for n in names)} are the same method ({method}) and seed ({seed}) "
                         f"with the same settings: both count, as if they were different seeds"
                         + (f", so the {baseline} target averages a repeated run" if method == baseline else "") + ".")
    for name, (cfg, records) in best.items():
        done, total = _steps_done(records), cfg.get("total_steps")
        if total and done < total:
            notes.append(f"`{name}` stopped at step {done} of {total}: it counts as far as it got.")
    if not any(cfg.get("method") == baseline for cfg, _ in best.values()):
        methods = ", ".join(sorted({cfg.get("method", "?") for cfg, _ in best.values()}))
        notes.append(f"No `{baseline}` run among the compared runs (methods: {methods}), so there is no default "
                     f"target and no ratio: train one with the same settings and `-p method {baseline}`, or set "
                     f"`target_pass_rate`.")
    return best, notes


def compare_runs(runs: Mapping[str, RunLog], *, baseline: str = "grpo", target: float = 0.0) -> tuple[pd.DataFrame, float]:
    """One row per run: final pass rate, cost, and time-to-target against the ``baseline`` method.

    ``target`` <= 0 means the paper's choice (Table 1): the baseline runs' mean final eval pass rate
    (NaN without a baseline run). Ratios divide a run's seconds / generations to target by the baseline
    runs' mean; < 1 is faster. Raises :class:`RunMismatchError` for runs that do not compare
    (decision 2). Returns (table, target used).
    """
    never = [name for name, (_, records) in runs.items() if not any(r.get("eval/pass_rate") is not None
                                                                     for r in records)]
    diff = run_differences(runs)
    if never or diff:
        parts = [f"{k}: " + ", ".join(f"{n} {v!r}" for n, v in values.items()) for k, values in diff.items()]
        raise RunMismatchError("these runs do not compare: " + "; ".join(
            ([f"never evaluated: {', '.join(never)}"] if never else []) + parts)
            + ". Narrow the glob, or use comparable_runs() to keep the largest set that compares.")
    base = [records for cfg, records in runs.values() if cfg.get("method") == baseline]
    if target <= 0:
        finals = [final_pass_rate(r) for r in base]
        target = float(np.nanmean(finals)) if base and not np.all(np.isnan(finals)) else float("nan")
    has_target = bool(np.isfinite(target))
    base_hits = [time_to_target(r, target) for r in base] if has_target else []
    base_s = float(np.nanmean([h["seconds"] for h in base_hits])) if base_hits else np.nan
    base_g = float(np.nanmean([h["generations"] for h in base_hits])) if base_hits else np.nan
    rows = []
    for name, (cfg, records) in runs.items():
        fig = run_figures(records, target)
        trained = not np.isnan(fig["total_seconds"])  # some step was logged
        row = {"run": name, "method": cfg.get("method"), "seed": cfg.get("seed"), "steps": _steps_done(records),
               "final eval pass rate": round(fig["final_pass_rate"], 3),
               "generations": int(fig["total_generations"]) if trained else 0,
               "training seconds": round(fig["total_seconds"], 1) if trained else 0.0,
               "seconds / step": round(fig["seconds_per_step"], 2) if trained else np.nan}
        if has_target:
            row.update({"step to target": fig["step"], "seconds to target": round(fig["seconds"], 1),
                        "generations to target": fig["generations"]})
            if base_hits:
                row.update({f"time ratio vs {baseline}": round(fig["seconds"] / base_s, 3) if base_s else np.nan,
                            f"generation ratio vs {baseline}": round(fig["generations"] / base_g, 3) if base_g
                            else np.nan})
        rows.append(row)
    if not rows:
        return pd.DataFrame(), target
    table = pd.DataFrame(rows).set_index("run")
    table.index.name = None  # a named index adds an empty header row
    first = ["method", "seed", *[c for c in table if c.endswith(f"vs {baseline}")], "final eval pass rate"]
    table = table[first + [c for c in table if c not in first]]  # the result first: visible without scrolling
    for col in ("seed", "steps", "generations", "step to target", "generations to target"):
        if col in table:
            table[col] = table[col].astype("Int64")  # integers stay integers beside a missing value
    return table, target


def describe_result(table: pd.DataFrame, target: float, *, baseline: str = "grpo") -> str:
    """What the comparison found, in words: per method, its mean time ratio to the target and its mean final
    pass rate next to the baseline's (time to target alone hides a method that is slower to the target
    but ends higher)."""
    col = f"time ratio vs {baseline}"
    if table.empty or col not in table or not np.isfinite(target):
        return "No time ratios: the comparison has no target (see above)."
    by = table.groupby("method")
    base_final = by["final eval pass rate"].mean().get(baseline, float("nan"))
    parts = []
    for method, rows in by:
        if method == baseline:
            continue
        ratio, reached = rows[col].dropna(), rows["step to target"].notna().sum()
        final = rows["final eval pass rate"].mean()
        speed = (f"reached the target ({target:.3f}) in {len(rows)} of {len(rows)} runs, in "
                 f"{ratio.mean():.2f}× {baseline}'s time on average" if reached == len(rows) else
                 f"reached the target ({target:.3f}) in {reached} of {len(rows)} runs"
                 + (f" (those in {ratio.mean():.2f}× {baseline}'s time)" if len(ratio) else ""))
        parts.append(f"**`{method}`** {speed}, and ended at {final:.3f} against {baseline}'s {base_final:.3f}"
                     f" ({len(rows)} run{'s' if len(rows) > 1 else ''} against "
                     f"{int((table['method'] == baseline).sum())}).")
    return " ".join(parts) if parts else f"Only {baseline} runs: nothing to compare with."


def run_overview(runs: Mapping[str, RunLog], compared: Mapping[str, RunLog]) -> pd.DataFrame:
    """Every run found, one row each: method, seed, task, steps done / planned, evaluations, compared or not."""
    rows = {name: {"method": cfg.get("method"), "seed": cfg.get("seed"), "task": cfg.get("task"),
                   "steps": f"{_steps_done(records)} / {cfg.get('total_steps')}",
                   "evaluations": sum(1 for r in records if r.get("eval/pass_rate") is not None),
                   "compared": "yes" if name in compared else "no"}
            for name, (cfg, records) in runs.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def describe_comparison(compared: Mapping[str, RunLog], target: float, notes: Sequence[str], *,
                        baseline: str = "grpo", explicit_target: bool = False) -> str:
    """Markdown: what is compared (methods, task, step budget), the target, and the notes as warnings."""
    if not compared:
        head = "**No run to compare.**"
    else:
        cfg = next(iter(compared.values()))[0]
        methods = pd.Series([c.get("method") for c, _ in compared.values()]).value_counts()
        counts = ", ".join(f"{m} ×{n}" for m, n in methods.items())
        how = ("set by target_pass_rate" if explicit_target else f"the mean final held-out pass rate of the "
               f"{baseline} runs")
        goal = f"target pass rate **{target:.3f}** ({how})" if np.isfinite(target) else "**no target**"
        head = (f"Comparing **{len(compared)} run{'s' if len(compared) != 1 else ''}** ({counts}) on task "
                f"`{cfg.get('task')}`, "
                f"{cfg.get('total_steps')} steps each; {goal}.")
    return head + "".join(f"\n\n> ⚠ {note}" for note in notes)

"""The paper's ablations as sweeps: one DOTS+RR knob at a time, against GRPO on the same seeds.

    .venv/bin/python -m benchmarks.sweep --config mini [--knobs alpha K delta C] [--seeds 0 1 2 3 4]
                                         [--out benchmarks/results] [--set total_steps=4 ...]
                                         [--resume benchmarks/results/runs/sweep-mini-<timestamp>]
                                         [--readme docs/benchmarks.md]

Sun et al., arXiv 2506.05316, §5 ablations (target difficulty α, reference-set size K, fresh share δ,
buffer capacity C; docs/method.md §0). Each knob's values are run as arms of DOTS+RR (history
predictor, the ``mini`` benchmark's primary arm) beside GRPO, which every knob shares, with the part-1
machinery of ``benchmarks.run`` (``timetotarget``): per value and seed, the final held-out pass rate and
the time to GRPO's final pass rate; per value, the median time ratio with its bootstrap 95% CI and the
mean final pass rate with a bootstrap 95% CI.

Writes ``<out>/sweep-<config>-latest.json`` and one figure per
knob, ``<out>/sweep-<config>-<knob>.png``; run folders go to ``<out>/runs/sweep-<config>-<timestamp>/``.
With ``--readme docs/benchmarks.md`` the block between the ``benchmark:sweep-<config>`` markers there is
rewritten from the result (:func:`sweep_markdown`).

Decisions:
  1. Values: α ∈ {0.3, 0.5, 0.7}, K ∈ {4, 16, 64}, δ ∈ {0.25, 0.5, 1}, C ∈ {B/2, B, 2B}. δ = 1 means no
     replay (DOTS alone); K applies to every round (``later_reference_set_size`` -1). Not among the
     paper's ablations, the question encoder as a knob: MiniLM (the default), the policy's own mean
     hidden state (``policy``) and a hashed bag of characters with no meaning (``hash``, a control).
     ``--knobs`` chooses; the default runs the paper's four.
  2. The default values of the other knobs are the config's; one knob varies at a time.
  3. A run whose folder holds the same config is read back with ``--resume`` (as ``benchmarks.run``), so
     the GRPO runs are trained once. The value a knob has in the config is run as the bench's ``dots_rr``
     arm (same name, same config), so it too is trained once and shared by every knob.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .configs import CONFIGS, DOTS_RR_HISTORY, GRPO, Arm, Bench, arm, with_settings
from .report import _num

KNOBS: dict[str, tuple[str, Callable[[Bench], tuple[Any, ...]]]] = {
    "alpha": ("target_difficulty", lambda b: (0.3, 0.5, 0.7)),
    "K": ("reference_set_size", lambda b: (4, 16, 64)),
    "delta": ("fresh_fraction", lambda b: (0.25, 0.5, 1.0)),
    "C": ("buffer_capacity", lambda b: (max(1, b.train.grpo.questions_per_step // 2), b.train.grpo.questions_per_step,
                                        2 * b.train.grpo.questions_per_step)),
    "embedder": ("embedder", lambda b: ("minilm", "policy", "hash")),
}
"""Knob name -> (Config key, its values for a bench)."""
PAPER_KNOBS = ("alpha", "K", "delta", "C")
"""The paper's ablations, which the sweep runs unless ``--knobs`` says otherwise."""


def show(value: Any) -> str:
    """A knob value as text: numbers in their shortest form (0.5, 16), names as they are."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def knob_value(bench: Bench, knob: str) -> Any:
    """The value ``knob`` takes in the bench's own training config (δ, K, α, C, encoder of DOTS+RR's arm)."""
    return bench.train.to_flat()[KNOBS[knob][0]]


def knob_arms(bench: Bench, knob: str) -> list[tuple[Any, Arm]]:
    """(value, arm) for each of ``knob``'s values: DOTS+RR (history), named like ``K=16``.

    The value the config already has is the bench's own ``dots_rr`` arm (decision 3), so one run serves
    every knob at its default and is the same run the benchmark's primary arm would be.
    """
    key, values = KNOBS[knob]
    default = knob_value(bench, knob)
    return [(v, DOTS_RR_HISTORY if v == default else
             arm(f"{knob}={show(v)}", f"DOTS+RR, {knob} = {show(v)}", method="dots_rr", predictor_mode="history",
                 **{key: v}))
            for v in values(bench)]


def bootstrap_mean_ci(values: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean (values resampled with replacement); nan for < 2 values."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    means = np.random.default_rng(seed).choice(x, size=(resamples, len(x)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def knob_table(summary: Mapping[str, Any], valued_arms: Sequence[tuple[Any, Arm]],
               diagnostics: Mapping[str, Any] | None = None, in_run: Mapping[str, Any] | None = None,
               ) -> list[dict[str, Any]]:
    """One row per value: median time ratio (CI) and mean final pass rate (CI) over the seeds, and the
    mechanism the knob acts through (``timetotarget.step_diagnostics``, ``predictor_quality.in_run_quality``):
    seconds per step, share of fresh groups with reward spread, in-run predictor Pearson (pooled, and
    within a batch), replay's mean c and the mean pre-clip gradient norm."""
    rows = []
    for value, a in valued_arms:
        m = summary["methods"][a.name]
        finals = [f["final_pass_rate"] for f in summary["per_seed"][a.name].values()
                  if not math.isnan(f["final_pass_rate"])]
        lo, hi = bootstrap_mean_ci(finals)
        r = m["seconds_ratio"]
        d, q = (diagnostics or {}).get(a.name) or {}, (in_run or {}).get(a.name) or {}
        rows.append({"arm": a.name, "value": value,
                     "time_ratio": r.get("median"), "time_ratio_ci": [r.get("ci_low"), r.get("ci_high")],
                     "reached": m["seconds"]["reached"], "final_pass_rate": float(np.mean(finals)) if finals else None,
                     "final_pass_rate_ci": [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi],
                     "step_seconds": d.get("step_seconds"), "spread_share": d.get("spread_share"),
                     "predictor_r": (q.get("pooled") or {}).get("pearson", {}).get("mean"),
                     "predictor_r_within_batch": (q.get("per_step_pearson") or {}).get("mean"),
                     "mean_c": d.get("mean_c"), "grad_norm_mean": d.get("grad_norm_mean")})
    return rows


def _finite_or_nan(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None or not math.isfinite(v) else v for v in values], dtype=float)


def plot_knob(knob: str, rows: Sequence[Mapping[str, Any]], grpo_final: float | None, path: Path,
              n_seeds: int) -> None:
    """Two panels: time to GRPO's final pass rate (ratio, median and CI) and final pass rate (mean and CI).

    A value whose median ratio is infinite (the target missed in at least half the seeds) is written
    as "not reached (k/n)" at the top of the panel; an infinite upper CI end is an arrow to the top.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in ((a1, "time_ratio", "time to GRPO's final pass rate (ratio to GRPO)"),
                           (a2, "final_pass_rate", "final held-out pass rate")):
        mid = _finite_or_nan([r[key] for r in rows])
        lo, hi = _finite_or_nan([r[key + "_ci"][0] for r in rows]), _finite_or_nan([r[key + "_ci"][1] for r in rows])
        ax.errorbar(x, mid, yerr=[np.nan_to_num(mid - lo), np.nan_to_num(hi - mid)], fmt="o", capsize=4)
        ax.axhline(1.0 if key == "time_ratio" else (grpo_final or np.nan), color="grey", ls="--", lw=1, label="GRPO")
        ax.set_xticks(x, [f"{knob} = {show(r['value'])}" for r in rows])
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="lower left" if key == "time_ratio" else "best")
    top = max([1.6, *[v for v in _finite_or_nan([r["time_ratio"] for r in rows]) if np.isfinite(v)]]) * 1.1
    a1.set_ylim(0, top)
    for i, r in enumerate(rows):
        ratio, ci_hi = r["time_ratio"], r["time_ratio_ci"][1]
        if ratio is None or not math.isfinite(ratio):
            a1.text(i, top * 0.8, f"not reached\n({r['reached']}/{n_seeds})", ha="center", va="center", fontsize=8,
                    color="#a00")
        elif ci_hi is None or not math.isfinite(ci_hi):
            a1.annotate("", xy=(i, top), xytext=(i, ratio), arrowprops={"arrowstyle": "->", "color": "C0"})
    a1.set_ylabel("median, 95% CI (arrow: CI reaches ∞)")
    a2.set_ylabel("mean over seeds, 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _two(x: Any) -> str:
    return _num(x, "{:.2f}")


def _ci(mid: Any, ci: Sequence[Any], spec: str = "{:.2f}") -> str:
    return f"{_num(mid, spec)} [{_num(ci[0], spec)}–{_num(ci[1], spec)}]"


def _ratio(r: Mapping[str, Any], n_seeds: int) -> str:
    """A time-ratio cell from JSON, where an infinite value (target missed) was written as null."""
    if r["time_ratio"] is None:
        return f"not reached ({r['reached']}/{n_seeds})"
    lo, hi = r["time_ratio_ci"]
    return f"{_two(r['time_ratio'])} [{_two(lo)}–{'∞' if hi is None else _two(hi)}]"


def sweep_markdown(result: Mapping[str, Any], figure_dir: str = "") -> str:
    """The sweep as Markdown: what ran, one table row per knob value (GRPO first), one figure per knob."""
    seeds = result["seeds"]
    lines = [f"**dotslab ablation sweep `{result['config']}`**: {result['created']} UTC, "
             f"{result['machine'].get('cpu_count', '?')}× {result['machine'].get('cpu_model', '?')}, seeds "
             f"{', '.join(map(str, seeds))}.", "", f"`{result['command']}`", "",
             "Each knob varies alone around the `mini` configuration (DOTS+RR, history predictor). Time ratio: "
             "training seconds to GRPO's final held-out pass rate (same seed), over GRPO's; median over the "
             "seeds with a bootstrap 95% CI (∞: not reached in enough resamples). Final pass rate: mean over "
             "seeds with a bootstrap 95% CI. The mechanism columns are means over all training steps: seconds "
             "per step, share of fresh groups with reward spread, the in-run predictor's Pearson r (pooled "
             "per seed / within each batch), replay's mean c and the pre-clip gradient norm.", "",
             "| knob | value | reached | time ratio | final pass rate | s / step | groups with spread | "
             "predictor r (pooled / batch) | mean c | grad norm |", "|---" * 10 + "|"]
    for knob, k in result["knobs"].items():
        for r in [*k.get("grpo_rows", []), *k["rows"]]:
            value = "GRPO" if r["arm"] == "grpo" else (f"**{show(r['value'])}** (config)" if r["arm"] == "dots_rr"
                                                       else show(r["value"]))
            lines.append(
                f"| {knob} | {value} | {r['reached']}/{len(seeds)} | {_ratio(r, len(seeds))} | "
                f"{_ci(r['final_pass_rate'], r['final_pass_rate_ci'], '{:.3f}')} | {_two(r['step_seconds'])} | "
                f"{_two(r['spread_share'])} | {_two(r['predictor_r'])} / {_two(r['predictor_r_within_batch'])} | "
                f"{_two(r['mean_c'])} | {_two(r['grad_norm_mean'])} |")
    lines.append("")
    for knob in result["knobs"]:
        lines.append(f"![sweep {knob}]({figure_dir}sweep-{result['config']}-{knob}.png)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from . import predictor_quality, report, timetotarget

    ap = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--knobs", nargs="+", choices=sorted(KNOBS), default=list(PAPER_KNOBS))
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's first 5 seeds")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override training Config keys")
    ap.add_argument("--resume", default=None, metavar="RUNS_FOLDER", help="read back runs finished in this folder")
    ap.add_argument("--readme", default=None, metavar="DOC", help="rewrite the sweep's marker block in this file "
                    "(docs/benchmarks.md)")
    args = ap.parse_args(argv)
    bench = with_settings(CONFIGS[args.config](), args.set)
    seeds = tuple(args.seeds or bench.seeds[:5])
    if bench.torch_threads:
        torch.set_num_threads(bench.torch_threads)
    out = Path(args.out).resolve()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_root = Path(args.resume).resolve() if args.resume else out / "runs" / f"sweep-{bench.name}-{stamp}"
    command = "python -m benchmarks.sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {"config": bench.name, "created": stamp, "seeds": list(seeds), "command": command,
                              "machine": report.machine_info(), "knobs": {}}
    for knob in args.knobs:
        valued = knob_arms(bench, knob)
        arms = [GRPO, *(a for _, a in valued)]
        print(f"knob {knob}: {len(arms)} arms x {len(seeds)} seeds", flush=True)
        records, _ = timetotarget.run_methods(bench, arms, seeds, run_root, None, reuse=True)  # decision 3
        summary = timetotarget.summarise(records)
        diagnostics, in_run = timetotarget.step_diagnostics(records), predictor_quality.in_run_quality(records)
        rows = knob_table(summary, valued, diagnostics, in_run)
        grpo_final = summary["methods"]["grpo"]["final_pass_rate_mean"]
        result["knobs"][knob] = {"key": KNOBS[knob][0], "rows": rows, "grpo_final_pass_rate": grpo_final,
                                 "grpo_rows": knob_table(summary, [(None, GRPO)], diagnostics, in_run),
                                 "targets": summary["targets"]}
        plot_knob(knob, rows, grpo_final, out / f"sweep-{bench.name}-{knob}.png", len(seeds))
        for r in rows:
            print(f"  {r['arm']:>10}: time ratio {r['time_ratio']} {r['time_ratio_ci']}, final pass rate "
                  f"{r['final_pass_rate']} {r['final_pass_rate_ci']} (GRPO {grpo_final}); spread share "
                  f"{r['spread_share']}, predictor r {r['predictor_r']}, mean c {r['mean_c']}", flush=True)
    report.write_json(out / f"sweep-{bench.name}-latest.json", result)  # one copy; git keeps the older ones
    if args.readme:
        doc = Path(args.readme).resolve()
        rel = os.path.relpath(out, doc.parent).replace(os.sep, "/") + "/"
        report.update_readme(doc, f"sweep-{bench.name}", sweep_markdown(report.clean(result), rel), "benchmarks.sweep")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

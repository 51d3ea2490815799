"""Benchmark output: the machine record, the JSON file, the markdown table and the plot.

Not from the paper; the table mirrors its Table 1 (time to GRPO's final accuracy, ratio to GRPO)
and docs/method.md §7 (predictor r, step-time split).

Decisions:
  1. JSON has no NaN/inf: non-finite numbers are written as null (read: not reached / undefined).
  2. The markdown file is what README pastes, so it names the machine, the date and the command.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping

SCHEMA = "dotslab-benchmark/1"
METHOD_LABELS = {"grpo": "GRPO", "dots": "DOTS", "rr": "RR", "dots_rr": "DOTS+RR"}


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu_model": cpu,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__, "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_start": list(os.getloadavg())}
    try:
        import trl
        info["trl"] = trl.__version__
    except ImportError:
        info["trl"] = None
    try:
        root = Path(__file__).resolve().parent.parent
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
        # tracked files only: earlier results not yet committed do not make the code dirty
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                                capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, dict keys -> str, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return clean(obj.item())
    return obj


def write_json(path: Path, result: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- markdown ----------------------------------------------------------------------------------
def _num(x: Any, fmt: str = "{:.1f}") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _spread(s: Mapping[str, Any] | None, fmt: str = "{:.1f}") -> str:
    if not s or s.get("n", 0) == 0:
        return "—"
    if s["median"] is None:
        return f"not reached ({s['reached']}/{s['n']})"
    tail = "" if s["reached"] == s["n"] else f", reached {s['reached']}/{s['n']}"
    rng = (f" [{_num(s['min'], fmt)}–{_num(s['max'], fmt)}]" if s["max"] is not None
           else f" [{_num(s['min'], fmt)}–not reached]")
    return f"{_num(s['median'], fmt)}{rng}{tail}"


def _ratio(s: Mapping[str, Any] | None) -> str:
    """Median ratio with its bootstrap 95% CI: '0.62 [0.48–0.81]'; '>1 (not reached)' style when missed."""
    if not s or s.get("n", 0) == 0:
        return "undefined" if s and s.get("undefined") else "—"
    if s["median"] is None:
        return f"not reached ({s['reached']}/{s['n']})"
    if "ci_low" not in s:  # results written before the CIs existed
        return f"{s['median']:.2f}" + (f" [{_num(s['min'], '{:.2f}')}–{_num(s['max'], '{:.2f}')}]" if s["n"] > 1 else "")
    high = "∞" if s.get("ci_high_inf") else _num(s["ci_high"], "{:.2f}")
    return f"{s['median']:.2f} [{_num(s['ci_low'], '{:.2f}')}–{high}]"


def _label(result: Mapping[str, Any], name: str) -> str:
    arms = {a["name"]: a.get("label") or a["name"] for a in result.get("settings", {}).get("arms", [])}
    return arms.get(name) or METHOD_LABELS.get(name, name)


def _pm(mean: Any, se: Any, fmt: str = "{:.3f}") -> str:
    return "—" if mean is None else _num(mean, fmt) + ("" if se is None else " ± " + _num(se, fmt))


def markdown(result: Mapping[str, Any]) -> str:
    m, parts = result["machine"], result["parts"]
    lines = [f"**dotslab benchmark `{result['config']}`** — {result['created']}, "
             f"{m['cpu_count']}× {m['cpu_model']}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
             + f", torch {m['torch']}, load average {m['loadavg_start'][0]:.1f} → "
             f"{m.get('loadavg_end', [math.nan])[0]:.1f}, commit {m.get('git_commit')}"
             + (" (dirty)" if m.get("git_dirty") else "") + f", wall {result['wall_seconds'] / 60:.1f} min.",
             "", f"`{result['command']}`", "", result["settings_line"], ""]
    if result.get("resumed_from"):
        lines[-1:-1] = ["", f"Resumed with `--resume`: every training run that had finished in "
                        f"`{Path(result['resumed_from']).name}` was read back with the timings recorded while it "
                        "trained; the wall time above is this invocation's."]
    t = parts.get("timetotarget")
    if t:
        seeds = t["seeds"]
        init = [t["initial_pass_rate"][str(s)] for s in seeds]
        tgt = [t["targets"][str(s)] for s in seeds]
        bad = [str(s) for s, ok in t["grpo_improved"].items() if not ok]
        lines += [f"**1. Time to GRPO's final held-out pass rate** (seeds {', '.join(map(str, seeds))}; target per "
                  f"seed = GRPO's final pass rate: {', '.join(_num(x, '{:.3f}') for x in tgt)}; GRPO step-0 pass rate "
                  f"{', '.join(_num(x, '{:.3f}') for x in init)}"
                  + ("" if not bad else f"; **GRPO did not improve in seed(s) {', '.join(bad)}: their target is "
                                        "trivial and they are left out of the ratios**")
                  + "). Ratios to GRPO per seed, summarised by their median over the usable seeds and a bootstrap "
                  "95% CI of the median (∞: the arm missed the target in enough resampled seeds). Seconds are "
                  "training wall-clock (evaluation excluded); generations include reference rollouts.", "",
                  "| arm | reached | time ratio | generations ratio | steps ratio | final pass rate (mean ± SE) | "
                  "s / step | generations / step | groups with reward spread |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for arm, a in t["methods"].items():
            lines.append(f"| {_label(result, arm)} | {a['seconds']['reached']}/{a['seconds']['n']} | "
                         f"{_ratio(a['seconds_ratio'])} | {_ratio(a['generations_ratio'])} | "
                         f"{_ratio(a.get('steps_ratio'))} | "
                         f"{_pm(a.get('final_pass_rate_mean'), a.get('final_pass_rate_se'))} | "
                         f"{_spread(a['seconds_per_step'])} | {_spread(a.get('generations_per_step'), '{:.1f}')} | "
                         f"{_spread(a['effective_frac'], '{:.2f}')} |")
        lines.append("")
        lines += _diagnostics_lines(result, t)
    p = parts.get("predictor")
    if p:
        h = p.get("history_size", 0)
        lines += [f"**2. Predictor quality** on {p['probe_size']} held-out questions, Pearson r / MAE, mean over "
                  f"{p['repeats']} random draws of K references from {p['labelled_size']} labelled questions. "
                  "`raw`: paper mode, attention over raw embeddings; `online`: paper mode with the adapter and "
                  f"calibration fitted for {p['fit_steps']} episodes; `history`: history mode, the K references plus "
                  f"{h} other labelled questions standing for the recent fresh groups (K = 0: those alone). A "
                  "draw whose prediction is flat (no ranking) scores r = 0; † marks cells where some draws were "
                  "flat. Labels are noisy (G rollouts each): next to each phase, their split-half reliability ρ "
                  "and √ρ, about the highest r a predictor of the true difficulty can reach against them.", ""]
        cols = sorted({(r["k"], r["predictor"]) for ph in p["phases"].values() for r in ph["results"]},
                      key=lambda c: (c[0], ("raw", "online", "history").index(c[1])))
        lines += ["| phase | embedder | " + " | ".join(f"K={k} {pred}" for k, pred in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for phase, ph in p["phases"].items():
            by = {(r["embedder"], r["k"], r["predictor"]): r for r in ph["results"]}
            for emb in dict.fromkeys(r["embedder"] for r in ph["results"]):
                cells = []
                for k, pred in cols:
                    r = by.get((emb, k, pred))
                    cells.append("—" if r is None else
                                 f"{_num(r['pearson']['mean'], '{:.2f}')} / {_num(r['mae']['mean'], '{:.2f}')}"
                                 + ("†" if r.get("no_ranking_share") else ""))
                rho = ph["label_noise_ceiling"]
                root = math.sqrt(rho) if rho is not None and rho > 0 else None
                lines.append(f"| {phase} (ρ {_num(rho, '{:.2f}')}, √ρ {_num(root, '{:.2f}')}) | {emb} | "
                             + " | ".join(cells) + " |")
        in_run = (parts.get("timetotarget") or {}).get("in_run_predictor") or {}
        if in_run:
            grpo_eff = ((t or {}).get("methods", {}).get("grpo") or {}).get("effective_frac", {}).get("median")
            lines += ["", "During training (each fresh batch scored before its rollouts, references excluded; "
                      "pairs pooled per seed, mean [min–max] over seeds):", "",
                      "| arm | pooled Pearson | pooled Spearman | pooled MAE | per-step Pearson | steps with a flat "
                      "prediction | groups with reward spread (GRPO: " + _num(grpo_eff, "{:.2f}") + ") |",
                      "|---|---|---|---|---|---|---|"]
            for arm, q in in_run.items():
                pooled = q["pooled"]
                cells = [f"{_num(pooled[k]['mean'], '{:.2f}')} [{_num(pooled[k]['min'], '{:.2f}')}–"
                         f"{_num(pooled[k]['max'], '{:.2f}')}]" for k in ("pearson", "spearman", "mae")]
                eff = ((t or {}).get("methods", {}).get(arm) or {}).get("effective_frac", {}).get("median")
                lines.append(f"| {_label(result, arm)} | " + " | ".join(cells) + f" | "
                             f"{_num(q['per_step_pearson']['mean'], '{:.2f}')} | {100 * q['flat_step_share']:.0f}% | "
                             f"{_num(eff, '{:.2f}')}"
                             + (f" ({eff / grpo_eff:.2f}× GRPO)" if eff is not None and grpo_eff else "") + " |")
        for phase, ph in p["phases"].items():
            strata = ", ".join(f"{k} {v['mean']:.2f}" for k, v in ph["difficulty_by_stratum"].items())
            lines.append(f"\nMeasured difficulty, phase {phase}: {strata}.")
        lines.append("")
    o = parts.get("overhead")
    if o:
        lines += [f"**3. Step-time split** (mean seconds per step; share of the step). Bookkeeping = prediction + "
                  f"selection + replay; in {_label(result, o['method'])} it is "
                  f"{_num(100 * o['share_overall'], '{:.2f}')}% of step time overall (mean per step "
                  f"{_num(100 * o['share_mean'], '{:.2f}')}%, max {_num(100 * o['share_max'], '{:.2f}')}%): "
                  + {True: "**under** 3%.", False: "**over** 3%.", None: "not measured."}[o["under_limit"]]
                  + ("" if o["reward_timed_separately"] else " Reward scoring is inside generation.")]
        if o.get("embedding"):
            e = o["embedding"]
            lines[-1] += (f" Embedding ({e['embedder']}) is paid once per question before training: "
                          f"{1000 * e['cold_seconds_per_question']:.2f} ms/question cold, a repeat call encoded "
                          f"{e['cached_call_encoded']} questions.")
        keys = ("time/generation", "time/reference", "time/update", "time/prediction", "time/selection",
                "time/replay", "other")
        lines += ["", "| arm | s / step | " + " | ".join(k.split("/")[-1] for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for arm, sp in o["split"].items():
            lines.append(f"| {_label(result, arm)} | {sp['time/step']:.2f} | "
                         + " | ".join(f"{sp[k]:.2f} ({100 * sp['share'][k]:.1f}%)" for k in keys) + " |")
        lines.append("")
    q = parts.get("peer")
    if q:
        from .peer import peer_markdown
        lines.append(peer_markdown(q))
    return "\n".join(lines) + "\n"


def _diagnostics_lines(result: Mapping[str, Any], t: Mapping[str, Any]) -> list[str]:
    """The per-step diagnostics table (``timetotarget.step_diagnostics``) with the in-run predictor r."""
    d, in_run = t.get("diagnostics"), t.get("in_run_predictor") or {}
    if not d:
        return []
    lines = ["**Why**, from the training steps of all seeds (means per step): where a step's seconds go, the "
             "share of fresh groups with reward spread, the in-run predictor's pooled Pearson r (each fresh batch "
             "scored before its rollouts), replay's importance weight c = π_old/μ (mean of the per-step means, "
             "largest, share of steps above 2), the gradient norm before clipping, and the largest fall of the "
             "held-out pass rate between consecutive evaluations (mean over seeds).", "",
             "| arm | s / step | generation | references | update | other | groups with spread | predictor r | "
             "c mean / max / >2 | grad norm mean / max | largest eval fall |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, a in d.items():
        s = a["seconds"]
        r = (in_run.get(arm) or {}).get("pooled", {}).get("pearson", {}).get("mean")
        c = "—" if a["mean_c"] is None else f"{a['mean_c']:.2f} / {a['max_c']:.1f} / {100 * a['steps_c_over_2']:.0f}%"
        lines.append(f"| {_label(result, arm)} | {a['step_seconds']:.2f} | {s['time/generation']:.2f} | "
                     f"{s['time/reference']:.2f} | {s['time/update']:.2f} | {s['other']:.2f} | "
                     f"{a['spread_share']:.2f} | {_num(r, '{:.2f}')} | {c} | "
                     f"{_num(a['grad_norm_mean'], '{:.2f}')} / {_num(a['grad_norm_max'], '{:.2f}')} | "
                     f"{_num(a['largest_eval_fall'], '{:.3f}')} |")
    return lines + [""]


# ---- plot -------------------------------------------------------------------------------------
def plot(result: Mapping[str, Any], path: Path) -> None:
    """Write :func:`figure` to ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(result)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(result: Mapping[str, Any]):
    """The benchmark's figure: time-to-target in the top row; predictor, step split and peer below, when run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = result["parts"]
    second_row = any(parts.get(k) for k in ("predictor", "overhead", "peer"))
    fig, axes = plt.subplots(2 if second_row else 1, 3, figsize=(16, 9 if second_row else 4.8))
    ax_curve, ax_gen, ax_ttt, ax_pred, ax_split, ax_peer = list(axes.ravel()) + [None] * (0 if second_row else 3)
    colors = {"grpo": "tab:gray", "dots": "tab:blue", "rr": "tab:orange", "dots_rr": "tab:green",
              "dots_rr_paper": "tab:purple", "dapo": "tab:red", "dots_rr_cap2": "tab:brown"}
    t = parts.get("timetotarget")
    if t:
        for method, by_seed in t["curves"].items():
            runs = [pts for pts in by_seed.values() if pts]
            for pts in runs:                                    # each seed: thin
                _, secs, gens, rate = zip(*pts)
                ax_curve.plot(secs, rate, "-", lw=0.8, color=colors.get(method), alpha=0.3)
                ax_gen.plot(gens, rate, "-", lw=0.8, color=colors.get(method), alpha=0.3)
            steps = sorted(set.intersection(*(set(p[0] for p in pts) for pts in runs))) if runs else []
            if steps:                                           # mean over seeds at shared eval steps: bold
                at = [[next(p for p in pts if p[0] == s) for pts in runs] for s in steps]
                mean = [[sum(p[i] for p in row) / len(row) for row in at] for i in (1, 2, 3)]
                label = _label(result, method)
                ax_curve.plot(mean[0], mean[2], "-o", ms=4, lw=2.2, color=colors.get(method), label=label)
                ax_gen.plot(mean[1], mean[2], "-o", ms=4, lw=2.2, color=colors.get(method), label=label)
        for ax, xl in ((ax_curve, "training seconds"), (ax_gen, "generations (reference rollouts included)")):
            ax.set_xlabel(xl)
            ax.set_ylabel("held-out pass rate")
            ax.legend(fontsize=8)
        n_seeds = len(t.get("seeds", ()))
        ax_curve.set_title(f"pass rate vs wall-clock (bold: mean of {n_seeds} seeds; thin: each)")
        ax_gen.set_title("pass rate vs generations")
        names = [m for m in t["methods"] if m != t.get("baseline", "grpo")]
        highest, hatched = 1.0, False
        for j, (key, color) in enumerate((("seconds_ratio", "tab:purple"), ("generations_ratio", "tab:olive"),
                                          ("steps_ratio", "tab:cyan"))):
            x = [i + (j - 1) * 0.27 for i in range(len(names))]
            labelled = False  # each ratio named once in the legend, on whichever bar comes first
            for xi, m in zip(x, names):
                r = t["methods"][m].get(key) or {}
                if not r.get("n"):
                    continue
                med = r["median"]
                hi = 2.0 if r.get("ci_high_inf") or r.get("ci_high") is None else r["ci_high"]
                lo = r.get("ci_low") if r.get("ci_low") is not None else (med if med is not None else hi)
                label, labelled = (None if labelled else key.split("_")[0]), True
                if med is None:  # median not reached: an open bar to the plot's top
                    ax_ttt.bar(xi, 2.0, 0.27, color="none", edgecolor=color, hatch="//", label=label)
                    hatched = True
                    continue
                ax_ttt.bar(xi, med, 0.27, color=color, label=label)
                ax_ttt.errorbar(xi, med, yerr=[[max(0, med - lo)], [max(0, hi - med)]], color="k", capsize=3, lw=1)
                highest = max(highest, min(hi, 2.0))
        ax_ttt.axhline(1.0, color="k", lw=0.8, ls="--")
        ax_ttt.axhline(0.6, color="tab:red", lw=0.8, ls=":")
        ax_ttt.set_ylim(0, max(1.3, 1.1 * highest))
        ax_ttt.set_xticks(range(len(names)), [_label(result, m) for m in names], fontsize=8, rotation=20,
                          ha="right")
        ax_ttt.set_title("to reach GRPO's final pass rate, / GRPO\n(median over seeds, bootstrap 95% CI; "
                         "dotted: 0.6)", fontsize=9)
        if hatched:
            ax_ttt.bar(0, 0, 0, color="none", edgecolor="0.4", hatch="//", label="hatched: median not reached")
        if ax_ttt.get_legend_handles_labels()[0]:  # no bar when no arm has a ratio
            ax_ttt.legend(fontsize=8)
    p = parts.get("predictor")
    if p:
        labels, vals = [], []
        for phase, ph in p["phases"].items():
            for r in ph["results"]:
                if r["embedder"] != "minilm" and len({x["embedder"] for x in ph["results"]}) > 1:
                    continue
                labels.append(f"{phase[:5]} K{r['k']} {r['predictor']}")
                vals.append(r["pearson"]["mean"] if r["pearson"]["mean"] is not None else 0.0)
        kinds = [lab.rsplit(" ", 1)[-1] for lab in labels]
        ax_pred.barh(range(len(vals)), vals, color=[{"raw": "tab:cyan", "online": "tab:blue"}.get(k, "tab:green")
                                                    for k in kinds])
        ax_pred.set_yticks(range(len(vals)), labels, fontsize=6)
        ax_pred.axvline(0, color="k", lw=0.8)
        ax_pred.set_title("predictor Pearson r on held-out probes (minilm)")
    o = parts.get("overhead")
    if o:
        keys = ("time/generation", "time/reference", "time/update", "time/prediction", "time/selection",
                "time/replay", "other")
        names = list(o["split"])
        bottom = [0.0] * len(names)
        for k in keys:
            v = [o["split"][m][k] for m in names]
            ax_split.bar(range(len(names)), v, bottom=bottom, label=k.split("/")[-1])
            bottom = [b + x for b, x in zip(bottom, v)]
        ax_split.set_xticks(range(len(names)), [_label(result, m) for m in names], fontsize=8)
        ax_split.set_ylabel("seconds per step")
        ax_split.set_title(f"step-time split; bookkeeping {100 * (o['share_overall'] or 0):.2f}% of "
                           f"{_label(result, o['method'])}")
        ax_split.set_ylim(0, 1.35 * max(bottom))
        ax_split.legend(fontsize=7, ncol=4, loc="upper center")
    q = parts.get("peer")
    if q:
        from .peer import plot_peer
        plot_peer(ax_peer, q)
    for ax in axes.ravel():
        if not ax.has_data():
            ax.set_visible(False)
    fig.suptitle(f"dotslab benchmark '{result['config']}' — {result['created']} — {result['machine']['cpu_model']}")
    fig.tight_layout()
    return fig


def readme_markers(name: str, writer: str = "benchmarks.run") -> tuple[str, str]:
    """The comment lines around a block in docs/benchmarks.md (``python -m <writer> --readme``)."""
    return (f"<!-- benchmark:{name}:start (written by python -m {writer} --readme; do not edit) -->",
            f"<!-- benchmark:{name}:end -->")


def readme_block(readme: str, name: str, writer: str = "benchmarks.run") -> str | None:
    """The text between ``name``'s markers in ``readme`` (None when the markers are missing)."""
    start, end = readme_markers(name, writer)
    if start not in readme or end not in readme.split(start, 1)[1]:
        return None
    return readme.split(start, 1)[1].split(end, 1)[0].strip("\n")


def readme_content(md: str, png: Path, readme_path: Path) -> str:
    """What goes into the block: the tables and the figure, linked relative to the README."""
    rel = os.path.relpath(png.resolve(), readme_path.resolve().parent).replace(os.sep, "/")
    return f"{md.rstrip()}\n\n![benchmark figure]({rel})"


def update_readme(readme_path: Path, name: str, content: str, writer: str = "benchmarks.run") -> None:
    """Replace the block between ``name``'s markers; a README without them is an error, never rewritten."""
    text = readme_path.read_text(encoding="utf-8")
    start, end = readme_markers(name, writer)
    if readme_block(text, name, writer) is None:
        raise ValueError(f"{readme_path} has no block for benchmark {name!r}: add the lines\n{start}\n{end}")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme_path.write_text(f"{head}{start}\n{content}\n{end}{tail}", encoding="utf-8")

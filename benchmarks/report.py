"""Benchmark output: the machine record, the JSON file, the markdown table and the plot.

Not from the paper; the table mirrors its Table 1 (time to GRPO's final accuracy, ratio to GRPO)
and §7 of METHOD (predictor r, step-time split).

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
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                                text=True, timeout=10).stdout.strip())
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
    if not s or s.get("n", 0) == 0:
        return "undefined" if s and s.get("undefined") else "—"
    if s["median"] is None:
        return f"not reached ({s['reached']}/{s['n']})"
    return f"{s['median']:.2f}" + (f" [{_num(s['min'], '{:.2f}')}–{_num(s['max'], '{:.2f}')}]" if s["n"] > 1 else "")


def markdown(result: Mapping[str, Any]) -> str:
    m, parts = result["machine"], result["parts"]
    lines = [f"**dotslab benchmark `{result['config']}`** — {result['created']}, "
             f"{m['cpu_count']}× {m['cpu_model']}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
             + f", torch {m['torch']}, load average {m['loadavg_start'][0]:.1f} → "
             f"{m.get('loadavg_end', [math.nan])[0]:.1f}, commit {m.get('git_commit')}"
             + (" (dirty)" if m.get("git_dirty") else "") + f", wall {result['wall_seconds'] / 60:.1f} min.",
             "", f"`{result['command']}`", "", result["settings_line"], ""]
    t = parts.get("timetotarget")
    if t:
        init = [t["initial_pass_rate"][str(s)] for s in t["seeds"]]
        tgt = [t["targets"][str(s)] for s in t["seeds"]]
        lines += [f"**1. Time to GRPO's final held-out pass rate** (seeds {', '.join(map(str, t['seeds']))}; "
                  f"target per seed = GRPO's final pass rate: {', '.join(_num(x, '{:.3f}') for x in tgt)}; "
                  f"GRPO step-0 pass rate {', '.join(_num(x, '{:.3f}') for x in init)}"
                  + ("" if all(t["grpo_improved"].values()) else
                     f"; **GRPO did not improve in seed(s) {', '.join(str(s) for s, ok in t['grpo_improved'].items() if not ok)}: "
                     "their target is trivial and excluded from ratios**") + "). Median [min–max] over seeds; "
                  "seconds are training wall-clock (evaluation excluded), generations include reference rollouts.",
                  "",
                  "| method | time to target (s) | ratio to GRPO | generations to target | ratio to GRPO | "
                  "final pass rate | s / step | effective groups |",
                  "|---|---|---|---|---|---|---|---|"]
        for method, s in t["methods"].items():
            lines.append(f"| {METHOD_LABELS.get(method, method)} | {_spread(s['seconds'])} | {_ratio(s['seconds_ratio'])} | "
                         f"{_spread(s['generations'], '{:.0f}')} | {_ratio(s['generations_ratio'])} | "
                         f"{_spread(s['final_pass_rate'], '{:.3f}')} | {_spread(s['seconds_per_step'])} | "
                         f"{_spread(s['effective_frac'], '{:.2f}')} |")
        lines.append("")
    p = parts.get("predictor")
    if p:
        lines += [f"**2. Predictor quality** on {p['probe_size']} held-out questions (K references drawn from "
                  f"{p['labelled_size']} labelled ones, mean over {p['repeats']} draws; `online` = adapter fitted "
                  f"for {p['fit_steps']} episodes). Labels are noisy: split-half ceiling per phase in the header.", "",
                  "| phase | embedder | K | predictor | Pearson | Spearman | MAE |", "|---|---|---|---|---|---|---|"]
        for phase, ph in p["phases"].items():
            for r in ph["results"]:
                lines.append(f"| {phase} (ceiling {_num(ph['label_noise_ceiling'], '{:.2f}')}) | {r['embedder']} | "
                             f"{r['k']} | {r['predictor']} | {_num(r['pearson']['mean'], '{:.2f}')} | "
                             f"{_num(r['spearman']['mean'], '{:.2f}')} | {_num(r['mae']['mean'], '{:.3f}')} |")
        in_run = (parts.get("timetotarget") or {}).get("in_run_predictor") or {}
        for method, halves in in_run.items():
            cells = []
            for half in ("early", "late"):
                h = halves.get(half, {})
                cells.append(f"{half} Pearson {_num((h.get('pearson') or {}).get('mean'), '{:.2f}')}, "
                             f"MAE {_num((h.get('mae') or {}).get('mean'), '{:.3f}')}")
            lines.append(f"\nDuring training ({METHOD_LABELS.get(method, method)}, fresh batch before its rollouts, "
                         f"configured embedder and K): {'; '.join(cells)}.")
        for phase, ph in p["phases"].items():
            strata = ", ".join(f"{k} {v['mean']:.2f}" for k, v in ph["difficulty_by_stratum"].items())
            lines.append(f"\nMeasured difficulty, phase {phase}: {strata}.")
        lines.append("")
    o = parts.get("overhead")
    if o:
        lines += [f"**3. Step-time split** (mean seconds per step; share of the step). Bookkeeping = prediction + "
                  f"selection + replay; in {METHOD_LABELS.get(o['method'], o['method'])} it is "
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
        lines += ["", "| method | s / step | " + " | ".join(k.split("/")[-1] for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for method, s in o["split"].items():
            lines.append(f"| {METHOD_LABELS.get(method, method)} | {s['time/step']:.2f} | "
                         + " | ".join(f"{s[k]:.2f} ({100 * s['share'][k]:.1f}%)" for k in keys) + " |")
        lines.append("")
    q = parts.get("peer")
    if q:
        st = q["settings"]
        lines += [f"**4. One GRPO step, dotslab vs TRL {q['results'].get('trl', {}).get('trl_version', '')} "
                  f"GRPOTrainer** ({st['policy']}; {st['prompts']} prompts × {st['generations']} completions × "
                  f"{st['max_new_tokens']} tokens, {st['device']}, median of {st['timed_steps']} steps after "
                  f"{st['warmup_steps']} warm-up; each in its own process).", "",
                  "| implementation | s / step | peak RSS (MB) | RSS after imports (MB) | RSS after warm-up (MB) | "
                  "timed-step peak above it (MB) |", "|---|---|---|---|---|---|"]
        for impl, r in q["results"].items():
            if "error" in r:
                lines.append(f"| {impl} | error: {r['error'][:120]} | — | — | — | — |")
            else:
                lines.append(f"| {impl} | {_num(r['seconds_per_step'], '{:.3f}')} | {r['peak_rss_mb']:.0f} | "
                             f"{r['rss_after_imports_mb']:.0f} | {_num(r['steady_rss_mb'], '{:.0f}')} | "
                             f"{_num(r['step_transient_mb'], '{:.1f}')} |")
        lines.append(f"\nTRL / dotslab time per step: {_num(q['trl_over_dotslab_time'], '{:.2f}')}.")
    return "\n".join(lines) + "\n"


# ---- plot -------------------------------------------------------------------------------------
def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = result["parts"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax_curve, ax_gen, ax_ttt, ax_pred, ax_split, ax_peer = axes.ravel()
    colors = {"grpo": "tab:gray", "dots": "tab:blue", "rr": "tab:orange", "dots_rr": "tab:green"}
    t = parts.get("timetotarget")
    if t:
        for method, by_seed in t["curves"].items():
            for i, (seed, pts) in enumerate(by_seed.items()):
                if pts:
                    _, secs, gens, rate = zip(*pts)
                    label = METHOD_LABELS.get(method, method) if i == 0 else None
                    ax_curve.plot(secs, rate, "-o", ms=3, color=colors.get(method), alpha=0.7, label=label)
                    ax_gen.plot(gens, rate, "-o", ms=3, color=colors.get(method), alpha=0.7, label=label)
        for ax, xl in ((ax_curve, "training seconds"), (ax_gen, "generations (reference rollouts included)")):
            ax.set_xlabel(xl)
            ax.set_ylabel("held-out pass rate")
            ax.legend(fontsize=8)
        ax_curve.set_title("pass rate vs wall-clock (one line per seed)")
        ax_gen.set_title("pass rate vs generations")
        names = list(t["methods"])
        for j, key in enumerate(("seconds_ratio", "generations_ratio")):
            med = [t["methods"][m][key]["median"] for m in names]
            lo = [t["methods"][m][key]["min"] for m in names]
            hi = [t["methods"][m][key]["max"] for m in names]
            x = [i + (j - 0.5) * 0.38 for i in range(len(names))]
            vals = [v if v is not None else 0 for v in med]
            err = [[max(0, v - (l if l is not None else v)) for v, l in zip(vals, lo)],
                   [max(0, (h if h is not None else v) - v) for v, h in zip(vals, hi)]]
            bars = ax_ttt.bar(x, vals, 0.38, yerr=err, capsize=3, label=key.split("_")[0],
                              color="tab:purple" if j == 0 else "tab:olive")
            for b, m in zip(bars, names):
                if t["methods"][m][key]["median"] is None:
                    text = "not\nreached" if t["methods"][m][key]["n"] else "n/a"
                    ax_ttt.text(b.get_x() + b.get_width() / 2, 0.02, text, ha="center", fontsize=7)
        ax_ttt.axhline(1.0, color="k", lw=0.8, ls="--")
        ax_ttt.set_xticks(range(len(names)), [METHOD_LABELS.get(m, m) for m in names])
        ax_ttt.set_title("time-to-target / GRPO's (median, min–max)")
        ax_ttt.legend(fontsize=8)
    p = parts.get("predictor")
    if p:
        labels, vals = [], []
        for phase, ph in p["phases"].items():
            for r in ph["results"]:
                labels.append(f"{phase[:5]} {r['embedder'][:6]} K{r['k']} {r['predictor'][:3]}")
                vals.append(r["pearson"]["mean"] if r["pearson"]["mean"] is not None else 0.0)
        ax_pred.barh(range(len(vals)), vals, color="tab:cyan")
        ax_pred.set_yticks(range(len(vals)), labels, fontsize=6)
        ax_pred.axvline(0, color="k", lw=0.8)
        ax_pred.set_title("predictor Pearson r on held-out probes")
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
        ax_split.set_xticks(range(len(names)), [METHOD_LABELS.get(m, m) for m in names])
        ax_split.set_ylabel("seconds per step")
        ax_split.set_title(f"step-time split; bookkeeping {100 * (o['share_overall'] or 0):.2f}% of "
                           f"{METHOD_LABELS.get(o['method'], o['method'])}")
        ax_split.legend(fontsize=7)
    q = parts.get("peer")
    if q:
        impls = [i for i, r in q["results"].items() if "error" not in r]
        ax_peer.bar(range(len(impls)), [q["results"][i]["seconds_per_step"] for i in impls], color="tab:red")
        ax_peer.set_xticks(range(len(impls)), impls)
        ax_peer.set_ylabel("seconds per GRPO step")
        tw = ax_peer.twinx()
        tw.plot(range(len(impls)), [q["results"][i]["peak_rss_mb"] for i in impls], "ks--")
        tw.set_ylabel("peak RSS (MB, squares)")
        tw.set_ylim(bottom=0)
        ax_peer.set_title("peer: one GRPO step, tiny model")
    for ax in axes.ravel():
        if not ax.has_data():
            ax.set_visible(False)
    fig.suptitle(f"dotslab benchmark '{result['config']}' — {result['created']} — {result['machine']['cpu_model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

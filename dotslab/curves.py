"""Run curves: one run's training figure (redrawn live or saved beside the run) and several runs
compared. Plotly, plus a matplotlib PNG for a quick look anywhere.

Not from the paper, except that ``training_figure`` and ``comparison_figure`` mirror its Fig. 3/4
(accuracy against steps, wall-clock and rollouts). The library never plots during training on its
own: notebooks pass a :class:`dotslab.live.LiveCurves` as a trainer hook.

Decisions:
  1. Executed notebooks do not keep widget state, so headless runs also save static figures in
     the run folder: ``curves.html`` (plotly, its JS written once beside it, works offline) and
     ``curves.png`` (matplotlib).
  2. Each of the four panels has its own legend with readable names, and a y label; a time series
     below 1% of the step time gets no legend entry (bars of about 0 s explain nothing).
  3. Comparisons give every run its own colour and every method its own line style.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import TIME_KEYS, TIME_NAMES
from .viz import panel_legends, series_xy

TIME_COLORS = ("#636efa", "#fda45c", "#17becf", "#e377c2", "#bcbd22", "#8c564b", "#ffd166")
PANELS = ("pass rate", "groups with no reward spread", "predictor quality", "step time split")
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf")
METHOD_DASH = {"grpo": "dot", "dots": "dash", "rr": "dashdot", "dots_rr": "solid"}
WAITING = "waiting for the first step (it also rolls out the reference set)"
NO_PREDICTOR = "no difficulty predictor in this run:<br>grpo, rr and dapo pick questions uniformly"


def _is_visible(values: Sequence[Any], total: float) -> bool:
    """A time series worth a legend entry: above 1% of all step time (bars of about 0 s are noise)."""
    return sum(v or 0.0 for v in values) > 0.01 * total


def _traces(records: Sequence[dict[str, Any]]) -> list[tuple[go.BaseTraceType, int, int]]:
    # fixed colours: plotly's default cycle repeats after 10 traces, which made two panels share red
    out = []
    for key, name, dash, color in (("train/pass_rate", "train batch", "dot", "#1f77b4"),
                                   ("eval/pass_rate", "held-out eval", None, "#d62728")):
        x, y = series_xy(records, key)
        out.append((go.Scatter(x=x, y=y, name=name, mode="lines+markers", legend="legend",
                               line={"dash": dash, "color": color}), 1, 1))
    x, y = series_xy(records, "rollout/frac_zero_std")
    out.append((go.Scatter(x=x, y=y, name="no-spread share", mode="lines+markers", showlegend=False,
                           line={"color": "#2ca02c"}), 1, 2))
    for key, name, color in (("predictor/pearson", "Pearson r", "#9467bd"), ("predictor/mae", "MAE", "#ff7f0e")):
        x, y = series_xy(records, key)
        out.append((go.Scatter(x=x, y=y, name=name, mode="lines+markers", legend="legend2",
                               line={"color": color}), 2, 1))
    total = sum(r.get("time/step") or 0.0 for r in records)
    for key, color in zip(TIME_KEYS, TIME_COLORS):
        x, y = series_xy(records, key)
        out.append((go.Bar(x=x, y=y, name=TIME_NAMES[key], marker_color=color, legend="legend3",
                           showlegend=_is_visible(y, total)), 2, 2))
    return out


def training_figure(records: Sequence[dict[str, Any]], title: str = "") -> go.Figure:
    """A 2x2 figure of one run's metrics records (as logged to metrics.jsonl), each panel with its own
    legend and y label; while no step has been logged it says that it is waiting for one."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=PANELS, horizontal_spacing=0.1, vertical_spacing=0.2)
    for trace, row, col in _traces(records):
        fig.add_trace(trace, row=row, col=col)
    fig.update_layout(barmode="stack", height=600, autosize=True, title=title, margin={"t": 90, "r": 20})
    panel_legends(fig, {0: "legend", 2: "legend2"})
    # up to 7 entries: a column right of the time panel
    fig.layout.legend3 = {"x": 1.01, "xanchor": "left", "y": fig.layout.yaxis4.domain[1], "yanchor": "top",
                          "font": {"size": 11}}
    fig.update_xaxes(title_text="step")
    for row, col, label, span in ((1, 1, "pass rate", [0, 1.02]), (1, 2, "share of fresh groups", [0, 1.02]),
                                  (2, 1, "Pearson r / MAE", [-1.05, 1.05]), (2, 2, "seconds", None)):
        fig.update_yaxes(title_text=label, range=span, row=row, col=col)
    if not any(r.get("time/step") is not None for r in records):
        fig.add_annotation(text=WAITING, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                           font={"size": 15, "color": "#666"}, bgcolor="rgba(255,255,255,0.85)")
    elif not any(r.get("predictor/pearson") is not None or r.get("predictor/mae") is not None for r in records):
        fig.add_annotation(text=NO_PREDICTOR, xref="x3 domain", yref="y3 domain", x=0.5, y=0.5, showarrow=False,
                           font={"size": 12, "color": "#666"})
    return fig


def save_run_figures(run_dir: str | Path, records: Sequence[dict[str, Any]], title: str = "") -> list[Path]:
    """Write curves.html and curves.png into the run folder; returns the paths."""
    run_dir = Path(run_dir)
    html = run_dir / "curves.html"
    training_figure(records, title).write_html(html, include_plotlyjs="directory")
    png = run_dir / "curves.png"
    _matplotlib_curves(records, png, title)
    return [html, png]


def _matplotlib_curves(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("train/pass_rate", "train batch"), ("eval/pass_rate", "held-out eval")):
        axes[0].plot(*series_xy(records, key), marker="o", label=label)
    axes[0].set(title="pass rate", xlabel="step", ylabel="pass rate", ylim=(0, 1))
    axes[0].legend()
    axes[1].plot(*series_xy(records, "rollout/frac_zero_std"), marker="o")
    axes[1].set(title="groups with no reward spread", xlabel="step", ylabel="share of fresh groups", ylim=(0, 1))
    timed = [r for r in records if r.get("time/step") is not None]
    steps, bottom = [r["step"] for r in timed], [0.0] * len(timed)
    total = sum(r["time/step"] for r in timed)
    for key, color in zip(TIME_KEYS, TIME_COLORS):  # every series on the same steps (missing = 0): the stack lines up
        y = [r.get(key) or 0.0 for r in timed]
        if not any(y):
            continue
        axes[2].bar(steps, y, bottom=bottom, color=color, label=TIME_NAMES[key] if _is_visible(y, total) else None)
        bottom = [b + v for b, v in zip(bottom, y)]
    axes[2].set(title="step time split", xlabel="step", ylabel="seconds")
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- several runs -------------------------------------------------------------------------------
def comparison_figure(runs: Mapping[str, Sequence[dict[str, Any]]], target: float | None = None,
                      methods: Mapping[str, str] | None = None) -> go.Figure:
    """Held-out pass rate of several runs against training seconds and against generations.

    ``runs`` maps a run's label to its records. Every run gets its own colour; ``methods`` (label ->
    method) sets the line style, so two seeds of one method look alike in style but stay apart.
    """
    methods = methods or {}
    dashes = dict(METHOD_DASH)
    for m in dict.fromkeys(methods.values()):  # a method we do not know still gets a style of its own
        dashes.setdefault(m, ("longdash", "longdashdot", "dash")[len(dashes) % 3])
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=(
        "held-out pass rate vs training wall-clock", "held-out pass rate vs rollouts (all generations)"))
    for i, (name, records) in enumerate(runs.items()):
        method = methods.get(name)
        for col, x_key in ((1, "time/elapsed"), (2, "rollout/total_generations")):
            x, y = series_xy(records, "eval/pass_rate", x_key)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name if method is None or method in name
                                     else f"{name} ({method})", legendgroup=name, showlegend=col == 1,
                                     line={"color": RUN_COLORS[i % len(RUN_COLORS)],
                                           "dash": dashes.get(method, "solid")}), row=1, col=col)
    has_target = target is not None and np.isfinite(target)
    if has_target:
        fig.add_hline(y=target, line_dash="dash", line_color="grey", annotation_text=f"target {target:.2f}")
    fig.update_xaxes(title_text="seconds", row=1, col=1)
    fig.update_xaxes(title_text="generations (reference rollouts included)", row=1, col=2)
    fig.update_yaxes(title_text="eval pass rate", range=[0, 1.02], row=1, col=1)
    fig.update_layout(height=460, legend={"orientation": "h", "y": -0.22},
                      title=f"{len(runs)} run{'s' if len(runs) != 1 else ''}" + (f"; target pass rate {target:.2f}" if has_target else
                                                   "; no target (no baseline run)"))
    return fig


def seed_bands_figure(bands: Mapping[str, Mapping[str, np.ndarray]], title: str = "") -> go.Figure:
    """Held-out pass rate of several methods over seeds: mean line and lowest-to-highest band, against
    training steps and against training seconds (``bands``: method -> :func:`dotslab.seeds.eval_bands`)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("against training steps", "against training seconds (mean over seeds)"))
    for i, (method, b) in enumerate(bands.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for col, x in ((1, b["step"]), (2, b["seconds"])):
            x = list(map(float, x))
            fig.add_trace(go.Scatter(x=x + x[::-1], y=list(map(float, b["high"])) + list(map(float, b["low"]))[::-1],
                                     fill="toself", fillcolor=color, opacity=0.2, line={"width": 0},
                                     hoverinfo="skip", showlegend=False), 1, col)
            fig.add_trace(go.Scatter(x=x, y=list(map(float, b["mean"])), mode="lines+markers", name=method,
                                     line={"color": color, "dash": METHOD_DASH.get(method)},
                                     showlegend=col == 1), 1, col)
    fig.update_yaxes(title_text="held-out pass rate (band: lowest to highest seed)", col=1)
    fig.update_xaxes(title_text="step", col=1)
    fig.update_xaxes(title_text="seconds", col=2)
    fig.update_layout(title=title or None, width=940, height=380, margin={"t": 60},
                      legend={"orientation": "h", "y": -0.2})
    return fig


"""Figures of a run: pass-rate curves, zero-variance share, step-time split (plotly, live or static).

Not from the paper; the paper's Fig. 3/4 plot accuracy against steps and wall-clock, which
``training_figure`` and ``comparison_figure`` mirror. The library never plots during training on
its own: notebooks pass a :class:`LiveCurves` as a trainer hook.

Decisions:
  1. Executed notebooks do not keep widget state, so headless runs also save static figures in
     the run folder: ``curves.html`` (plotly, its JS written once beside it, works offline) and
     ``curves.png`` (matplotlib, for a quick look anywhere).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

TIME_KEYS = ("time/generation", "time/reference", "time/reward", "time/prediction", "time/selection",
             "time/replay", "time/update")
PANELS = ("pass rate", "groups with no reward spread", "step time split (s)", "predictor quality")


def _xy(records: Sequence[dict[str, Any]], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _traces(records: Sequence[dict[str, Any]]) -> list[tuple[go.BaseTraceType, int, int]]:
    out = []
    for key, name, dash in (("train/pass_rate", "train batch", "dot"), ("eval/pass_rate", "held-out eval", None)):
        x, y = _xy(records, key)
        out.append((go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"dash": dash}), 1, 1))
    x, y = _xy(records, "rollout/frac_zero_std")
    out.append((go.Scatter(x=x, y=y, name="zero-variance share", mode="lines+markers"), 1, 2))
    for key in TIME_KEYS:
        x, y = _xy(records, key)
        out.append((go.Bar(x=x, y=y, name=key.split("/")[1]), 2, 1))
    for key in ("predictor/pearson", "predictor/mae"):
        x, y = _xy(records, key)
        out.append((go.Scatter(x=x, y=y, name=key, mode="lines+markers"), 2, 2))
    return out


def training_figure(records: Sequence[dict[str, Any]], title: str = "") -> go.Figure:
    """A 2x2 figure of one run's metrics records (as logged to metrics.jsonl)."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=PANELS)
    for trace, row, col in _traces(records):
        fig.add_trace(trace, row=row, col=col)
    fig.update_layout(barmode="stack", height=620, title=title, legend={"orientation": "h", "y": -0.12})
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    return fig


class LiveCurves:
    """A trainer hook that redraws :func:`training_figure` as records arrive (JupyterLab).

    Display ``.widget`` in a cell, then pass the object in ``train(cfg, hooks=[live])``.
    """

    def __init__(self, title: str = ""):
        self.records: list[dict[str, Any]] = []
        self.widget = go.FigureWidget(training_figure([], title))

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        fresh = training_figure(self.records)
        with self.widget.batch_update():
            for live, new in zip(self.widget.data, fresh.data):
                live.x, live.y = new.x, new.y


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
        axes[0].plot(*_xy(records, key), marker="o", label=label)
    axes[0].set(title="pass rate", xlabel="step", ylim=(0, 1))
    axes[0].legend()
    axes[1].plot(*_xy(records, "rollout/frac_zero_std"), marker="o")
    axes[1].set(title="groups with no reward spread", xlabel="step", ylim=(0, 1))
    bottom = None
    for key in TIME_KEYS:
        x, y = _xy(records, key)
        if not x:
            continue
        if bottom is None or len(bottom) != len(y):
            bottom = [0.0] * len(y)
        axes[2].bar(x, y, bottom=bottom, label=key.split("/")[1])
        bottom = [b + v for b, v in zip(bottom, y)]
    axes[2].set(title="step time split (s)", xlabel="step")
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

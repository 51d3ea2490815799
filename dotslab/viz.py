"""Figures: run curves, and the pictures the notebooks teach with (difficulty, prediction, attention,
selection, replay, run comparison). Plotly, live or static; every function takes plain data.

Not from the paper, except that ``training_figure`` and ``comparison_figure`` mirror its Fig. 3/4
(accuracy against steps, wall-clock and rollouts). The library never plots during training on its
own: notebooks pass a :class:`LiveCurves` as a trainer hook.

Decisions:
  1. Executed notebooks do not keep widget state, so headless runs also save static figures in
     the run folder: ``curves.html`` (plotly, its JS written once beside it, works offline) and
     ``curves.png`` (matplotlib, for a quick look anywhere).
  2. Each figure has a fixed number of traces whatever the data (empty traces included), so a
     widget can redraw it by copying ``x``/``y`` into an existing ``FigureWidget`` (:func:`sync_figure`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import TIME_KEYS
from .selector import selection_probs

TIME_COLORS = ("#636efa", "#fda45c", "#17becf", "#e377c2", "#bcbd22", "#8c564b", "#ffd166")
PANELS = ("pass rate", "groups with no reward spread", "step time split (s)", "predictor quality")
DIFFICULTY_COLORS = "RdYlGn_r"  # green = easy (d near 0), red = hard (d near 1)


def _xy(records: Sequence[dict[str, Any]], key: str, x_key: str = "step") -> tuple[list, list]:
    pts = [(r[x_key], r[key]) for r in records if r.get(key) is not None and r.get(x_key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _finite(values: Sequence[Any]) -> list:
    """Non-finite numbers as None: a FigureWidget's messages must be strict JSON (no NaN)."""
    return [v if v is not None and np.isfinite(v) else None for v in values]


def sync_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Copy every trace's data and the layout titles of ``fig`` into ``widget`` (same trace layout)."""
    with widget.batch_update():
        for live, new in zip(widget.data, fig.data):
            live.update(new.to_plotly_json())
        widget.layout.title = fig.layout.title
        for name in ("xaxis", "xaxis2", "yaxis", "yaxis2"):
            if name in fig.layout and fig.layout[name] is not None:
                widget.layout[name].update(fig.layout[name].to_plotly_json())
        widget.layout.annotations = fig.layout.annotations
        widget.layout.shapes = fig.layout.shapes


# ---- one run ----------------------------------------------------------------------------------
def _traces(records: Sequence[dict[str, Any]]) -> list[tuple[go.BaseTraceType, int, int]]:
    # fixed colours: plotly's default cycle repeats after 10 traces, which made two panels share red
    out = []
    for key, name, dash, color in (("train/pass_rate", "train batch", "dot", "#1f77b4"),
                                   ("eval/pass_rate", "held-out eval", None, "#d62728")):
        x, y = _xy(records, key)
        out.append((go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"dash": dash, "color": color}),
                    1, 1))
    x, y = _xy(records, "rollout/frac_zero_std")
    out.append((go.Scatter(x=x, y=y, name="zero-variance share", mode="lines+markers", line={"color": "#2ca02c"}),
                1, 2))
    for key, color in zip(TIME_KEYS, TIME_COLORS):
        x, y = _xy(records, key)
        out.append((go.Bar(x=x, y=y, name=key.split("/")[1], marker_color=color), 2, 1))
    for key, color in (("predictor/pearson", "#9467bd"), ("predictor/mae", "#ff7f0e")):
        x, y = _xy(records, key)
        out.append((go.Scatter(x=x, y=y, name=key, mode="lines+markers", line={"color": color}), 2, 2))
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
    timed = [r for r in records if r.get("time/step") is not None]
    steps, bottom = [r["step"] for r in timed], [0.0] * len(timed)
    for key in TIME_KEYS:  # every series on the same steps (missing = 0) so the stack lines up
        y = [r.get(key) or 0.0 for r in timed]
        if not any(y):
            continue
        axes[2].bar(steps, y, bottom=bottom, label=key.split("/")[1])
        bottom = [b + v for b, v in zip(bottom, y)]
    axes[2].set(title="step time split (s)", xlabel="step")
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- difficulty and its prediction ------------------------------------------------------------
def difficulty_figure(difficulty: Sequence[float], group_size: int, title: str = "") -> go.Figure:
    """Measured difficulty of some questions (bars at k/G) beside the gradient signal p(1-p)(1-1/G)."""
    d = np.asarray(difficulty, dtype=float)
    levels = np.arange(group_size + 1) / group_size
    counts = [int(np.sum(np.isclose(d, v))) for v in levels]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "questions by measured difficulty d", "expected gradient signal p(1-p)(1-1/G), p = 1-d"))
    colors = ["#bbbbbb" if v in (0.0, 1.0) else "#1f77b4" for v in levels]
    fig.add_trace(go.Bar(x=levels, y=counts, marker_color=colors, name="questions",
                         text=[f"{c}" for c in counts], textposition="outside"), row=1, col=1)
    grid = np.linspace(0, 1, 101)
    fig.add_trace(go.Scatter(x=grid, y=grid * (1 - grid) * (1 - 1 / group_size), name="signal",
                             mode="lines"), row=1, col=2)
    fig.add_trace(go.Scatter(x=levels, y=levels * (1 - levels) * (1 - 1 / group_size), mode="markers",
                             name="reachable with G", marker={"size": 9}), row=1, col=2)
    share = float(np.mean((d > 0) & (d < 1))) if d.size else float("nan")
    fig.update_layout(title=title or f"{share:.0%} of {d.size} questions have 0 < d < 1 (grey bars teach nothing)",
                      height=380, showlegend=False)
    fig.update_xaxes(title_text="difficulty d (failure rate of G completions)", range=[-0.08, 1.08])
    return fig


def _quality_title(predicted: np.ndarray, actual: np.ndarray) -> str:
    from .predictor import prediction_quality  # lazy: keeps ``import dotslab.viz`` free of torch

    q = prediction_quality(predicted, actual) if len(actual) else {"pearson": np.nan, "spearman": np.nan,
                                                                  "mae": np.nan}
    return f"Pearson {q['pearson']:.2f} · Spearman {q['spearman']:.2f} · MAE {q['mae']:.2f} on {len(actual)} probes"


def prediction_figure(predicted: Sequence[float], actual: Sequence[float], texts: Sequence[str] = (),
                      history: Sequence[Mapping[str, Any]] | None = None, title: str = "") -> go.Figure:
    """Predicted vs measured difficulty on held-out probes; with ``history``, also quality per attempt.

    ``history`` rows hold ``label``, ``pearson``, ``spearman``, ``mae`` (one per reference set tried);
    None draws the scatter alone.
    """
    p, a = np.asarray(predicted, float), np.asarray(actual, float)
    cols = 1 if history is None else 2
    fig = make_subplots(rows=1, cols=cols, column_widths=[0.55, 0.45] if cols == 2 else None,
                        subplot_titles=("predicted vs measured difficulty (probe set)", "quality per reference set"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dash", "color": "grey"}),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=a, y=p, mode="markers", name="probe question", text=list(texts),
                             marker={"size": 9, "opacity": 0.7}), row=1, col=1)
    fig.update_xaxes(title_text="measured difficulty d", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="predicted difficulty d̂", range=[-0.05, 1.05], row=1, col=1)
    if history is not None:
        labels = [h["label"] for h in history]
        for key in ("pearson", "spearman", "mae"):
            fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=_finite([h[key] for h in history]),
                                     name=key, mode="lines+markers", text=labels), row=1, col=2)
        fig.update_xaxes(title_text="attempt", row=1, col=2)
        fig.update_yaxes(range=[-1.05, 1.05], row=1, col=2)
    fig.update_layout(title=title or _quality_title(p, a), height=420, width=None if cols == 2 else 620,
                      legend={"orientation": "h", "y": -0.2})
    return fig


def quality_sweep_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Pearson and MAE against reference-set size K, one line per strategy (rows: strategy, k, pearson, mae)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Pearson r (higher is better)", "MAE (lower is better)"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, strategy in enumerate(sorted({r["strategy"] for r in rows})):
        sub = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["k"])
        color = palette[i % len(palette)]
        for col, key in ((1, "pearson"), (2, "mae")):
            fig.add_trace(go.Scatter(x=[r["k"] for r in sub], y=[r[key] for r in sub], mode="lines+markers",
                                     name=strategy, legendgroup=strategy, showlegend=col == 1,
                                     line={"color": color}), row=1, col=col)
    fig.update_xaxes(title_text="reference-set size K")
    fig.update_layout(title="prediction quality on the probe set by reference strategy and size", height=380)
    return fig


# ---- attention ----------------------------------------------------------------------------------
def attention_bars(weights: Sequence[float], ref_texts: Sequence[str], ref_difficulty: Sequence[float],
                   top: int = 8, title: str = "") -> go.Figure:
    """The ``top`` references with the largest attention weight, coloured by their measured difficulty."""
    w = np.asarray(weights, float)
    order = np.argsort(-w, kind="stable")[:top][::-1]  # largest at the top of a horizontal bar chart
    d = np.asarray(ref_difficulty, float)[order]
    fig = go.Figure(go.Bar(
        x=w[order], y=[f"{_short(ref_texts[i], 32)} [{i}]" for i in order], orientation="h",
        marker={"color": d, "colorscale": DIFFICULTY_COLORS, "cmin": 0, "cmax": 1,
                "colorbar": {"title": "d"}}, text=[f"d={v:.2f}" for v in d], textposition="auto",
        name="attention"))
    fig.update_layout(title=title, height=max(300, 40 * len(order) + 120), xaxis_title="attention weight a_i",
                      margin={"l": 260})
    return fig


def attention_heatmap(attention: Any, query_texts: Sequence[str], ref_texts: Sequence[str],
                      ref_difficulty: Sequence[float], title: str = "") -> go.Figure:
    """Attention (Q, K) over a batch; references sorted from easy to hard, labelled with d."""
    attn = np.asarray(attention, float)
    order = np.argsort(np.asarray(ref_difficulty, float), kind="stable")
    fig = go.Figure(go.Heatmap(
        z=attn[:, order], x=[f"d={ref_difficulty[i]:.2f} [{i}]" for i in order],
        y=[_short(t, 28) for t in query_texts], colorscale="Blues", zmin=0, colorbar={"title": "a"},
        customdata=np.array([[ref_texts[i] for i in order]] * len(query_texts), dtype=object),
        hovertemplate="query %{y}<br>reference %{customdata}<br>%{x}<br>a = %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title or "attention of each query (rows) over the reference set (easy → hard)",
                      height=max(320, 26 * len(query_texts) + 160), xaxis_title="reference (sorted by difficulty)",
                      margin={"l": 220})
    return fig


def temperature_sweep_figure(temperatures: Sequence[float], effective_references: Sequence[float],
                             mae: Sequence[float], pearson: Sequence[float], current: float | None = None) -> go.Figure:
    """How τ changes attention: effective number of references 1/Σa² and prediction quality, vs τ."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("effective references 1/Σ a_i² (mean over queries)",
                                                        "prediction quality vs measured difficulty"))
    fig.add_trace(go.Scatter(x=temperatures, y=effective_references, mode="lines+markers", name="effective K"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=temperatures, y=mae, mode="lines+markers", name="MAE"), row=1, col=2)
    fig.add_trace(go.Scatter(x=temperatures, y=pearson, mode="lines+markers", name="Pearson"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="attention temperature τ")
    if current is not None:
        fig.add_vline(x=current, line_dash="dot", line_color="grey")
    fig.update_layout(title="low τ: one nearest reference decides; high τ: every query gets the mean label",
                      height=380)
    return fig


# ---- selection ----------------------------------------------------------------------------------
def selection_figure(difficulty: Sequence[float], target_difficulty: float, temperature: float,
                     selected: Sequence[int] = (), bins: int = 20) -> go.Figure:
    """The pool over predicted difficulty d̂ (bars) and where DOTS puts its probability mass (line).

    Selection mass of a bin = Σ P(q) over its questions, P from :func:`dotslab.selector.selection_probs`.
    ``selected`` pool indices (one draw) are marked along the bottom.
    """
    d = np.asarray(difficulty, float)
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    which = np.clip(np.digitize(d, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins) if d.size else np.zeros(bins)
    probs = selection_probs(d, target_difficulty, temperature) if d.size else np.zeros(0)
    mass = np.bincount(which, weights=probs, minlength=bins) if d.size else np.zeros(bins)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=centers, y=counts, width=1 / bins, name="pool questions", marker_color="#c7d4e8"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=centers, y=mass, mode="lines+markers", name="selection probability mass",
                             line={"color": "#d62728", "width": 3}), secondary_y=True)
    sel = np.asarray(selected, dtype=int)
    fig.add_trace(go.Scatter(x=d[sel] if sel.size else [], y=[0] * sel.size, mode="markers", name="one draw",
                             marker={"symbol": "line-ns-open", "size": 18, "color": "black"}), secondary_y=True)
    effective = 1.0 / float(np.sum(probs ** 2)) if probs.size else float("nan")
    fig.add_vline(x=target_difficulty, line_dash="dash", line_color="#d62728")
    fig.update_layout(title=f"α = {target_difficulty:.2f}, τ = {temperature:.3g}: effective pool size "
                            f"1/ΣP² = {effective:.1f} of {d.size}", height=400, bargap=0,
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="predicted difficulty d̂", range=[0, 1])
    fig.update_yaxes(title_text="questions", secondary_y=False)
    fig.update_yaxes(title_text="P(q) summed per bin", range=[0, 1.05], dtick=0.2, tickformat=".0%",
                     secondary_y=True)
    return fig


# ---- replay -------------------------------------------------------------------------------------
def replay_buffer_figure(ages: Sequence[int], pass_rates: Sequence[float], is_eligible: Sequence[bool],
                         texts: Sequence[str] = (), title: str = "") -> go.Figure:
    """Buffered groups by age (steps since generated) and pass rate; hollow ones cannot be replayed."""
    ages, rates = np.asarray(ages, int), np.asarray(pass_rates, float)
    ok = np.asarray(is_eligible, bool)
    texts = list(texts) or [""] * len(ages)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("buffered groups", "buffered groups by age"))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=len(ages))  # groups of one age side by side
    kinds = ((True, "replayable", "circle", "#1f77b4"),
             (False, "not replayable (no spread / superseded)", "circle-open", "#888888"))
    for flag, name, symbol, color in kinds:
        m = ok == flag
        fig.add_trace(go.Scatter(x=ages[m] + jitter[m], y=rates[m], mode="markers", name=name, legendgroup=name,
                                 text=[t for t, k in zip(texts, m) if k],
                                 marker={"symbol": symbol, "size": 10, "color": color}), row=1, col=1)
    span = np.arange(int(ages.max()) + 1 if ages.size else 1)
    for flag, name, _, color in kinds:
        fig.add_trace(go.Bar(x=span, y=np.bincount(ages[ok == flag], minlength=len(span)) if ages.size else [0],
                             name=name, legendgroup=name, showlegend=False, marker_color=color), row=1, col=2)
    fig.update_xaxes(title_text="age (steps since generated)", dtick=1)
    fig.update_yaxes(title_text="pass rate of the group", range=[-0.05, 1.05], row=1, col=1)
    fig.update_layout(barmode="stack", height=400, title=title or f"replay buffer: {len(ages)} groups, "
                      f"{int(ok.sum())} replayable", legend={"orientation": "h", "y": -0.2})
    return fig


def replay_share_figure(records: Sequence[dict[str, Any]]) -> go.Figure:
    """Per step: fresh, replayed and missing (shortfall) groups, and the age of what was replayed."""
    steps = [r for r in records if r.get("rollout/pass_rate_hist") is not None]
    x = [r["step"] for r in steps]
    fresh = [sum(r["rollout/pass_rate_hist"]) for r in steps]  # the histogram counts the fresh groups
    fig = make_subplots(rows=1, cols=2, subplot_titles=("groups per step", "age of replayed groups (steps)"))
    for name, ys, color in (("fresh", fresh, "#1f77b4"),
                            ("replayed", [r.get("replay/replayed") or 0 for r in steps], "#ff7f0e"),
                            ("shortfall (buffer had too few)", [r.get("replay/shortfall") or 0 for r in steps],
                             "#dddddd")):
        fig.add_trace(go.Bar(x=x, y=ys, name=name, marker_color=color), row=1, col=1)
    replayed = [r for r in steps if (r.get("replay/replayed") or 0) > 0]  # age 0 is logged when none was
    for key, name, rows in (("replay/mean_age", "replayed groups", replayed),
                            ("replay/buffer_mean_age", "whole buffer", steps)):
        x_age, y_age = _xy(rows, key)
        fig.add_trace(go.Scatter(x=x_age, y=y_age, mode="lines+markers", name=f"mean age, {name}"), row=1, col=2)
    fig.update_xaxes(title_text="step", dtick=1)
    fig.update_layout(barmode="stack", height=380, legend={"orientation": "h", "y": -0.2},
                      title="fresh vs replayed share per step")
    return fig


# ---- several runs -------------------------------------------------------------------------------
def comparison_figure(runs: Mapping[str, Sequence[dict[str, Any]]], target: float | None = None,
                      groups: Mapping[str, str] | None = None) -> go.Figure:
    """Held-out pass rate of several runs against training seconds and against generations.

    ``runs`` maps a run name to its records; ``groups`` (name -> method) colours runs by method.
    """
    groups = groups or {name: name for name in runs}
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    color = {g: palette[i % len(palette)] for i, g in enumerate(dict.fromkeys(groups[n] for n in runs))}
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=(
        "held-out pass rate vs training wall-clock", "held-out pass rate vs rollouts (all generations)"))
    for name, records in runs.items():
        for col, x_key in ((1, "time/elapsed"), (2, "rollout/total_generations")):
            x, y = _xy(records, "eval/pass_rate", x_key)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=col == 1, line={"color": color[groups[name]]}), row=1, col=col)
    if target is not None and np.isfinite(target):
        fig.add_hline(y=target, line_dash="dash", line_color="grey", annotation_text=f"target {target:.2f}")
    fig.update_xaxes(title_text="seconds", row=1, col=1)
    fig.update_xaxes(title_text="generations (reference rollouts included)", row=1, col=2)
    fig.update_yaxes(title_text="eval pass rate", row=1, col=1)
    fig.update_layout(height=440, legend={"orientation": "h", "y": -0.2},
                      title=f"{len(runs)} runs" + (f"; target pass rate {target:.2f}" if target is not None
                                                   and np.isfinite(target) else ""))
    return fig

"""Figures the notebooks teach with: difficulty, prediction, attention, selection and replay, plus the
helpers that redraw a figure inside a live ``FigureWidget``. Plotly; every function takes plain data.

Not from the paper; they picture §3.1 (adaptive difficulty, attention-based prediction) and §3.2
(Eq. 5, DOTS selection; rollout replay). Run curves and comparisons are in :mod:`dotslab.curves`.

Decisions:
  1. Each figure has a fixed number of traces whatever the data (empty traces included), so a
     widget can redraw it by copying traces into an existing ``FigureWidget`` (:func:`sync_figure`).
  2. Axes that a lesson compares across settings have fixed ranges (attention weights 0-1, pass
     rates 0-1): an auto-scaled axis makes a flat and a peaked distribution look the same.
  3. A figure with several panels gives each panel its own legend by its title, with readable names.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .selector import selection_probs

BOXED_WIDTH = 940
"""Width (px) of a figure inside a widget box or a live figure: such a figure may be drawn before the page
gives it a width and then keeps plotly's 700 px default, where panel legends run over the panel titles;
940 fills a notebook in a 1400 px window with the file browser open."""

DIFFICULTY_COLORS = "RdYlGn_r"  # green = easy (d near 0), red = hard (d near 1)


def series_xy(records: Sequence[dict[str, Any]], key: str, x_key: str = "step") -> tuple[list, list]:
    """(x, y) of the records holding both keys, in record order."""
    pts = [(r[x_key], r[key]) for r in records if r.get(key) is not None and r.get(x_key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def shorten(text: str, n: int = 40) -> str:
    """``text`` cut to ``n`` characters, the last one an ellipsis."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _finite(values: Sequence[Any]) -> list:
    """Non-finite numbers as None: a FigureWidget's messages must be strict JSON (no NaN)."""
    return [v if v is not None and np.isfinite(v) else None for v in values]


def push_widget_state(widget: go.FigureWidget) -> None:
    """Make the widget's synced state the figure as drawn now.

    Edits reach the page as messages, while the state a reloaded or reopened page restores from is
    the one taken when the widget was first displayed: without this, a page reloaded during a run
    shows the empty figure of step 0 although the kernel holds every record.
    """
    widget._widget_data = deepcopy(widget._data)
    widget._widget_layout = deepcopy(widget._layout_obj._props)


def as_lists(value: Any) -> Any:
    """``value`` with every numpy array (at any depth of dicts, lists and tuples) as a plain list.

    A ``FigureWidget`` whose traces hold numpy arrays raises, on every restyle the page reports back,
    ``ValueError: The truth value of an array … is ambiguous`` inside plotly's
    ``_remove_overlapping_props`` (it tests ``not value``), which JupyterLab shows in its log console.
    Lists are what the page sends and what that code expects.
    """
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    return value


def figure_widget(fig: go.Figure) -> go.FigureWidget:
    """A ``FigureWidget`` of ``fig`` whose data are plain lists (see :func:`as_lists`)."""
    return go.FigureWidget(as_lists(fig.to_plotly_json()))


def sync_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Copy every trace, the title, axes, annotations and shapes of ``fig`` into ``widget`` (same traces),
    as plain lists (see :func:`as_lists`)."""
    with widget.batch_update():
        for live, new in zip(widget.data, fig.data):
            live.update(as_lists(new.to_plotly_json()))
        widget.layout.title = fig.layout.title
        for name, axis in fig.layout.to_plotly_json().items():
            if name.startswith(("xaxis", "yaxis")):
                widget.layout[name].update(as_lists(axis))
        widget.layout.annotations = fig.layout.annotations
        widget.layout.shapes = fig.layout.shapes
    push_widget_state(widget)


def panel_legends(fig: go.Figure, legends: Mapping[int, str], *, below_titles: bool = False) -> None:
    """Move make_subplots' panel titles to each panel's left edge and give panel i (counted from 0 in
    subplot order) legend ``legends[i]``: right-aligned on its title line, or, with ``below_titles``
    (one row of panels, long entries), left-aligned on a line of its own between title and panel."""
    for i, ann in enumerate(fig.layout.annotations):
        suffix = "" if i == 0 else str(i + 1)
        x_dom, y_dom = fig.layout["xaxis" + suffix].domain, fig.layout["yaxis" + suffix].domain
        ann.update(x=x_dom[0], xanchor="left", **({"y": 1.1} if below_titles else {}))
        if i in legends:
            fig.layout[legends[i]] = {"orientation": "h", "x": x_dom[0 if below_titles else 1],
                                      "xanchor": "left" if below_titles else "right", "y": y_dom[1],
                                      "yanchor": "bottom", "bgcolor": "rgba(0,0,0,0)", "font": {"size": 11}}


# ---- difficulty and its prediction ------------------------------------------------------------
def difficulty_figure(difficulty: Sequence[float], group_size: int, title: str = "") -> go.Figure:
    """Measured difficulty of some questions (bars at k/G) beside the gradient signal p(1-p)(1-1/G).

    Two bar traces share the levels: questions with 0 < d < 1 (a gradient signal) and those at d = 0 or 1.
    """
    d = np.asarray(difficulty, dtype=float)
    levels = np.arange(group_size + 1) / group_size
    counts = np.array([int(np.sum(np.isclose(d, v))) for v in levels])
    inner = (levels > 0) & (levels < 1)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "questions by measured difficulty d", "expected gradient signal p(1-p)(1-1/G), p = 1-d"))
    for name, keep, color in (("0 < d < 1: some completions right", inner, "#1f77b4"),
                              ("d = 0 or 1: no reward spread", ~inner, "#bbbbbb")):
        y = np.where(keep, counts, 0)
        fig.add_trace(go.Bar(x=levels, y=y, marker_color=color, name=name, legend="legend",
                             text=[f"{c}" if k else "" for c, k in zip(counts, keep)], textposition="outside"),
                      row=1, col=1)
    grid = np.linspace(0, 1, 101)
    fig.add_trace(go.Scatter(x=grid, y=grid * (1 - grid) * (1 - 1 / group_size), name="signal", mode="lines",
                             legend="legend2", line={"color": "#2ca02c"}), row=1, col=2)
    fig.add_trace(go.Scatter(x=levels, y=levels * (1 - levels) * (1 - 1 / group_size), mode="markers",
                             name=f"reachable with G = {group_size}", legend="legend2",
                             marker={"size": 9, "color": "#2ca02c"}), row=1, col=2)
    share = float(np.mean((d > 0) & (d < 1))) if d.size else float("nan")
    fig.update_layout(title=title or f"{share:.0%} of {d.size} questions have 0 < d < 1 (grey bars teach nothing)",
                      height=400, barmode="overlay", margin={"t": 100})
    panel_legends(fig, {0: "legend", 1: "legend2"}, below_titles=True)
    fig.update_xaxes(title_text="difficulty d (failure rate of G completions)", range=[-0.08, 1.08],
                     tickvals=levels, ticktext=[f"{v:.2g}" for v in levels])
    fig.update_yaxes(title_text="questions", range=[0, max(1, int(counts.max(initial=0))) * 1.18], row=1, col=1)
    fig.update_yaxes(title_text="signal (relative)", row=1, col=2)
    return fig


def quality_text(quality: Mapping[str, float], ref_difficulty: Sequence[float] | None = None,
                 measured: Sequence[float] | None = None) -> str:
    """Pearson / Spearman / MAE as a line of text, or why there is no ranking to correlate.

    A correlation is undefined when every reference has the same difficulty (every prediction is
    then that value), when every measured difficulty is the same, or when the predictions are all equal.
    """
    mae = f"MAE {quality['mae']:.3f}" if np.isfinite(quality.get("mae", np.nan)) else "MAE –"
    if np.isfinite(quality.get("pearson", np.nan)):
        return f"Pearson {quality['pearson']:.2f} · Spearman {quality['spearman']:.2f} · {mae}"
    refs = np.asarray(ref_difficulty if ref_difficulty is not None else [], float)
    seen = np.asarray(measured if measured is not None else [], float)
    if refs.size and np.ptp(refs) == 0:
        why = f"all {refs.size} references have the same difficulty (d = {refs[0]:.2f}), so every prediction is equal"
    elif seen.size and np.ptp(seen) == 0:
        why = f"all {seen.size} probes have the same measured difficulty (d = {seen[0]:.2f})"
    else:
        why = "the predictions are all equal"
    return f"no ranking: {why} · {mae}"


def _quality_title(predicted: np.ndarray, actual: np.ndarray, ref_difficulty: Sequence[float] | None) -> str:
    from .predictor import prediction_quality  # lazy: keeps ``import dotslab.viz`` free of torch

    if not len(actual):
        return "no probes"
    text = quality_text(prediction_quality(predicted, actual), ref_difficulty, actual)
    return f"{text} on {len(actual)} probes"


def prediction_figure(predicted: Sequence[float], actual: Sequence[float], texts: Sequence[str] = (),
                      history: Sequence[Mapping[str, Any]] | None = None, title: str = "",
                      ref_difficulty: Sequence[float] | None = None) -> go.Figure:
    """Predicted vs measured difficulty on held-out probes; with ``history``, also quality per attempt.

    ``history`` rows hold ``label``, ``pearson``, ``spearman``, ``mae`` (one per reference set tried);
    None draws the scatter alone. ``ref_difficulty`` lets the title say why there is no correlation.
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
        for key, name in (("pearson", "Pearson r"), ("spearman", "Spearman ρ"), ("mae", "MAE")):
            fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=_finite([h[key] for h in history]),
                                     name=name, mode="lines+markers", text=labels), row=1, col=2)
        # whole attempts only (plotly's automatic ticks put 1.5 between the first two)
        fig.update_xaxes(title_text="attempt", tick0=1, dtick=max(1, math.ceil(len(history) / 8)), row=1, col=2)
        fig.update_yaxes(title_text="r / MAE", range=[-1.05, 1.05], row=1, col=2)
    fig.update_layout(title=title or _quality_title(p, a, ref_difficulty), height=420, width=None if cols == 2 else 620,
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
    fig.update_yaxes(title_text="Pearson r", range=[-1.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="MAE", rangemode="tozero", row=1, col=2)
    fig.update_layout(title="prediction quality on the probe set by reference strategy and size", height=380)
    return fig


# ---- attention ----------------------------------------------------------------------------------
def attention_bars(weights: Sequence[float], ref_texts: Sequence[str], ref_difficulty: Sequence[float],
                   top: int = 8, title: str = "") -> go.Figure:
    """The ``top`` references with the largest attention weight, coloured by their measured difficulty.

    The weight axis is always 0-1, so a flat attention (high τ) shows as short bars, not as the same
    picture rescaled.
    """
    w = np.asarray(weights, float)
    order = np.argsort(-w, kind="stable")[:top][::-1]  # largest at the top of a horizontal bar chart
    d = np.asarray(ref_difficulty, float)[order]
    fig = go.Figure(go.Bar(
        x=w[order], y=[f"{shorten(ref_texts[i], 26)} [{i}]" for i in order], orientation="h",
        marker={"color": d, "colorscale": DIFFICULTY_COLORS, "cmin": 0, "cmax": 1,
                "colorbar": {"title": {"text": "d"}, "thickness": 12, "len": 0.9}},
        # "auto": inside a long bar, outside a short one; "outside" ran a weight near 1 into the colour bar
        text=[f"a={v:.2f}  d={di:.2f}" for v, di in zip(w[order], d)], textposition="auto",
        cliponaxis=False, name="attention"))
    fig.update_layout(title={"text": title, "font": {"size": 13}}, height=26 * len(order) + 110, width=560,
                      xaxis={"title": {"text": "attention weight a_i"}, "range": [0, 1], "dtick": 0.25},
                      margin={"l": 190, "r": 10, "t": 40, "b": 45})
    return fig


def attention_heatmap(attention: Any, query_texts: Sequence[str], ref_texts: Sequence[str],
                      ref_difficulty: Sequence[float], title: str = "") -> go.Figure:
    """Attention (Q, K) over a batch; references sorted from easy to hard, labelled with d; colour 0-1."""
    attn = np.asarray(attention, float)
    order = np.argsort(np.asarray(ref_difficulty, float), kind="stable")
    fig = go.Figure(go.Heatmap(
        z=attn[:, order], x=[f"d={ref_difficulty[i]:.2f} [{i}]" for i in order],
        y=[shorten(t, 26) for t in query_texts], colorscale="Blues", zmin=0, zmax=1,
        colorbar={"title": {"text": "a"}, "thickness": 12},
        customdata=np.array([[ref_texts[i] for i in order]] * len(query_texts), dtype=object),
        hovertemplate="query %{y}<br>reference %{customdata}<br>%{x}<br>a = %{z:.3f}<extra></extra>"))
    fig.update_layout(title={"text": title or "attention of each query (rows) over the reference set (easy → hard)",
                             "font": {"size": 13}},
                      height=20 * len(query_texts) + 150, xaxis_title="reference (sorted by difficulty)",
                      margin={"l": 190, "r": 10, "t": 40, "b": 90})
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
    top = max([k for k in effective_references if np.isfinite(k)], default=1.0)
    fig.update_yaxes(title_text="references sharing the weight", range=[0, top * 1.05], row=1, col=1)
    fig.update_yaxes(title_text="Pearson r / MAE", range=[-1.05, 1.05], row=1, col=2)
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
                             name="replayable" if flag else "not replayable", legend="legend2",
                             marker_color=color), row=1, col=2)
    fig.update_xaxes(title_text="age (steps since generated)", dtick=1)
    fig.update_yaxes(title_text="pass rate of the group", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="groups", row=1, col=2)
    fig.update_layout(barmode="stack", height=420, margin={"t": 110}, title=title or f"replay buffer: {len(ages)} "
                      f"groups, {int(ok.sum())} replayable")
    panel_legends(fig, {0: "legend", 1: "legend2"}, below_titles=True)
    return fig


def replay_share_figure(records: Sequence[dict[str, Any]]) -> go.Figure:
    """Per step: fresh, replayed and missing (shortfall) groups, and the age of what was replayed."""
    steps = [r for r in records if r.get("rollout/pass_rate_hist") is not None]
    x = [r["step"] for r in steps]
    fresh = [sum(r["rollout/pass_rate_hist"]) for r in steps]  # the histogram counts the fresh groups
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("groups per step", "age of replayed groups"))
    for name, ys, color in (("fresh", fresh, "#1f77b4"),
                            ("replayed", [r.get("replay/replayed") or 0 for r in steps], "#ff7f0e"),
                            ("shortfall (buffer had too few)", [r.get("replay/shortfall") or 0 for r in steps],
                             "#dddddd")):
        fig.add_trace(go.Bar(x=x, y=ys, name=name, marker_color=color, legend="legend"), row=1, col=1)
    replayed = [r for r in steps if (r.get("replay/replayed") or 0) > 0]  # age 0 is logged when none was
    for key, name, rows, color in (("replay/mean_age", "replayed groups", replayed, "#9467bd"),
                                   ("replay/buffer_mean_age", "whole buffer", steps, "#8c564b")):
        x_age, y_age = series_xy(rows, key)
        fig.add_trace(go.Scatter(x=x_age, y=y_age, mode="lines+markers", name=f"mean age, {name}",
                                 legend="legend2", line={"color": color}), row=1, col=2)
    fig.update_xaxes(title_text="step", dtick=1)
    fig.update_yaxes(title_text="groups", row=1, col=1)
    fig.update_yaxes(title_text="age (steps since generated)", rangemode="tozero", row=1, col=2)
    fig.update_layout(barmode="stack", height=400, margin={"t": 110}, title="fresh vs replayed share per step")
    panel_legends(fig, {0: "legend", 1: "legend2"}, below_titles=True)
    return fig


def history_figure(label: Sequence[float], measured_at: Sequence[int], step: int, window: int,
                   predicted: Sequence[float] | None = None, texts: Sequence[str] = (), title: str = "") -> go.Figure:
    """History mode's labels (``dotslab.history.LabelHistory``): each measured question by age and
    difficulty, hollow once outside the window; with ``predicted`` (the pool's d̂), a second panel splits
    the pool into questions that start from their own recent label and those predicted from keys alone."""
    label, at = np.asarray(label, float), np.asarray(measured_at, int)
    seen = at >= 0
    age = step - at
    recent = seen & (age < window)
    texts = list(texts) or [""] * len(label)
    fig = make_subplots(rows=1, cols=2 if predicted is not None else 1, horizontal_spacing=0.12,
                        subplot_titles=("measured labels by age", "predicted difficulty of the pool")
                        if predicted is not None else ("measured labels by age",))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=len(label))
    for mask, name, symbol in ((recent, f"a key (age < W = {window})", "circle"),
                               (seen & ~recent, "outside the window (forgotten)", "circle-open")):
        fig.add_trace(go.Scatter(x=age[mask] + jitter[mask], y=label[mask], mode="markers", name=name,
                                 text=[t for t, k in zip(texts, mask) if k], marker={"symbol": symbol, "size": 9}),
                      row=1, col=1)
    fig.update_xaxes(title_text="age (steps since measured)", row=1, col=1)
    fig.update_yaxes(title_text="measured difficulty", range=[-0.05, 1.05], row=1, col=1)
    if predicted is not None:
        d = np.asarray(predicted, float)
        for mask, name in ((recent, "own recent label, shrunk toward the keys"), (~recent, "keys only")):
            fig.add_trace(go.Histogram(x=d[mask], xbins={"start": 0, "end": 1.0001, "size": 0.05}, name=name,
                                       legend="legend2"), row=1, col=2)
        fig.update_xaxes(title_text="predicted difficulty d̂", range=[0, 1], row=1, col=2)
        fig.update_yaxes(title_text="questions", row=1, col=2)
        fig.update_layout(barmode="stack")
    fig.update_layout(height=420, margin={"t": 110}, title=title or f"history mode at step {step}: "
                      f"{int(recent.sum())} keys in the last {window} steps, {int(seen.sum())} questions measured")
    panel_legends(fig, {0: "legend", 1: "legend2"} if predicted is not None else {0: "legend"}, below_titles=True)
    return fig

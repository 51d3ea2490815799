"""Interactive pieces of the notebooks: the reference-set picker (notebook 01), the attention explorer
(02) and the selection explorer (03), on data from :mod:`dotslab.workbench`.

Not from the paper; these let a student poke at §3.1 (adaptive difficulty, attention-based
prediction from a reference set) and §3.2 (Eq. 5, DOTS selection) one knob at a time. Every
formula is imported from ``predictor`` and ``selector``; this module only wires data to widgets.

Decisions:
  1. Each widget class takes plain data (texts, embedding tensors, difficulty arrays, a labelling
     callable), holds ipywidgets controls plus plotly ``FigureWidget`` s, and redraws from a
     ``refresh``-style method, so tests drive it by setting ``.value`` without a front end.
  2. The attention explorer shows the untrained predictor's path (softmax of cosine similarity / τ,
     as :meth:`DifficultyPredictor.raw_attention` with τ_raw = 0.1) with τ free, because that is
     what picks a trainer's first batches and it has no learned parameters to hide behind.
  3. Figures inside a widget box get an explicit width (``BOXED_WIDTH``); figures shown on their own
     fill the cell.
  4. A rollout started from a widget (the picker's references) reports progress on the widget's
     status line; the messages name what is missing instead of doing nothing (a blank choice, a
     correlation that cannot exist).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

import ipywidgets as w
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from .config import REFERENCE_STRATEGIES
from .live import Progress, format_seconds
from .predictor import DifficultyPredictor, choose_reference_set, prediction_quality
from .report import styled, top_references
from .selector import dots_sample, selection_probs
from .viz import (BOXED_WIDTH, attention_bars, attention_heatmap, figure_widget, prediction_figure, quality_text,
                  selection_figure, shorten, sync_figure, temperature_sweep_figure)
from .workbench import ProgressFn, Workbench

SETTLE_SECONDS = 0.4
"""How long the picker's strategy / K / seed controls must rest before it rolls out a new reference set."""



# ---- 01: reference-set picker ------------------------------------------------------------------
class ReferenceSetPicker:
    """Strategy / K / seed draw a reference set, manual add/remove edits it; every change re-predicts
    the probe set and appends its Pearson / Spearman / MAE to ``history``.

    ``label_fn(pool indices, on_progress) -> measured d`` (``on_progress(text)`` reports a rollout's
    progress, may be ignored) and ``predict_fn(ref indices, ref d) -> probe d̂``. The K slider always
    shows the current set's size, also after manual edits.
    """

    def __init__(self, pool_texts: Sequence[str], pool_emb: Any, probe_texts: Sequence[str],
                 probe_difficulty: Sequence[float], label_fn: Callable[..., np.ndarray],
                 predict_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], *, k: int = 8,
                 strategy: str = "random", seed: int = 0, strata: np.ndarray | None = None,
                 estimate_fn: Callable[[Sequence[int]], tuple[int, float]] | None = None):
        self.pool_texts, self.probe_texts = list(pool_texts), list(probe_texts)
        self.pool_emb = np.asarray(pool_emb, dtype=np.float64)
        self.probe_difficulty = np.asarray(probe_difficulty, float)
        self.label_fn, self.predict_fn, self.strata, self.estimate_fn = label_fn, predict_fn, strata, estimate_fn
        self.history: list[dict[str, Any]] = []
        self.refs: list[int] = []
        self.ref_difficulty = np.zeros(0)
        self.prediction = np.zeros(len(self.probe_texts))
        self._syncing = False  # set while the K slider follows a manual edit (no re-draw then)
        self._busy = False  # set while a callback runs (controls disabled)
        self._stale = False  # a control moved while a callback ran: draw again when it ends
        self._timer: asyncio.TimerHandle | None = None
        n = len(self.pool_texts)
        self.strategy = w.Dropdown(options=REFERENCE_STRATEGIES, value=strategy, description="strategy")
        self.k = w.IntSlider(value=k, min=2, max=min(64, n), description="size K", continuous_update=False)
        self.seed = w.IntText(value=seed, description="seed", layout={"width": "160px"})
        self.add_choice = w.Dropdown(description="question", layout={"width": "420px"})
        self.add_button = w.Button(description="add to references", icon="plus", layout={"width": "180px"})
        self.ref_list = w.SelectMultiple(description="references", rows=8, layout={"width": "420px"})
        self.remove_button = w.Button(description="remove selected", icon="minus", layout={"width": "180px"})
        self.status = w.HTML()
        self.figure = figure_widget(prediction_figure([], [], history=[]).update_layout(width=BOXED_WIDTH))
        for control in (self.strategy, self.k, self.seed):
            control.observe(lambda _: None if self._syncing else self._settled(self.draw), names="value")
        self.add_button.on_click(lambda _: self._shown(self.add, [self.add_choice.value]))
        self.remove_button.on_click(lambda _: self._shown(self.remove, list(self.ref_list.value)))
        self.widget = w.VBox([
            w.HBox([self.strategy, self.k, self.seed]),
            w.HBox([w.VBox([self.add_choice, self.add_button]), w.VBox([self.ref_list, self.remove_button])]),
            self.status, self.figure])
        self.draw()

    @classmethod
    def from_workbench(cls, wb: Workbench, probe_difficulty: Sequence[float], **kwargs: Any) -> "ReferenceSetPicker":
        """The picker on a workbench's pool and probes, predicting with its (untrained) predictor."""
        def label(ref_idx: Sequence[int], on_progress: ProgressFn | None = None) -> np.ndarray:
            return wb.label_pool(ref_idx, progress=False, on_progress=on_progress, chunk=4)

        def predict(ref_idx: np.ndarray, ref_d: np.ndarray) -> np.ndarray:
            return wb.predictor.predict(wb.probe_emb, wb.pool_emb[ref_idx],
                                        torch.tensor(ref_d, dtype=torch.float32)).difficulty.numpy()

        p = wb.cfg.predictor
        kwargs = {"k": p.reference_set_size, "strategy": p.reference_strategy, "seed": wb.cfg.seed, **kwargs}
        return cls(wb.pool.prompts, wb.pool_emb, wb.probe.prompts, probe_difficulty, label, predict,
                   strata=wb.pool.strata, estimate_fn=lambda idx: wb.labeler.estimate(wb.pool.subset([int(i) for i in idx])),
                   **kwargs)

    @property
    def controls(self) -> tuple[w.DOMWidget, ...]:
        """Everything a user can click or type into."""
        return (self.strategy, self.k, self.seed, self.add_choice, self.add_button, self.ref_list, self.remove_button)

    def _shown(self, action: Callable[..., None], *args: Any) -> None:
        """Run a callback with every control disabled; an error also goes to the status line (callback
        output is not shown in a cell).

        The kernel handles one message at a time: a click made while a rollout runs would wait and then
        act on a state that has changed under it (a selection cleared by the redraw, a K slider
        key-step per redraw). Disabled controls take no clicks or key-steps; the front end hears of
        it at once, because widget updates are sent while a callback runs.
        """
        if self._busy:  # a control changed while a callback runs: draw once more when it ends
            self._stale = True
            return
        self._busy = True
        for control in self.controls:
            control.disabled = True
        try:
            action(*args)
        except Exception as err:
            self.status.value = f"<span style='color:#c00'>{type(err).__name__}: {err}</span>"
            raise
        finally:
            for control in self.controls:
                control.disabled = False
            self._busy = False
        if self._stale:
            self._stale = False
            self._settled(self.draw)

    def _settled(self, action: Callable[..., None]) -> None:
        """Run ``action`` once the controls have been still for ``SETTLE_SECONDS``: three quick key-steps
        of the K slider draw one reference set, not three. Without a running event loop (a script, a
        test) it runs at once; in a kernel the loop runs while it waits for messages."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._shown(action)
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(SETTLE_SECONDS, self._shown, action)

    def _choose(self, strategy: str, k: int, seed: int) -> list[int]:
        return [int(i) for i in choose_reference_set(strategy, self.pool_emb, k, np.random.default_rng(seed),
                                                     strata=self.strata if strategy == "stratified" else None)]

    def _follow_k(self) -> None:
        """Show the real K on the slider after a manual edit, without drawing a new set."""
        self._syncing = True
        try:
            self.k.max = max(self.k.max, len(self.refs))
            self.k.value = len(self.refs)
        finally:
            self._syncing = False

    def draw(self) -> None:
        """Draw a fresh reference set from the strategy / K / seed controls (drops manual edits)."""
        self.refs = self._choose(self.strategy.value, self.k.value, self.seed.value)
        self.refresh(f"{self.strategy.value} K={self.k.value} seed={self.seed.value}")

    def add(self, indices: Sequence[int | None]) -> None:
        chosen = [int(i) for i in indices if i is not None]
        if not chosen:
            self.status.value = "<b>Choose a question in the list first</b>, then add it to the references."
            return
        new = [i for i in chosen if i not in self.refs]
        if not new:
            self.status.value = "That question is a reference already."
            return
        self.refs += new
        self._follow_k()
        self.refresh(f"+{len(new)} → K={len(self.refs)}")

    def remove(self, indices: Sequence[int]) -> None:
        drop = {int(j) for j in indices}
        keep = [i for i in self.refs if i not in drop]
        if not drop:
            self.status.value = "<b>Select references in the list first</b>, then remove them."
        elif len(keep) < 2:
            self.status.value = "At least two references must stay: a prediction needs something to compare."
        elif len(keep) < len(self.refs):
            self.refs = keep
            self._follow_k()
            self.refresh(f"-{len(drop)} → K={len(self.refs)}")

    def evaluate(self, refs: Sequence[int], on_progress: ProgressFn | None = None) -> dict[str, float]:
        """Measure the references, predict the probes, return quality (does not touch the display)."""
        refs = np.asarray(refs, dtype=np.int64)
        self.ref_difficulty = np.asarray(self.label_fn(refs, on_progress=on_progress), float)
        self.prediction = np.asarray(self.predict_fn(refs, self.ref_difficulty), float)
        return prediction_quality(self.prediction, self.probe_difficulty)

    def refresh(self, label: str) -> None:
        self.status.value = f"<b>{label}</b>: rolling out new references and predicting the probes …"
        quality = self.evaluate(self.refs, on_progress=lambda text: setattr(
            self.status, "value", f"<b>{label}</b>: {text}"))
        self.history.append({"label": label, **quality})
        sync_figure(self.figure, prediction_figure(self.prediction, self.probe_difficulty, self.probe_texts,
                                                   self.history, ref_difficulty=self.ref_difficulty))
        by_d = sorted(zip(self.ref_difficulty, self.refs))
        self.ref_list.options = [(f"d={d:.2f}  {self.pool_texts[i]}", i) for d, i in by_d]
        choices = [(self.pool_texts[i], i) for i in range(len(self.pool_texts)) if i not in self.refs]
        self.add_choice.options = choices
        self.add_choice.value = choices[0][1] if choices else None  # never blank while there is a choice
        self.status.value = (f"<b>{label}</b>: {quality_text(quality, self.ref_difficulty, self.probe_difficulty)}; "
                             f"references' mean d = {self.ref_difficulty.mean():.2f}")

    def snapshot(self) -> go.Figure:
        """A static copy of the current figure (executed notebooks do not keep widget state)."""
        return go.Figure(self.figure)

    def _grid(self, sizes: Sequence[int], strategies: Sequence[str]) -> list[tuple[str, int]]:
        return [(s, k) for s in strategies for k in sizes if k <= len(self.pool_texts)]

    def sweep_estimate(self, sizes: Sequence[int], strategies: Sequence[str] = REFERENCE_STRATEGIES) -> str:
        """How many new questions :meth:`sweep` rolls out, and roughly how long that takes (Markdown)."""
        grid = self._grid(sizes, strategies)
        needed = sorted({i for s, k in grid for i in self._choose(s, k, self.seed.value)})
        if self.estimate_fn is None:
            return f"The sweep measures {len(grid)} reference sets ({len(needed)} distinct questions)."
        n_new, seconds = self.estimate_fn(needed)
        if not n_new:
            return f"The sweep measures {len(grid)} reference sets, all of whose questions are measured already."
        pace = "" if not np.isfinite(seconds) else f", about **{format_seconds(seconds)}** at the pace measured above"
        return (f"The sweep measures {len(grid)} reference sets: **{n_new} questions** not rolled out yet{pace}.")

    def sweep(self, sizes: Sequence[int], strategies: Sequence[str] = REFERENCE_STRATEGIES) -> list[dict[str, Any]]:
        """Quality for every strategy x K at the current seed: rows for :func:`viz.quality_sweep_figure`."""
        grid = self._grid(sizes, strategies)
        rows = []
        with Progress(len(grid), "reference sets", unit=" sets") as bar:
            for s, k in grid:
                rows.append({"strategy": s, "k": k, **self.evaluate(self._choose(s, k, self.seed.value))})
                bar.update()
        self.evaluate(self.refs)  # leave the shown state consistent
        return rows


# ---- 02: attention explorer --------------------------------------------------------------------
def attention_at_temperature(query_emb: Any, ref_emb: Any, ref_difficulty: Any, temperature: float
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Untrained-path attention a = softmax(cos(e_q, e_i) / τ) and d̂ = Σ a_i y_i; (Q,), (Q, K)."""
    pred, attn = DifficultyPredictor.raw_attention(
        torch.as_tensor(query_emb, dtype=torch.float32), torch.as_tensor(ref_emb, dtype=torch.float32),
        torch.as_tensor(ref_difficulty, dtype=torch.float32), temperature=temperature)
    return pred.numpy(), attn.numpy()


def effective_references(attention: np.ndarray) -> np.ndarray:
    """1 / Σ_i a_i² per query: 1 when one reference takes all the weight, K when uniform."""
    return 1.0 / np.sum(np.asarray(attention, float) ** 2, axis=-1)


class AttentionExplorer:
    """Pick a query, see its top references (weights, difficulties); a τ slider redraws everything.

    Laid out for a notebook about 950 px wide: the bars and a compact table side by side, the heatmap
    below, all of it about one screen tall; every axis keeps its range as τ moves (``viz`` decision 2).
    """

    def __init__(self, query_texts: Sequence[str], query_emb: Any, ref_texts: Sequence[str], ref_emb: Any,
                 ref_difficulty: Sequence[float], query_difficulty: Sequence[float] | None = None, *,
                 temperature: float = 0.1, top: int = 8):
        self.query_texts, self.ref_texts = list(query_texts), list(ref_texts)
        self.query_emb, self.ref_emb = query_emb, ref_emb
        self.ref_difficulty = np.asarray(ref_difficulty, float)
        self.query_difficulty = None if query_difficulty is None else np.asarray(query_difficulty, float)
        self.top = top
        self.sweep_rows: list[dict[str, float]] = []
        self.query = w.Dropdown(options=[(t, i) for i, t in enumerate(self.query_texts)], value=0,
                                description="query", layout={"width": "420px"})
        self.temperature = w.FloatLogSlider(value=temperature, base=10, min=-2.5, max=0.5, step=0.1,
                                            description="τ", readout_format=".3f", continuous_update=False)
        self.status = w.HTML()
        self.table = w.HTML(layout={"max_width": "390px", "overflow_x": "auto", "margin": "30px 0 0 4px"})
        self.bars = figure_widget(attention_bars(np.zeros(len(self.ref_texts)), self.ref_texts,
                                                   self.ref_difficulty, top))
        self.heatmap = figure_widget(attention_heatmap(np.zeros((len(self.query_texts), len(self.ref_texts))),
                                                         self.query_texts, self.ref_texts, self.ref_difficulty
                                                         ).update_layout(width=BOXED_WIDTH))
        self.query.observe(lambda _: self.refresh(), names="value")
        self.temperature.observe(lambda _: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.query, self.temperature]), self.status,
                              w.HBox([self.bars, self.table], layout={"align_items": "flex-start"}), self.heatmap])
        self.refresh()

    def compute(self, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        return attention_at_temperature(self.query_emb, self.ref_emb, self.ref_difficulty, temperature)

    def refresh(self) -> None:
        tau, i = self.temperature.value, self.query.value
        self.prediction, self.attention = self.compute(tau)
        sync_figure(self.bars, attention_bars(self.attention[i], self.ref_texts, self.ref_difficulty, self.top,
                                              title=f"top {self.top} references of: {self.query_texts[i]}"))
        sync_figure(self.heatmap, attention_heatmap(self.attention, self.query_texts, self.ref_texts,
                                                    self.ref_difficulty,
                                                    title=f"attention over the batch at τ = {tau:.3f}"))
        table = self.table_frame()
        table["reference"] = [shorten(t) for t in table["reference"]]
        self.table.value = styled(table).set_table_attributes("style='font-size:12px'").to_html()
        measured = "" if self.query_difficulty is None else f", measured d = {self.query_difficulty[i]:.2f}"
        self.status.value = (f"predicted d̂ = Σ a_i y_i = <b>{self.prediction[i]:.2f}</b>{measured}; effective "
                             f"references 1/Σa² = {effective_references(self.attention[i]):.1f} of "
                             f"{len(self.ref_texts)}")

    def table_frame(self) -> pd.DataFrame:
        """The chosen query's top references as a table (weight, difficulty, contribution)."""
        return top_references(self.attention[self.query.value], self.ref_texts, self.ref_difficulty, self.top)

    def describe_query(self, i: int = 0, n: int = 2) -> str:
        """Markdown: where query ``i`` puts its weight at the current τ, and its prediction."""
        _, attn = self.compute(self.temperature.value)
        order = np.argsort(-attn[i], kind="stable")[:n]
        tops = "; ".join(f"{attn[i, j]:.0%} on “{self.ref_texts[j]}” (y = {self.ref_difficulty[j]:.2f})"
                         for j in order)
        measured = "" if self.query_difficulty is None else f" against a measured d = {self.query_difficulty[i]:.2f}"
        return (f"At τ = {self.temperature.value:.3g} the query “{self.query_texts[i]}” puts {tops}; "
                f"it predicts d̂ = {self.prediction[i]:.2f}{measured}.")

    def snapshot(self, which: str = "heatmap") -> go.Figure:
        """A static copy of the 'heatmap' or the 'bars' (executed notebooks do not keep widget state)."""
        return go.Figure({"heatmap": self.heatmap, "bars": self.bars}[which])

    def sweep(self, temperatures: Sequence[float]) -> go.Figure:
        """:func:`viz.temperature_sweep_figure` of this batch over ``temperatures``; rows in ``sweep_rows``."""
        self.sweep_rows = []
        for tau in temperatures:
            pred, attn = self.compute(tau)
            q = (prediction_quality(pred, self.query_difficulty) if self.query_difficulty is not None
                 else {"mae": np.nan, "pearson": np.nan})
            self.sweep_rows.append({"tau": float(tau), "effective": float(effective_references(attn).mean()),
                                    "mae": float(q["mae"]), "pearson": float(q["pearson"])})
        rows = self.sweep_rows
        return temperature_sweep_figure([r["tau"] for r in rows], [r["effective"] for r in rows],
                                        [r["mae"] for r in rows], [r["pearson"] for r in rows],
                                        current=self.temperature.value)

    def describe_sweep(self) -> str:
        """Markdown on the last :meth:`sweep`: the sharpest and the flattest τ tried, and where r was highest."""
        if not self.sweep_rows:
            return "Run sweep() first."
        rows = [r for r in self.sweep_rows if np.isfinite(r["pearson"])]
        if not rows:
            return ("No correlation at any τ: the references or the queries' measured difficulties are all "
                    "equal, so there is no ranking to recover.")

        def at(r: dict[str, float]) -> str:
            corr = f"Pearson r = {r['pearson']:.2f}" if np.isfinite(r["pearson"]) else "no correlation"
            return (f"at τ = {r['tau']:.3g} the weight rests on {r['effective']:.1f} of {len(self.ref_texts)} "
                    f"references, {corr}, MAE = {r['mae']:.2f}")

        best = max(rows, key=lambda r: r["pearson"])
        return (f"On this batch of {len(self.query_texts)} queries: {at(self.sweep_rows[0])}; "
                f"{at(self.sweep_rows[-1])}. Pearson r was highest, {best['pearson']:.2f}, at τ = {best['tau']:.3g}.")


# ---- 03: selection explorer --------------------------------------------------------------------
class SelectionExplorer:
    """Sliders for α and τ over fixed predicted difficulties; shows P(q) and one seeded draw of n."""

    def __init__(self, difficulty: Sequence[float], n_select: int, *, target_difficulty: float = 0.5,
                 temperature: float = 1e-3, seed: int = 0):
        self.difficulty = np.asarray(difficulty, float)
        self.n_select, self.seed = min(n_select, len(self.difficulty)), seed
        self.alpha = w.FloatSlider(value=target_difficulty, min=0, max=1, step=0.05, description="α",
                                   continuous_update=False)
        self.tau = w.FloatLogSlider(value=temperature, base=10, min=-3, max=0.5, step=0.25, description="τ",
                                    readout_format=".3f", continuous_update=False)
        self.status = w.HTML()
        self.figure = figure_widget(selection_figure(self.difficulty, target_difficulty, temperature
                                                       ).update_layout(width=BOXED_WIDTH))
        for control in (self.alpha, self.tau):
            control.observe(lambda _: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.alpha, self.tau]), self.status, self.figure])
        self.refresh()

    def refresh(self) -> None:
        alpha, tau = self.alpha.value, self.tau.value
        self.selected = dots_sample(self.difficulty, self.n_select, alpha, tau, np.random.default_rng(self.seed))
        sync_figure(self.figure, selection_figure(self.difficulty, alpha, tau, self.selected))
        probs = selection_probs(self.difficulty, alpha, tau)
        near = float(probs[np.abs(self.difficulty - alpha) <= 0.1].sum())
        self.status.value = (f"one draw of {self.n_select}: mean d̂ = {self.difficulty[self.selected].mean():.2f}; "
                             f"{near:.0%} of the probability mass lies within ±0.1 of α")

    def describe_pool(self) -> str:
        """Markdown: how the pool's predicted difficulties sit around the current α."""
        d, alpha = self.difficulty, self.alpha.value
        lo, mid, hi = np.percentile(d, [10, 50, 90])
        near = float(np.mean(np.abs(d - alpha) <= 0.1))
        return (f"Of the {d.size} pool questions, {near:.0%} are predicted within ±0.1 of α = {alpha:.2f} "
                f"(median d̂ = {mid:.2f}; 80% of the pool between {lo:.2f} and {hi:.2f}).")

    def snapshot(self) -> go.Figure:
        return go.Figure(self.figure)

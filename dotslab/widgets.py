"""Interactive pieces of the notebooks: a workbench that rolls questions out on demand, the
reference-set picker (notebook 01), the attention explorer (02) and the selection explorer (03).

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
  3. Measured difficulties are cached per question id: re-drawing a reference set only rolls out
     questions never seen before (the policy does not change inside these notebooks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ipywidgets as w
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from .config import REFERENCE_STRATEGIES, Config
from .data import QuestionSet, load_task
from .embed import make_embedder
from .models import cache_root, load_policy
from .predictor import DifficultyPredictor, OnlinePredictor, choose_reference_set, prediction_quality
from .report import top_references
from .rewards import SafeReward, get_reward_fn
from .rollout import HFGenerateEngine, rollout_groups
from .selector import dots_sample, selection_probs
from .viz import (attention_bars, attention_heatmap, prediction_figure, selection_figure, sync_figure,
                  temperature_sweep_figure)


# ---- measuring and predicting difficulty ----------------------------------------------------------
class RolloutLabeler:
    """Measured difficulty d = 1 - pass rate of G completions per question, cached by question id."""

    def __init__(self, model: Any, tokenizer: Any, cfg: Config, *, chunk: int = 16, progress: bool = True):
        g = cfg.grpo
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.engine = HFGenerateEngine(model, tokenizer, max_new_tokens=g.max_new_tokens,
                                       temperature=g.temperature, top_p=g.top_p)
        self.reward = SafeReward(get_reward_fn(cfg.reward, cfg.task))
        self.chunk, self.progress = chunk, progress
        self.cache: dict[str, float] = {}
        self.generations = 0

    def __call__(self, questions: Sequence[Any], *, progress: bool | None = None) -> np.ndarray:
        """Difficulties (len(questions),); rolls out only questions not measured before.

        ``progress=False`` inside widget callbacks: a progress bar drawn there lands in the log console.
        """
        from tqdm.auto import tqdm

        todo = list({q.id: q for q in questions if q.id not in self.cache}.values())
        g = self.cfg.grpo
        chunks = [todo[i:i + self.chunk] for i in range(0, len(todo), self.chunk)]
        for part in tqdm(chunks, desc=f"rolling out {len(todo)} questions x {g.group_size}",
                         disable=not ((self.progress if progress is None else progress) and todo), leave=False):
            groups = rollout_groups(self.engine, self.model, self.tokenizer, part, g.group_size, self.reward,
                                    step=0, temperature=g.temperature, micro_batch_size=g.micro_batch_size)
            self.cache.update((gr.question.id, gr.difficulty) for gr in groups)
            self.generations += len(part) * g.group_size
        return np.array([self.cache[q.id] for q in questions], dtype=float)


@dataclass
class ReferenceRound:
    """One reference set, its measured difficulties and what the predictor makes of them."""
    indices: np.ndarray            # (K,) pool indices
    difficulty: np.ndarray         # (K,) measured d of the references
    pool_prediction: np.ndarray    # (N,) d̂ of every pool question (references leave-one-out)
    probe_prediction: np.ndarray   # (P,) d̂ of the held-out probes
    probe_attention: np.ndarray    # (P, K) attention of each probe over the references
    used_adapter: bool


@dataclass
class Workbench:
    """A policy, a question pool, a held-out probe set (never references), embeddings and a labeler."""
    cfg: Config
    pool: QuestionSet
    probe: QuestionSet
    pool_emb: torch.Tensor         # (N, D)
    probe_emb: torch.Tensor        # (P, D)
    labeler: RolloutLabeler
    predictor: OnlinePredictor

    def label_pool(self, indices: Sequence[int], *, progress: bool | None = None) -> np.ndarray:
        return self.labeler(self.pool.subset([int(i) for i in indices]), progress=progress)

    @property
    def strata(self) -> np.ndarray:
        """Question levels, as the trainer passes them to the 'stratified' strategy."""
        return np.array([q.metadata.get("level", 0) for q in self.pool])

    def reference_set(self, k: int | None = None, strategy: str | None = None, seed: int | None = None) -> np.ndarray:
        p = self.cfg.predictor
        strategy = strategy or p.reference_strategy
        return choose_reference_set(strategy, self.pool_emb.numpy(), k or p.reference_set_size,
                                    np.random.default_rng(self.cfg.seed if seed is None else seed),
                                    strata=self.strata if strategy == "stratified" else None)

    def predict(self, ref_idx: Sequence[int]) -> ReferenceRound:
        """Roll out the references (cached), then predict the pool and the probes from them."""
        ref_idx = np.asarray(ref_idx, dtype=np.int64)
        d = self.label_pool(ref_idx)
        labels = torch.tensor(d, dtype=torch.float32)
        pool = self.predictor.predict(self.pool_emb, self.pool_emb[ref_idx], labels,
                                      ref_index_in_pool=torch.as_tensor(ref_idx))
        probe = self.predictor.predict(self.probe_emb, self.pool_emb[ref_idx], labels)
        return ReferenceRound(ref_idx, d, pool.difficulty.numpy(), probe.difficulty.numpy(),
                              probe.attention.numpy(), probe.used_adapter)


def open_workbench(cfg: Config, *, progress: bool = True) -> Workbench:
    """Load ``cfg``'s task (pool = train split, probes = held-out eval split), policy and embedder."""
    torch.manual_seed(cfg.seed)
    pool, probe = load_task(cfg)
    model, tokenizer = load_policy(cfg.policy, seed=cfg.seed)
    embedder = make_embedder(cfg.predictor.embedder, policy=model, tokenizer=tokenizer,
                             cache_dir=cache_root() / "embeddings")
    pool_emb, probe_emb = embedder.embed(pool.prompts), embedder.embed(probe.prompts)
    predictor = OnlinePredictor(cfg.predictor, embed_dim=pool_emb.shape[1], seed=cfg.seed)
    return Workbench(cfg, pool, probe, pool_emb, probe_emb, RolloutLabeler(model, tokenizer, cfg, progress=progress),
                     predictor)


# ---- 01: reference-set picker ------------------------------------------------------------------
class ReferenceSetPicker:
    """Strategy / K / seed draw a reference set, manual add/remove edits it; every change re-predicts
    the probe set and appends its Pearson / Spearman / MAE to ``history``.

    ``label_fn(pool indices) -> measured d`` and ``predict_fn(ref indices, ref d) -> probe d̂``.
    """

    def __init__(self, pool_texts: Sequence[str], pool_emb: Any, probe_texts: Sequence[str],
                 probe_difficulty: Sequence[float], label_fn: Callable[[Sequence[int]], np.ndarray],
                 predict_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], *, k: int = 8,
                 strategy: str = "random", seed: int = 0, strata: np.ndarray | None = None):
        self.pool_texts, self.probe_texts = list(pool_texts), list(probe_texts)
        self.pool_emb = np.asarray(pool_emb, dtype=np.float64)
        self.probe_difficulty = np.asarray(probe_difficulty, float)
        self.label_fn, self.predict_fn, self.strata = label_fn, predict_fn, strata
        self.history: list[dict[str, Any]] = []
        self.refs: list[int] = []
        self.ref_difficulty = np.zeros(0)
        self.prediction = np.zeros(len(self.probe_texts))
        n = len(self.pool_texts)
        self.strategy = w.Dropdown(options=REFERENCE_STRATEGIES, value=strategy, description="strategy")
        self.k = w.IntSlider(value=k, min=2, max=min(64, n), description="size K", continuous_update=False)
        self.seed = w.IntText(value=seed, description="seed", layout={"width": "160px"})
        self.add_choice = w.Dropdown(description="question", layout={"width": "420px"})
        self.add_button = w.Button(description="add to references", icon="plus", layout={"width": "180px"})
        self.ref_list = w.SelectMultiple(description="references", rows=8, layout={"width": "420px"})
        self.remove_button = w.Button(description="remove selected", icon="minus", layout={"width": "180px"})
        self.status = w.HTML()
        self.figure = go.FigureWidget(prediction_figure([], [], history=[]))
        for control in (self.strategy, self.k, self.seed):
            control.observe(lambda _: self._shown(self.draw), names="value")
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
        def label(ref_idx: Sequence[int]) -> np.ndarray:
            return wb.label_pool(ref_idx, progress=False)

        def predict(ref_idx: np.ndarray, ref_d: np.ndarray) -> np.ndarray:
            return wb.predictor.predict(wb.probe_emb, wb.pool_emb[ref_idx],
                                        torch.tensor(ref_d, dtype=torch.float32)).difficulty.numpy()

        p = wb.cfg.predictor
        kwargs = {"k": p.reference_set_size, "strategy": p.reference_strategy, "seed": wb.cfg.seed, **kwargs}
        return cls(wb.pool.prompts, wb.pool_emb, wb.probe.prompts, probe_difficulty, label, predict,
                   strata=wb.strata, **kwargs)

    def _shown(self, action: Callable[..., None], *args: Any) -> None:
        """Run a callback; an error also goes to the status line (callback output is not shown in a cell)."""
        try:
            action(*args)
        except Exception as err:
            self.status.value = f"<span style='color:#c00'>{type(err).__name__}: {err}</span>"
            raise

    def _choose(self, strategy: str, k: int, seed: int) -> list[int]:
        return [int(i) for i in choose_reference_set(strategy, self.pool_emb, k, np.random.default_rng(seed),
                                                     strata=self.strata if strategy == "stratified" else None)]

    def draw(self) -> None:
        """Draw a fresh reference set from the strategy / K / seed controls (drops manual edits)."""
        self.refs = self._choose(self.strategy.value, self.k.value, self.seed.value)
        self.refresh(f"{self.strategy.value} K={self.k.value} seed={self.seed.value}")

    def add(self, indices: Sequence[int]) -> None:
        new = [int(i) for i in indices if i is not None and int(i) not in self.refs]
        if new:
            self.refs += new
            self.refresh(f"+{len(new)} → K={len(self.refs)}")

    def remove(self, indices: Sequence[int]) -> None:
        keep = [i for i in self.refs if i not in {int(j) for j in indices}]
        if len(keep) >= 2 and len(keep) < len(self.refs):
            self.refs = keep
            self.refresh(f"-{len(indices)} → K={len(self.refs)}")

    def evaluate(self, refs: Sequence[int]) -> dict[str, float]:
        """Measure the references, predict the probes, return quality (does not touch the display)."""
        refs = np.asarray(refs, dtype=np.int64)
        self.ref_difficulty = np.asarray(self.label_fn(refs), float)
        self.prediction = np.asarray(self.predict_fn(refs, self.ref_difficulty), float)
        return prediction_quality(self.prediction, self.probe_difficulty)

    def refresh(self, label: str) -> None:
        self.status.value = f"<b>{label}</b>: rolling out new references and predicting the probes …"
        quality = self.evaluate(self.refs)
        self.history.append({"label": label, **quality})
        sync_figure(self.figure, prediction_figure(self.prediction, self.probe_difficulty, self.probe_texts,
                                                   self.history))
        by_d = sorted(zip(self.ref_difficulty, self.refs))
        self.ref_list.options = [(f"d={d:.2f}  {self.pool_texts[i]}", i) for d, i in by_d]
        self.add_choice.options = [(self.pool_texts[i], i) for i in range(len(self.pool_texts)) if i not in self.refs]
        self.status.value = (f"<b>{label}</b>: Pearson {quality['pearson']:.2f}, Spearman {quality['spearman']:.2f}, "
                             f"MAE {quality['mae']:.3f}; references' mean d = {self.ref_difficulty.mean():.2f}")

    def snapshot(self) -> go.Figure:
        """A static copy of the current figure (executed notebooks do not keep widget state)."""
        return go.Figure(self.figure)

    def sweep(self, sizes: Sequence[int], strategies: Sequence[str] = REFERENCE_STRATEGIES) -> list[dict[str, Any]]:
        """Quality for every strategy x K at the current seed: rows for :func:`viz.quality_sweep_figure`."""
        from tqdm.auto import tqdm

        grid = [(s, k) for s in strategies for k in sizes if k <= len(self.pool_texts)]
        rows = [{"strategy": s, "k": k, **self.evaluate(self._choose(s, k, self.seed.value))}
                for s, k in tqdm(grid, desc="reference sets", leave=False)]
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
    """Pick a query, see its top references (weights, difficulties); a τ slider redraws everything."""

    def __init__(self, query_texts: Sequence[str], query_emb: Any, ref_texts: Sequence[str], ref_emb: Any,
                 ref_difficulty: Sequence[float], query_difficulty: Sequence[float] | None = None, *,
                 temperature: float = 0.1, top: int = 8):
        self.query_texts, self.ref_texts = list(query_texts), list(ref_texts)
        self.query_emb, self.ref_emb = query_emb, ref_emb
        self.ref_difficulty = np.asarray(ref_difficulty, float)
        self.query_difficulty = None if query_difficulty is None else np.asarray(query_difficulty, float)
        self.top = top
        self.query = w.Dropdown(options=[(t, i) for i, t in enumerate(self.query_texts)], value=0,
                                description="query", layout={"width": "420px"})
        self.temperature = w.FloatLogSlider(value=temperature, base=10, min=-2.5, max=0.5, step=0.1,
                                            description="τ", readout_format=".3f", continuous_update=False)
        self.status, self.table = w.HTML(), w.HTML()
        self.bars = go.FigureWidget(attention_bars(np.zeros(len(self.ref_texts)), self.ref_texts,
                                                   self.ref_difficulty, top))
        self.heatmap = go.FigureWidget(attention_heatmap(np.zeros((len(self.query_texts), len(self.ref_texts))),
                                                         self.query_texts, self.ref_texts, self.ref_difficulty))
        self.query.observe(lambda _: self.refresh(), names="value")
        self.temperature.observe(lambda _: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.query, self.temperature]), self.status,
                              w.HBox([self.bars, self.table]), self.heatmap])
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
        self.table.value = self.table_frame().to_html()
        measured = "" if self.query_difficulty is None else f", measured d = {self.query_difficulty[i]:.2f}"
        self.status.value = (f"predicted d̂ = Σ a_i y_i = <b>{self.prediction[i]:.2f}</b>{measured}; effective "
                             f"references 1/Σa² = {effective_references(self.attention[i]):.1f} of "
                             f"{len(self.ref_texts)}")

    def table_frame(self) -> pd.DataFrame:
        """The chosen query's top references as a table (weight, difficulty, contribution)."""
        return top_references(self.attention[self.query.value], self.ref_texts, self.ref_difficulty, self.top)

    def snapshot(self, which: str = "heatmap") -> go.Figure:
        """A static copy of the 'heatmap' or the 'bars' (executed notebooks do not keep widget state)."""
        return go.Figure({"heatmap": self.heatmap, "bars": self.bars}[which])

    def sweep(self, temperatures: Sequence[float]) -> go.Figure:
        """:func:`viz.temperature_sweep_figure` of this batch over ``temperatures``."""
        eff, mae, pearson = [], [], []
        for tau in temperatures:
            pred, attn = self.compute(tau)
            eff.append(float(effective_references(attn).mean()))
            q = (prediction_quality(pred, self.query_difficulty) if self.query_difficulty is not None
                 else {"mae": np.nan, "pearson": np.nan})
            mae.append(q["mae"])
            pearson.append(q["pearson"])
        return temperature_sweep_figure(list(temperatures), eff, mae, pearson, current=self.temperature.value)


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
        self.figure = go.FigureWidget(selection_figure(self.difficulty, target_difficulty, temperature))
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

    def snapshot(self) -> go.Figure:
        return go.Figure(self.figure)

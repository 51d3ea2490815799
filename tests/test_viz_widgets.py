"""Figures and widgets built without a front end: check traces and data, drive widgets by ``.value``.

Run:  cd /work/main && .venv/bin/python -m pytest tests/test_viz_widgets.py -q
All CPU, a few seconds; uses the hash embedder and synthetic difficulties (no policy, no rollouts),
except one test that opens a workbench on the tiny random policy.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from dotslab.config import Config, PredictorConfig
from dotslab.data import arithmetic_questions
from dotslab.embed import HashEmbedder
from dotslab.predictor import OnlinePredictor, prediction_quality
from dotslab.report import buffer_contents, compare_runs, load_runs, top_references
from dotslab.selector import selection_probs
from dotslab import viz
from dotslab.widgets import (AttentionExplorer, ReferenceSetPicker, SelectionExplorer, effective_references,
                             attention_at_temperature, open_workbench)


# ---- synthetic data: difficulty grows with the question's level --------------------------------
@pytest.fixture(scope="module")
def data():
    pool, probe = arithmetic_questions(72, seed=0).split(12, seed=0)
    emb = HashEmbedder()
    level = lambda qs: np.array([min(1.0, q.metadata["level"] / 4) for q in qs])  # noqa: E731
    return {"pool": pool, "probe": probe, "pool_emb": emb.embed(pool.prompts), "probe_emb": emb.embed(probe.prompts),
            "pool_d": level(pool), "probe_d": level(probe),
            "strata": np.array([q.metadata["level"] for q in pool])}


def make_picker(data, calls=None, **kwargs):
    predictor = OnlinePredictor(PredictorConfig(), data["pool_emb"].shape[1], seed=0)

    def label(idx):
        if calls is not None:
            calls.append(list(map(int, idx)))
        return data["pool_d"][np.asarray(idx)]

    def predict(idx, d):
        return predictor.predict(data["probe_emb"], data["pool_emb"][idx], torch.tensor(d, dtype=torch.float32)
                                 ).difficulty.numpy()
    return ReferenceSetPicker(data["pool"].prompts, data["pool_emb"], data["probe"].prompts, data["probe_d"],
                              label, predict, strata=data["strata"], **kwargs)


def record(step, **kw):
    base = {"step": step, "train/pass_rate": 0.2 + 0.05 * step, "rollout/frac_zero_std": 0.5,
            "rollout/pass_rate_hist": [1, 2, 1], "time/step": 1.0, "time/elapsed": float(step),
            "rollout/total_generations": 16 * step, "time/generation": 0.6, "time/update": 0.4}
    return {**base, **kw}


# ---- figures ------------------------------------------------------------------------------------
def test_training_figure_and_live_curves_keep_their_api():
    recs = [record(1), record(2, **{"eval/pass_rate": 0.5})]
    fig = viz.training_figure(recs, title="t")
    assert list(fig.data[0].y) == pytest.approx([0.25, 0.3]) and list(fig.data[1].x) == [2]
    live = viz.LiveCurves("t")
    for r in recs:
        live(r)
    assert isinstance(live.widget, go.FigureWidget) and list(live.widget.data[0].x) == [1, 2]


def test_difficulty_figure_counts_each_level_and_peaks_signal_at_half():
    fig = viz.difficulty_figure([0, 0.25, 0.5, 0.5, 1.0, 1.0], group_size=4)
    assert list(fig.data[0].y) == [1, 1, 2, 0, 2]
    signal = np.asarray(fig.data[1].y)
    assert np.asarray(fig.data[1].x)[signal.argmax()] == pytest.approx(0.5)
    assert "50%" in fig.layout.title.text  # 3 of 6 questions have 0 < d < 1


def test_prediction_figure_title_reports_quality():
    fig = viz.prediction_figure([0.1, 0.5, 0.9], [0.0, 0.5, 1.0], ["a", "b", "c"],
                                history=[{"label": "x", "pearson": 1.0, "spearman": 1.0, "mae": 0.067}])
    assert "Pearson 1.00" in fig.layout.title.text
    assert list(fig.data[1].x) == [0.0, 0.5, 1.0] and list(fig.data[1].y) == [0.1, 0.5, 0.9]
    assert len(fig.data) == 5 and list(fig.data[2].y) == [1.0]
    assert len(viz.prediction_figure([0.1], [0.0]).data) == 2  # no history: the scatter alone


def test_selection_figure_mass_sums_to_one_and_sits_at_alpha():
    d = np.linspace(0, 1, 41)
    fig = viz.selection_figure(d, target_difficulty=0.25, temperature=1e-3, selected=[10, 11])
    mass = np.asarray(fig.data[1].y)
    assert mass.sum() == pytest.approx(1.0)
    assert np.asarray(fig.data[1].x)[mass.argmax()] == pytest.approx(0.275)  # bin [0.25, 0.30) holds d = α
    assert list(fig.data[2].x) == [0.25, 0.275]
    soft = viz.selection_figure(d, 0.25, 10.0)
    assert np.asarray(soft.data[1].y).max() < 0.1  # τ large: nearly uniform over 20 bins


def test_attention_figures_sort_and_truncate():
    w = np.array([0.1, 0.5, 0.05, 0.35])
    bars = viz.attention_bars(w, ["a", "b", "c", "d"], [0.0, 0.5, 1.0, 0.25], top=2)
    assert list(bars.data[0].x) == [0.35, 0.5]  # largest last = at the top of the chart
    heat = viz.attention_heatmap(np.array([[0.1, 0.9], [0.6, 0.4]]), ["q1", "q2"], ["hard", "easy"], [1.0, 0.0])
    assert np.asarray(heat.data[0].z).tolist() == [[0.9, 0.1], [0.4, 0.6]]  # easy reference first
    table = top_references(w, ["a", "b", "c", "d"], [0.0, 0.5, 1.0, 0.25], top=3)
    assert list(table.index) == [1, 3, 0] and table["a_i·y_i"].iloc[0] == 0.25


def test_replay_figures_split_fresh_replayed_and_shortfall():
    recs = [record(1, **{"replay/replayed": 0.0, "replay/mean_age": 0.0}), record(2, **{"replay/replayed": 1.0, "replay/shortfall": 1.0, "replay/mean_age": 1.0,
                                    "replay/buffer_mean_age": 0.5})]
    fig = viz.replay_share_figure(recs)
    assert [list(t.y) for t in fig.data[:3]] == [[4, 4], [0, 1.0], [0, 1.0]]
    assert list(fig.data[3].x) == [2]  # no age drawn for a step that replayed nothing
    buf = viz.replay_buffer_figure([0, 1, 1, 3], [0.5, 0.25, 1.0, 0.75], [True, True, False, True])
    assert len(buf.data[0].y) == 3 and len(buf.data[1].y) == 1
    assert list(buf.data[2].y) == [1, 1, 0, 1] and list(buf.data[3].y) == [0, 1, 0, 0]


def test_comparison_figure_and_table_time_to_target(tmp_path):
    import json
    for name, method, rates in (("g", "grpo", [0.1, 0.3, 0.5]), ("d", "dots_rr", [0.2, 0.5, 0.6])):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"method": method, "seed": 0}))
        recs = [{**record(s), "eval/pass_rate": r, "time/elapsed": 10.0 * s} for s, r in enumerate(rates, 1)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "not-a-run").mkdir()
    runs = load_runs(f"{tmp_path}/*")
    assert sorted(runs) == ["d", "g"]
    table, target = compare_runs(runs, baseline="grpo")
    assert target == pytest.approx(0.5)  # grpo's final pass rate
    assert table.loc["d", "seconds to target"] == 20.0 and table.loc["g", "seconds to target"] == 30.0
    assert table.loc["d", "time ratio vs grpo"] == pytest.approx(2 / 3, abs=1e-3)  # table rounds to 3 places
    fig = viz.comparison_figure({n: r for n, (c, r) in runs.items()}, target, groups={"d": "dots_rr", "g": "grpo"})
    assert len(fig.data) == 4 and list(fig.data[1].x) == [16, 32, 48]


def test_buffer_contents_of_a_run_without_checkpoint_is_empty(tmp_path):
    assert list(buffer_contents(tmp_path).columns) == ["question", "step", "age", "pass_rate", "has_variance",
                                                       "replayable"]


# ---- widgets ------------------------------------------------------------------------------------
def test_reference_picker_redraws_on_every_control(data):
    calls = []
    picker = make_picker(data, calls, k=6)
    first = list(picker.figure.data[1].y)
    assert len(picker.history) == 1 and len(picker.refs) == 6
    picker.strategy.value = "diverse"
    picker.k.value = 10
    picker.seed.value = 3
    assert [h["label"] for h in picker.history][1:] == ["diverse K=6 seed=0", "diverse K=10 seed=0",
                                                        "diverse K=10 seed=3"]
    assert list(picker.figure.data[1].y) != first
    assert len(picker.figure.data[2].y) == 4  # quality history trace grows with each attempt
    q = prediction_quality(picker.prediction, data["probe_d"])
    assert picker.history[-1]["pearson"] == pytest.approx(q["pearson"], nan_ok=True)
    assert f"{q['mae']:.3f}" in picker.status.value


def test_reference_picker_manual_add_and_remove(data):
    picker = make_picker(data, k=4)
    extra = picker.add_choice.options[0][1]
    picker.add_choice.value = extra
    picker.add_button.click()
    assert extra in picker.refs and len(picker.refs) == 5
    assert extra not in [v for _, v in picker.add_choice.options]
    picker.ref_list.value = (extra,)
    picker.remove_button.click()
    assert extra not in picker.refs and len(picker.history) == 3
    picker.ref_list.value = tuple(picker.refs[:3])  # would leave one reference: refused
    picker.remove_button.click()
    assert len(picker.refs) == 4 and len(picker.history) == 3


def test_reference_picker_sweep_and_snapshot(data):
    picker = make_picker(data, k=4)
    rows = picker.sweep([2, 8])
    assert {(r["strategy"], r["k"]) for r in rows} == {(s, k) for s in ("random", "diverse", "stratified")
                                                      for k in (2, 8)}
    fig = viz.quality_sweep_figure(rows)
    assert len(fig.data) == 6 and list(fig.data[0].x) == [2, 8]
    assert isinstance(picker.snapshot(), go.Figure) and not isinstance(picker.snapshot(), go.FigureWidget)


def test_attention_explorer_temperature_and_query(data):
    refs = np.arange(10)
    ex = AttentionExplorer(data["probe"].prompts, data["probe_emb"], [data["pool"].prompts[i] for i in refs],
                           data["pool_emb"][refs], data["pool_d"][refs], data["probe_d"], temperature=0.1, top=4)
    sharp = effective_references(ex.attention).mean()
    ex.temperature.value = 3.0
    flat = effective_references(ex.attention).mean()
    assert sharp < flat <= 10 + 1e-9
    assert np.allclose(ex.attention.sum(axis=1), 1.0)
    ex.query.value = 2
    assert data["probe"].prompts[2] in ex.bars.layout.title.text and len(ex.bars.data[0].x) == 4
    assert np.asarray(ex.heatmap.data[0].z).shape == (len(data["probe"]), 10)
    assert f"{ex.prediction[2]:.2f}" in ex.status.value
    assert len(ex.table_frame()) == 4
    sweep = ex.sweep([0.01, 1.0, 100.0])
    eff = list(sweep.data[0].y)
    assert eff == sorted(eff) and eff[-1] == pytest.approx(10, rel=0.01)


def test_attention_at_temperature_matches_raw_attention(data):
    from dotslab.predictor import DifficultyPredictor
    q, r, y = data["probe_emb"], data["pool_emb"][:6], torch.tensor(data["pool_d"][:6], dtype=torch.float32)
    pred, attn = attention_at_temperature(q, r, y, 0.1)
    ref_pred, ref_attn = DifficultyPredictor.raw_attention(q, r, y)
    assert np.allclose(attn, ref_attn.numpy(), atol=1e-6) and np.allclose(pred, ref_pred.numpy(), atol=1e-6)


def test_selection_explorer_follows_sliders(data):
    ex = SelectionExplorer(data["pool_d"], n_select=8, target_difficulty=0.5, temperature=1e-3)
    ex.alpha.value = 0.25
    chosen = data["pool_d"][ex.selected]
    assert len(ex.selected) == 8 and abs(chosen.mean() - 0.25) <= 0.25
    expected = selection_probs(data["pool_d"], 0.25, ex.tau.value)
    assert np.asarray(ex.figure.data[1].y).sum() == pytest.approx(expected.sum())
    ex.tau.value = 3.0
    assert "τ = 3" in ex.figure.layout.title.text
    assert isinstance(ex.snapshot(), go.Figure)


def test_workbench_on_tiny_policy_labels_and_predicts(tmp_cache):
    cfg = Config.from_flat({"preset": "tiny", "train_size": 16, "eval_size": 4, "max_new_tokens": 2})
    wb = open_workbench(cfg, progress=False)
    d = wb.labeler(wb.probe)
    assert d.shape == (4,) and wb.labeler.generations == 4 * cfg.grpo.group_size
    wb.labeler(wb.probe)  # cached: no new rollouts
    assert wb.labeler.generations == 4 * cfg.grpo.group_size
    r = wb.predict(wb.reference_set(k=3, strategy="stratified"))
    assert r.pool_prediction.shape == (16,) and r.probe_attention.shape == (4, 3)
    assert ((0 <= r.pool_prediction) & (r.pool_prediction <= 1)).all()


def test_report_does_not_import_plotly():
    """report.py summarises runs without a plotting stack (it once imported plotly for one constant)."""
    import subprocess
    import sys
    code = "import sys, dotslab.report; assert 'plotly' not in sys.modules, 'plotly imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_policy_load_prints_no_loading_bar_and_restores_the_setting(tmp_path, capfd):
    """transformers draws a "Loading weights" bar per from_pretrained; a notebook showed two per policy load."""
    from transformers.utils import logging as hf_logging

    from dotslab.models import load_policy, tiny_policy, tiny_tokenizer
    tok = tiny_tokenizer()
    tiny_policy(tok).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    capfd.readouterr()
    load_policy(str(tmp_path))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # other bars (hub downloads) still show

"""History-mode difficulty prediction: hand-computed cases, a direct loop over the formula, no collapse.

Run: .venv/bin/python -m pytest tests/test_history.py
"""
import math

import numpy as np
import pytest
import torch

from dotslab.config import Config, PredictorConfig, tiny
from dotslab.difficulty import Labels
from dotslab.history import HistoryPredictor, kernel_difficulty, shrink_to_own
from dotslab.planner import RoundPlanner
from dotslab.predictor import OnlinePredictor
from tests.test_planner import fake_group, run_planner


def test_kernel_hand_computed_with_the_prior_pseudo_key():
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[2.0, 0.0], [0.0, 3.0]])          # cosines 1 and 0 (norms must not matter)
    labels, weights = torch.tensor([0.2, 0.9]), torch.tensor([1.0, 0.5])
    m, attn = kernel_difficulty(q, keys, labels, weights)
    e = math.exp(1 / 0.1)
    # weights: key 1 e^10·1, key 2 e^0·0.5, pseudo-key e^0 with label 1/2
    expected = (e * 0.2 + 0.5 * 0.9 + 1 * 0.5) / (e + 0.5 + 1)
    assert float(m[0]) == pytest.approx(expected, rel=1e-6)
    assert attn.shape == (1, 3) and float(attn[0, 2]) == pytest.approx(1 / (e + 1.5), rel=1e-6)
    # excluding key 1 (the question's own key): only key 2 and the pseudo-key remain
    m, _ = kernel_difficulty(q, keys, labels, weights, exclude=torch.tensor([[True, False]]))
    assert float(m[0]) == pytest.approx((0.5 * 0.9 + 0.5) / 1.5, rel=1e-6)


def test_shrink_to_own_hand_computed():
    m = torch.tensor([0.5, 0.5, 0.3])
    own = torch.tensor([1.0, 0.0, 0.0])
    w = torch.tensor([3.6, 8.0, 0.0])           # 0 of 4 correct a step old (γ = 0.9); 8 rollouts; none
    got = shrink_to_own(m, own, w, strength=4.0)
    assert torch.allclose(got, torch.tensor([(3.6 + 2.0) / 7.6, 2.0 / 12.0, 0.3], dtype=torch.float64))


def direct_prediction(emb: np.ndarray, labels: dict, step: int, cfg: PredictorConfig) -> np.ndarray:
    """The module docstring's formulas, one question and one key at a time."""
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    out = np.zeros(len(emb))
    recent = {i: v for i, v in labels.items() if v[1] > step - cfg.history_window}
    for q in range(len(emb)):
        num, den = 0.5 * math.exp(0.0), math.exp(0.0)  # the pseudo-key: score 0, label 1/2
        for i, (y, at, n) in recent.items():
            if i == q:
                continue
            w = cfg.history_decay ** (step - at) * math.exp(float(unit[q] @ unit[i]) / 0.1)
            num, den = num + w * y, den + w
        m = num / den
        if q in recent:
            y, at, n = recent[q]
            w = n * cfg.history_decay ** (step - at)
            m = (w * y + cfg.history_prior_strength * m) / (w + cfg.history_prior_strength)
        out[q] = m
    return out


def test_predictor_matches_a_direct_loop_and_forgets_labels_outside_the_window():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 5))
    cfg = PredictorConfig(predictor_mode="history", history_window=3, history_decay=0.8, history_prior_strength=2.0)
    pred = HistoryPredictor(cfg, torch.tensor(emb, dtype=torch.float32))
    labels = {}
    for step, idx, d, n in ((1, [0, 1], [0.25, 1.0], 4), (3, [2, 3, 1], [0.5, 0.0, 0.75], 4), (5, [4], [1.0], 8)):
        pred.observe(Labels.measured(idx, d, n, step))
        labels.update({i: (x, step, n) for i, x in zip(idx, d)})
    got = pred.predict(5)
    assert sorted(got.key_index.tolist()) == [1, 2, 3, 4]       # question 0 (step 1) is outside W = 3
    np.testing.assert_allclose(got.difficulty.numpy(), direct_prediction(emb, labels, 5, cfg), rtol=1e-5)


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_agreeing_references_do_not_flatten_the_prediction(label):
    """All K references all-wrong (or all-right): history mode still ranks the pool by similarity to them."""
    rng = np.random.default_rng(1)
    emb = torch.tensor(rng.normal(size=(30, 8)), dtype=torch.float32)
    refs = [0, 1, 2, 3]
    cfg = PredictorConfig(predictor_mode="history")
    hist = HistoryPredictor(cfg, emb)
    hist.observe(Labels.measured(refs, [label] * 4, 4, step=1))
    d = hist.predict(1).difficulty.numpy()
    others = np.arange(4, 30)
    assert d[others].max() - d[others].min() > 1e-3, "flat: no ranking"
    # the question most similar to the references is predicted closest to their label
    unit = torch.nn.functional.normalize(emb, dim=1).numpy()
    similarity = np.log(np.exp(unit[others] @ unit[refs].T / 0.1).sum(1))
    assert abs(d[others[np.argmax(similarity)]] - label) == min(abs(d[others] - label))
    # the paper's predictor, by contrast, has nothing to rank with (the collapse the planner reports)
    paper = OnlinePredictor(PredictorConfig(), embed_dim=8, seed=0)
    flat = paper.predict(emb, emb[refs], torch.full((4,), label), ref_index_in_pool=torch.tensor(refs))
    assert float(flat.difficulty.max() - flat.difficulty.min()) < 1e-6


def test_planner_history_mode_uses_fresh_labels_and_needs_no_later_references(tmp_path):
    cfg = Config.from_flat({"run_root": str(tmp_path), "method": "dots_rr", "group_size": 4,
                            "predictor_mode": "history", "later_reference_set_size": 0}, base=tiny())
    planner, plans = run_planner(cfg, 8)
    K, G = cfg.predictor.reference_set_size, 4
    assert plans[0].references and not any(p.references for p in plans[1:])
    hist = planner.predictor.history
    fresh = {i for p in plans for i in p.fresh}
    assert fresh <= set(np.nonzero(hist.step >= 0)[0].tolist())     # every fresh group became a label
    assert planner.total_generations == (sum(len(p.fresh) for p in plans) + K) * G

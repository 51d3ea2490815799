"""Several methods over several seeds: bands, computed text, and the notebook's comparison on the tiny policy.

Run: .venv/bin/python -m pytest tests/test_seeds.py
"""
import numpy as np

from dotslab.config import Config, tiny
from dotslab.curves import seed_bands_figure
from dotslab.rewards import parity_reward
from dotslab.seeds import describe_methods, eval_bands, train_methods


def records(evals, seconds):
    return [{"step": s, "eval/pass_rate": p, "time/elapsed": t} for s, p, t in zip((0, 5, 10), evals, seconds)]


def test_bands_are_mean_and_range_over_seeds_at_shared_steps():
    by_seed = {0: records((0.2, 0.4, 0.5), (0, 2, 4)), 1: records((0.3, 0.2, 0.7), (0, 4, 8)),
               2: records((0.1, 0.3, 0.6), (0, 3, 6))[:2]}  # seed 2 stopped before step 10
    b = eval_bands(by_seed)
    assert b["step"].tolist() == [0, 5]  # only the steps every seed evaluated
    assert np.allclose(b["mean"], [0.2, 0.3]) and np.allclose(b["low"], [0.1, 0.2])
    assert np.allclose(b["high"], [0.3, 0.4]) and np.allclose(b["seconds"], [0, 3])
    fig = seed_bands_figure({"grpo": b})
    assert [t.name for t in fig.data if t.showlegend is not False] == ["grpo"]


def test_description_counts_the_seeds_that_rose():
    runs = {"grpo": {0: records((0.2, 0.4, 0.5), (0, 2, 4)), 1: records((0.3, 0.2, 0.25), (0, 4, 8))}}
    text = describe_methods(runs)
    assert "0.250 at step 0 → 0.375 at step 10" in text and "range 0.250–0.500" in text
    assert "rose in 1 of 2 seeds" in text and "6 s of training" in text


def test_train_methods_makes_one_run_per_method_and_seed_and_reuses_them(tmp_path, monkeypatch):
    import dotslab.seeds as seeds
    cfg = Config.from_flat({"run_root": str(tmp_path), "total_steps": 2, "eval_every": 1, "checkpoint_every": 2},
                           base=tiny())
    calls = []
    real = seeds.train
    monkeypatch.setattr(seeds, "train", lambda c, **kw: calls.append((c.method, c.seed)) or real(c, reward_fn=parity_reward, **kw))
    runs = train_methods(cfg, ("grpo", "dots_rr"), (0, 1))
    assert calls == [("grpo", 0), ("dots_rr", 0), ("grpo", 1), ("dots_rr", 1)]
    assert all(len([r for r in recs if r["step"] > 0]) == 2 for by in runs.values() for recs in by.values())
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 4 and all(("grpo" in f) != ("dots_rr" in f) for f in folders)
    again = train_methods(cfg, ("grpo",), (0,))  # a finished run is read back, not trained again
    assert again["grpo"][0] == runs["grpo"][0]

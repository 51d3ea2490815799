"""Part 2: how well the difficulty predictor ranks held-out questions, per embedder, K and phase.

Sun et al., arXiv 2506.05316, §3.1 and Table 2 (Pearson r 0.70-0.78 with a trained adapter; 0.07-0.27
without, Table 8). Here: measure the actual difficulty of every question with G rollouts of the
policy, then predict a held-out probe set from K labelled references and score Pearson, Spearman
and MAE against the measured difficulty (METHOD §2 "Quality metric": never on the references).

Decisions:
  1. Two phases: the initial policy, and the policy after the GRPO run of part 1 (its final
     checkpoint, first seed). Embeddings come from the initial policy in both phases, as in
     training, where each question is embedded once and cached (so the 'policy' embedder is frozen).
  2. Two predictors: ``raw`` (untrained: attention over raw embeddings, the fallback before enough
     labels) and ``online`` (the adapter + calibration fitted for ``fit_steps`` BCE episodes on the
     labelled questions, as the trainer does online). Both apply the configured affine correction.
  3. References are random draws of K labelled questions, ``repeats`` times; the table reports the
     mean (and min-max) over draws. Measured labels are themselves noisy (G samples each), which
     caps attainable correlation; ``label_noise_ceiling`` is their split-half reliability ρ
     (Spearman-Brown corrected), and a predictor of the true difficulty reaches at most about √ρ.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dotslab.data import load_task, render_prompt
from dotslab.embed import make_embedder
from dotslab.models import load_policy
from dotslab.predictor import OnlinePredictor, prediction_quality
from dotslab.records import Question
from dotslab.rewards import SafeReward, get_reward_fn
from dotslab.rollout import HFGenerateEngine
from dotslab.trainer import seed_everything


def measure_correct(engine: HFGenerateEngine, tokenizer: Any, questions: Sequence[Question], group_size: int,
                    reward: SafeReward) -> np.ndarray:
    """(N, G) bool: correctness of G sampled completions per question under the current policy."""
    per_prompt = engine.sample([render_prompt(q, tokenizer) for q in questions], group_size)
    return np.array([[reward(s.text, q)[1] for s in group] for q, group in zip(questions, per_prompt)], dtype=bool)


def split_half_ceiling(correct: np.ndarray) -> float:
    """Spearman-Brown corrected correlation between difficulties from the two halves of each group."""
    g = correct.shape[1]
    if g < 2:
        return float("nan")
    a, b = 1 - correct[:, : g // 2].mean(1), 1 - correct[:, g // 2:].mean(1)
    r = prediction_quality(a, b)["pearson"]
    return float(2 * r / (1 + r)) if np.isfinite(r) and r > -1 else float("nan")


def _score(pred_cfg: Any, emb: torch.Tensor, labels: torch.Tensor, probe: np.ndarray, labelled: np.ndarray,
           k: int, repeats: int, fit_steps: int, seed: int) -> dict[str, dict[str, Any]]:
    """Metrics of ``raw`` and ``online`` predictions of the probe rows from K labelled references."""
    out: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(seed)
    draws = [rng.choice(labelled, size=min(k, len(labelled)), replace=False) for _ in range(repeats)]
    for kind in ("raw", "online"):
        predictor = OnlinePredictor(pred_cfg, embed_dim=emb.shape[1], seed=seed)
        t0 = time.perf_counter()
        if kind == "online":
            predictor.observe(emb[labelled], labels[labelled], round=0)
            predictor.fit(fit_steps)
        fit_s = time.perf_counter() - t0
        runs, t_pred = [], 0.0
        for refs in draws:
            t0 = time.perf_counter()
            pred = predictor.predict(emb[probe], emb[refs], labels[refs])
            t_pred += time.perf_counter() - t0
            runs.append(prediction_quality(pred.difficulty, labels[probe]))
        out[kind] = {m: _agg([r[m] for r in runs]) for m in ("pearson", "spearman", "mae")}
        out[kind].update({"used_adapter": bool(predictor.is_trained), "fit_seconds": fit_s,
                          "predict_seconds_per_call": t_pred / max(1, len(draws))})
    return out


def _agg(values: Sequence[float]) -> dict[str, Any]:
    v = np.array([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def run_predictor_quality(bench: Any, task: str | None, phase_checkpoints: dict[str, str | None],
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure difficulties per phase and score every (embedder, K, predictor) on the probe set."""
    import dataclasses

    p = bench.predictor
    cfg = dataclasses.replace(bench.train, seed=bench.seeds[0], task=task or bench.train.task)
    seed_everything(cfg.seed, 0)
    train_set, _ = load_task(cfg)  # the held-out eval set stays untouched; probes come from the pool
    n = p.probe_size + p.labelled_size
    if n > len(train_set):
        raise ValueError(f"predictor part needs {n} questions, the pool has {len(train_set)}")
    order = np.random.default_rng(cfg.seed + 17).permutation(len(train_set))[:n]
    questions = list(train_set.subset(order))
    probe, labelled = np.arange(p.probe_size), np.arange(p.probe_size, n)
    reward = SafeReward(bench.reward_fn or get_reward_fn(cfg.reward, cfg.task))
    g = cfg.grpo

    model, tok = load_policy(cfg.policy, seed=cfg.seed)
    embeddings, embed_info = {}, {}
    for spec in p.embedders:  # frozen encoders: embedded once with the initial policy
        t0 = time.perf_counter()
        embedder = make_embedder(spec, policy=model, tokenizer=tok, cache_dir=None)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        embeddings[spec] = embedder.embed([q.prompt for q in questions])
        embed_info[spec] = {"dim": int(embeddings[spec].shape[1]), "load_seconds": load_s,
                            "seconds_per_question": (time.perf_counter() - t0) / n}
        del embedder

    phases: dict[str, Any] = {}
    for phase, checkpoint in phase_checkpoints.items():
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            del state
        engine = HFGenerateEngine(model, tok, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                  top_p=g.top_p)
        seed_everything(cfg.seed + 31, 0)
        t0 = time.perf_counter()
        correct = measure_correct(engine, tok, questions, p.group_size, reward)
        rollout_s = time.perf_counter() - t0
        labels = torch.tensor(1 - correct.mean(1), dtype=torch.float32)           # (n,) difficulty
        strata: dict[str, list[float]] = {}
        for q, d in zip(questions, labels.tolist()):
            strata.setdefault(str(q.metadata.get("stratum", q.metadata.get("level", "all"))), []).append(d)
        results = []
        for spec in p.embedders:
            for k in p.reference_sizes:
                pred_cfg = dataclasses.replace(cfg.predictor, reference_set_size=k, embedder=spec)
                scored = _score(pred_cfg, embeddings[spec], labels, probe, labelled, k, p.repeats, p.fit_steps,
                                cfg.seed)
                for kind, metrics in scored.items():
                    results.append({"embedder": spec, "k": k, "predictor": kind, **metrics})
        phases[phase] = {
            "checkpoint": checkpoint, "policy_param_l2": float(sum(float(w.detach().double().pow(2).sum())
                                                                   for w in model.parameters()) ** 0.5),
            "rollout_seconds": rollout_s, "questions": n, "group_size": p.group_size,
            "probe_mean_difficulty": float(labels[probe].mean()),
            "probe_effective_frac": float(((labels[probe] > 0) & (labels[probe] < 1)).float().mean()),
            "difficulty_hist": np.histogram(labels.numpy(), bins=p.group_size + 1, range=(0, 1))[0].tolist(),
            "difficulty_by_stratum": {s: {"mean": float(np.mean(v)), "n": len(v)} for s, v in sorted(strata.items())},
            "label_noise_ceiling": split_half_ceiling(correct),
            "results": results}
        best = max((r for r in results if r["pearson"]["mean"] is not None), default=None,
                   key=lambda r: r["pearson"]["mean"])
        log(f"  phase {phase}: mean difficulty {float(labels.mean()):.2f}, rollouts {rollout_s:.1f}s"
            + (f", best Pearson {best['pearson']['mean']:.2f} ({best['embedder']}, K={best['k']}, "
               f"{best['predictor']})" if best else ", no finite correlation (constant labels?)"))
    return {"phases": phases, "embedders": embed_info, "probe_size": p.probe_size,
            "labelled_size": p.labelled_size, "reference_sizes": list(p.reference_sizes),
            "repeats": p.repeats, "fit_steps": p.fit_steps}


def in_run_quality(records_by_method_seed: dict[str, dict[int, list]], methods: Sequence[str] = ("dots", "dots_rr")
                   ) -> dict[str, Any]:
    """Mean predictor/* metrics logged during the part-1 runs, first vs second half of training.

    These score the configured embedder and K on each fresh batch before its rollouts (references
    excluded), i.e. the predictor as it actually selected (trainer decision 3).
    """
    out: dict[str, Any] = {}
    for method in methods:
        if method not in records_by_method_seed:
            continue
        halves: dict[str, dict[str, list[float]]] = {"early": {}, "late": {}}
        for recs in records_by_method_seed[method].values():
            steps = [r for r in recs if r.get("time/step") is not None]
            for i, r in enumerate(steps):
                half = "early" if i < len(steps) / 2 else "late"
                for key in ("predictor/pearson", "predictor/spearman", "predictor/mae", "select/effective_frac"):
                    if r.get(key) is not None:
                        halves[half].setdefault(key.split("/")[1], []).append(float(r[key]))
        out[method] = {h: {k: _agg(v) for k, v in d.items()} for h, d in halves.items()}
    return out

"""Part 2: how well the difficulty predictor ranks held-out questions, per embedder, K and phase.

Sun et al., arXiv 2506.05316, §3.1 and Table 2 (Pearson r 0.70-0.78 with a trained adapter; 0.07-0.27
without, Table 8). Here: measure the actual difficulty of every question with G rollouts of the
policy, then predict a held-out probe set from K labelled references and score Pearson, Spearman
and MAE against the measured difficulty (docs/method.md §2 "Quality metric": never on the references).

Decisions:
  1. Two phases: the initial policy, and the policy after the GRPO run of part 1 (its final
     checkpoint, first seed). Embeddings come from the initial policy in both phases, as in
     training, where each question is embedded once and cached (so the 'policy' embedder is frozen).
  2. Two predictors: ``raw`` (untrained: attention over raw embeddings, the fallback before enough
     labels) and ``online`` (the adapter + calibration fitted for ``fit_steps`` BCE episodes on the
     labelled questions, as the trainer does online). Both apply the configured affine correction.
  3. References are random draws of K labelled questions, ``repeats`` times; the table reports the
     mean (and min-max) over draws. A draw whose prediction is flat (every probe the same value: the
     collapse of agreeing references) has no ranking: it is scored r = 0, not dropped, and the share
     of such draws is reported.
  4. History mode (``dotslab.history``) is scored with the K references plus ``history_size`` other
     labelled questions standing for the recent fresh groups, and alone (K = 0). Measured labels are themselves noisy (G samples each), which
     caps attainable correlation; ``label_noise_ceiling`` is their split-half reliability ρ
     (Spearman-Brown corrected), and a predictor of the true difficulty reaches at most about √ρ.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dotslab.difficulty import Labels
from dotslab.embed import make_embedder
from dotslab.history import HistoryPredictor
from dotslab.predictor import OnlinePredictor, prediction_quality
from dotslab.rewards import SafeReward, get_reward_fn
from dotslab.rollout import HFGenerateEngine, measure_correct
from dotslab.prepare import prepare_run
from dotslab.trainer import seed_everything


def split_half_ceiling(correct: np.ndarray) -> float:
    """Spearman-Brown corrected correlation between difficulties from the two halves of each group."""
    g = correct.shape[1]
    if g < 2:
        return float("nan")
    a, b = 1 - correct[:, : g // 2].mean(1), 1 - correct[:, g // 2:].mean(1)
    r = prediction_quality(a, b)["pearson"]
    return float(2 * r / (1 + r)) if np.isfinite(r) and r > -1 else float("nan")


def _quality(pred: Any, actual: torch.Tensor) -> dict[str, float]:
    """Pearson / Spearman / MAE, with a flat prediction (no ranking) scored as r = 0 and flagged."""
    q = prediction_quality(pred, actual)
    flat = float(torch.as_tensor(pred).max() - torch.as_tensor(pred).min()) < 1e-9
    if flat and float(actual.max() - actual.min()) > 0:
        q.update(pearson=0.0, spearman=0.0)
    return {**q, "no_ranking": float(flat)}


def _draws(labelled: np.ndarray, k: int, history: int, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` (references, history labels) pairs: K random labelled questions, then H of the rest."""
    rng = np.random.default_rng([seed, k])
    out = []
    for _ in range(repeats):
        refs = rng.choice(labelled, size=min(k, len(labelled)), replace=False)
        rest = np.setdiff1d(labelled, refs)
        out.append((refs, rng.choice(rest, size=min(history, len(rest)), replace=False)))
    return out


def _score(pred_cfg: Any, emb: torch.Tensor, labels: torch.Tensor, probe: np.ndarray, labelled: np.ndarray,
           k: int, repeats: int, fit_steps: int, seed: int, history: int = 0,
           group_size: int = 4) -> dict[str, dict[str, Any]]:
    """Metrics of the probe rows' predictions from K labelled references, per predictor kind.

    ``raw`` / ``online``: the paper mode (this round's references only), untrained or with the adapter
    fitted on the labelled questions; ``history``: history mode with the references plus H other
    labelled questions as the recent labels (offline every label comes from one policy: age 0).
    K = 0 scores history mode alone (no new references: the 'later_reference_set_size 0' case).
    """
    out: dict[str, dict[str, Any]] = {}
    draws = _draws(labelled, k, history, repeats, seed)
    kinds = (("raw", "online") if k >= 2 else ()) + (("history",) if history else ())
    for kind in kinds:
        runs, t_pred, fit_s, trained = [], 0.0, 0.0, False
        if kind == "history":
            for refs, hist in draws:
                t0 = time.perf_counter()
                predictor = HistoryPredictor(dataclasses.replace(pred_cfg, predictor_mode="history"), emb)
                keys = np.concatenate([refs, hist])
                predictor.observe(Labels.measured(keys, labels[keys].numpy(), group_size, step=0))
                pred = predictor.predict(0).difficulty[probe]
                t_pred += time.perf_counter() - t0
                runs.append(_quality(pred, labels[probe]))
        else:
            predictor = OnlinePredictor(pred_cfg, embed_dim=emb.shape[1], seed=seed)
            t0 = time.perf_counter()
            if kind == "online":
                predictor.add_labels(emb[labelled], labels[labelled], round=0)
                predictor.fit(fit_steps)
            fit_s, trained = time.perf_counter() - t0, predictor.is_trained
            for refs, _ in draws:
                t0 = time.perf_counter()
                pred = predictor.predict(emb[probe], emb[refs], labels[refs])
                t_pred += time.perf_counter() - t0
                runs.append(_quality(pred.difficulty, labels[probe]))
        out[kind] = {m: _agg([r[m] for r in runs]) for m in ("pearson", "spearman", "mae")}
        out[kind].update({"no_ranking_share": float(np.mean([r["no_ranking"] for r in runs])),
                          "used_adapter": trained, "fit_seconds": fit_s,
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
    p = bench.predictor
    cfg = dataclasses.replace(bench.train, seed=bench.seeds[0], task=task or bench.train.task)
    seed_everything(cfg.seed, 0)
    prepared = prepare_run(cfg, embed=False)
    train_set, model, tok = prepared.train_set, prepared.model, prepared.tokenizer  # probes come from the pool
    n = p.probe_size + p.labelled_size
    if n > len(train_set):
        raise ValueError(f"predictor part needs {n} questions, the pool has {len(train_set)}")
    order = np.random.default_rng(cfg.seed + 17).permutation(len(train_set))[:n]
    questions = list(train_set.subset(order))
    probe, labelled = np.arange(p.probe_size), np.arange(p.probe_size, n)
    reward = SafeReward(bench.reward_fn or get_reward_fn(cfg.reward, cfg.task))
    g = cfg.grpo

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
            for k in ((0,) if p.history_size else ()) + tuple(p.reference_sizes):
                pred_cfg = dataclasses.replace(cfg.predictor, reference_set_size=max(k, 2), embedder=spec)
                scored = _score(pred_cfg, embeddings[spec], labels, probe, labelled, k, p.repeats, p.fit_steps,
                                cfg.seed, history=p.history_size, group_size=p.group_size)
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


def in_run_quality(records_by_arm_seed: dict[str, dict[int, list]]) -> dict[str, Any]:
    """The predictor as it selected: each fresh batch scored before its rollouts (references excluded).

    Per arm with a predictor: the (predicted, realised) pairs of every step are pooled per seed and
    scored once (``pooled``: Pearson, Spearman, MAE; then mean and min-max over seeds), and the
    per-step Pearson is averaged with a flat prediction (no ranking) scored 0 (``per_step``). Under
    DOTS the batch is chosen near α, which narrows the predicted range and lowers any correlation.
    """
    out: dict[str, Any] = {}
    for arm, by_seed in records_by_arm_seed.items():
        pooled: dict[str, list[float]] = {"pearson": [], "spearman": [], "mae": []}
        per_step, flat_steps, effective = [], [], []
        for recs in by_seed.values():
            pairs = [pair for r in recs for pair in (r.get("predictor/probe_pairs") or [])]
            for r in recs:
                p = r.get("predictor/probe_pairs")
                if r.get("select/effective_frac") is not None:
                    effective.append(float(r["select/effective_frac"]))
                if not p:
                    continue
                pred, act = np.array(p, dtype=float).T
                q = _quality(torch.tensor(pred), torch.tensor(act))
                flat_steps.append(q["no_ranking"])
                if np.isfinite(q["pearson"]):
                    per_step.append(q["pearson"])
            if len(pairs) >= 3:
                pred, act = np.array(pairs, dtype=float).T
                q = prediction_quality(torch.tensor(pred), torch.tensor(act))
                for key in pooled:
                    pooled[key].append(q[key])
        if not flat_steps:
            continue
        out[arm] = {"pooled": {k: _agg(v) for k, v in pooled.items()},
                    "per_step_pearson": _agg(per_step), "flat_step_share": float(np.mean(flat_steps)),
                    "steps_scored": len(flat_steps), "effective_frac": _agg(effective)}
    return out

"""Part 3: where a training step's time goes, and what DOTS + replay bookkeeping costs.

Paper §5 / docs/method.md §7: rollouts are 46-54% of a GRPO step; predicting 10K questions from cached
embeddings takes 1.71 s. Here the split comes from the ``time/*`` keys every step logs
(:data:`dotslab.metrics.GLOSSARY`), and the claim checked is that prediction + selection + replay
bookkeeping stays under 3% of a step.

Decisions:
  1. Bookkeeping = ``time/prediction`` (adapter fit, predicting the pool, storing labels) +
     ``time/selection`` + ``time/replay``. Reference rollouts (``time/reference``) are generation, not
     bookkeeping: they are reported separately and counted in time-to-target.
  2. Rewards are scored inside the rollout call; when a run logs no ``time/reward`` the generation
     share includes scoring and the table says so.
  3. Pool embedding happens once per question before training (cached on disk by dotslab.embed),
     so it is outside every step; its cold cost is measured here once and reported on its own.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

SPLIT_KEYS = ("time/generation", "time/reference", "time/reward", "time/prediction", "time/selection",
              "time/replay", "time/update")
BOOKKEEPING_KEYS = ("time/prediction", "time/selection", "time/replay")
LIMIT = 0.03


def step_split(records: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Per step: seconds per key, ``other`` (step minus the named parts) and the bookkeeping share."""
    out = []
    for r in records:
        if r.get("time/step") is None:
            continue
        row = {k: float(r.get(k) or 0.0) for k in SPLIT_KEYS}
        row["time/step"] = float(r["time/step"])
        row["other"] = max(0.0, row["time/step"] - sum(row[k] for k in SPLIT_KEYS))
        book = sum(row[k] for k in BOOKKEEPING_KEYS)
        row["bookkeeping"] = book
        row["bookkeeping_share"] = book / row["time/step"] if row["time/step"] > 0 else float("nan")
        row["step"] = int(r["step"])
        out.append(row)
    return out


def summarise_overhead(records_by_method_seed: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]],
                       method: str = "dots_rr") -> dict[str, Any]:
    """Mean split per method; per-step bookkeeping shares of ``method``; the < 3% verdict."""
    split: dict[str, Any] = {}
    has_reward_key = False
    for m, by_seed in records_by_method_seed.items():
        rows = [row for recs in by_seed.values() for row in step_split(recs)]
        has_reward_key |= any(r.get("time/reward") is not None for recs in by_seed.values() for r in recs)
        if rows:
            split[m] = {k: float(np.mean([row[k] for row in rows]))
                        for k in (*SPLIT_KEYS, "other", "bookkeeping", "time/step")}
            split[m]["share"] = {k: split[m][k] / split[m]["time/step"] for k in (*SPLIT_KEYS, "other", "bookkeeping")}
    steps = {s: step_split(recs) for s, recs in records_by_method_seed.get(method, {}).items()}
    shares = [row["bookkeeping_share"] for rows in steps.values() for row in rows]
    total_book = sum(row["bookkeeping"] for rows in steps.values() for row in rows)
    total_time = sum(row["time/step"] for rows in steps.values() for row in rows)
    overall = total_book / total_time if total_time > 0 else float("nan")
    return {
        "method": method, "limit": LIMIT, "split": split, "reward_timed_separately": has_reward_key,
        "per_step": {s: [{"step": row["step"], "bookkeeping_share": row["bookkeeping_share"],
                          **{k: row[k] for k in BOOKKEEPING_KEYS}} for row in rows] for s, rows in steps.items()},
        "share_overall": overall,
        "share_mean": float(np.mean(shares)) if shares else float("nan"),
        "share_max": float(np.max(shares)) if shares else float("nan"),
        "under_limit": bool(overall < LIMIT) if np.isfinite(overall) else None,
        "max_step_under_limit": bool(max(shares) < LIMIT) if shares else None,
    }


def embedding_cost(spec: str, texts: Sequence[str], policy: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Cold embedding seconds per question for ``spec`` and a check that a second call encodes nothing."""
    from dotslab.embed import make_embedder

    t0 = time.perf_counter()
    embedder = make_embedder(spec, policy=policy, tokenizer=tokenizer, cache_dir=None)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedder.embed(list(texts))
    cold = time.perf_counter() - t0
    calls = embedder.encode_calls
    t0 = time.perf_counter()
    embedder.embed(list(texts))
    warm = time.perf_counter() - t0
    return {"embedder": spec, "questions": len(texts), "load_seconds": load, "cold_seconds": cold,
            "cold_seconds_per_question": cold / max(1, len(texts)), "cached_seconds": warm,
            "cached_call_encoded": embedder.encode_calls - calls}

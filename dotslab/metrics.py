"""Metric names, their glossary, and the append-only JSONL run log.

Not from the paper: bookkeeping so runs can be compared (time-to-target counts every generation,
reference rollouts included, docs/method.md §7).

Decisions:
  1. One JSON object per line, flushed and fsync'ed per record; a torn last line (a kill mid-write)
     is detected and cut off by :func:`repair_jsonl` before anything reads the file for a resume.
     A bad line anywhere else is not a torn write: it raises :class:`MetricsError` with path and line.
  2. ``GLOSSARY`` is the single source of the README's metric table (tests check they agree).
  3. Reward bookkeeping counts per phase: training steps count their own generations' failures and
     out-of-range rewards; evaluations count theirs under ``eval/``, so a resumed run logs the same.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

GLOSSARY: dict[str, str] = {
    "step": "training step index (1-based after the update)",
    "train/pass_rate": "mean pass rate of the step's fresh groups (binarized rewards)",
    "train/mean_reward": "mean raw reward of the step's fresh groups",
    "train/loss": "policy loss of the step (mean over optimizer steps)",
    "train/grad_norm": "gradient norm before clipping (mean over optimizer steps)",
    "train/clip_frac": "share of tokens whose clipped surrogate was active",
    "train/mean_c": "mean c = π_old/μ over all trained tokens; exactly 1 on fresh rows",
    "train/mean_abs_log_rho": "mean |log π_θ − log μ| over tokens",
    "train/kl": "k3 KL to the initial policy (0 unless kl_coef > 0)",
    "train/skipped": "1 if the update was skipped for a non-finite loss or gradient",
    "train/completion_tokens": "mean completion length in tokens",
    "rollout/frac_zero_std": "share of fresh groups with no reward spread (no gradient signal)",
    "rollout/pass_rate_hist": "histogram of fresh groups' pass rates over G+1 bins (0, 1/G, …, 1)",
    "rollout/reward_errors": "reward-function calls of the step's generations that raised or returned non-finite (scored 0)",
    "rollout/reward_clamped": "rewards of the step's generations outside [0, 1], clamped into it",
    "rollout/generations": "completions generated this step, reference rollouts included",
    "rollout/discarded_groups": "method dapo: groups generated this step and dropped for having no reward spread",
    "rollout/refill_rounds": "method dapo: rounds of extra rollouts this step needed to refill dropped groups",
    "rollout/filter_shortfall": "method dapo: groups with spread still missing after max_refills rounds",
    "rollout/total_generations": "cumulative completions generated, reference rollouts included",
    "select/zero_variance_frac": "same as rollout/frac_zero_std, under the selection namespace",
    "select/mean_predicted_difficulty": "mean predicted difficulty d̂ of the selected questions",
    "select/mean_actual_difficulty": "mean realised difficulty of the selected questions",
    "select/abs_error": "mean |d̂ − d| over the selected questions",
    "select/effective_frac": "share of selected questions with 0 < d < 1",
    "predictor/pearson": "Pearson r of predicted vs realised difficulty on the fresh batch (not references)",
    "predictor/spearman": "Spearman r of the same",
    "predictor/mae": "mean absolute error of the same",
    "predictor/probe_pairs": "the [predicted, realised] difficulty of each question behind predictor/pearson (for pooled scores)",
    "predictor/used_adapter": "1 once the trained adapter predicts, 0 for raw-embedding attention",
    "predictor/train_loss": "online BCE loss of the adapter's last episode",
    "predictor/labels": "labelled questions available to train the adapter",
    "predictor/reference_pass_rate": "mean pass rate of the round's reference set",
    "predictor/keys": "history mode: labelled questions the round's prediction attends over (last W steps)",
    "predictor/mean_key_age": "history mode: mean age in steps of those labels",
    "predictor/flat": "1 if the round's predicted difficulties are all equal (a collapse: the DOTS draw is then uniform)",
    "replay/fraction_replayed": "share of the step's groups taken from the buffer",
    "replay/replayed": "groups replayed this step",
    "replay/shortfall": "replay groups asked for but not available",
    "replay/mean_age": "mean age in steps of the replayed groups",
    "replay/buffer_size": "groups in the buffer after the step",
    "replay/eligible": "replayable groups (newest per question, non-zero variance)",
    "replay/buffer_mean_age": "mean age in steps of all buffered groups",
    "replay/mean_c": "mean c = π_old/μ over replayed tokens (their off-policy correction)",
    "replay/mean_abs_log_c": "mean |log c| over replayed tokens",
    "replay/c_outside_clip_frac": "share of replayed tokens with c outside [1−ε, 1+ε] (the paper's clip around 1 would zero their gradient)",
    "replay/fallback_fresh": "TRL integration (replay shortfall 'fresh'): groups generated fresh because the buffer was short",
    "select/round": "selection round index (0-based; a round is steps_per_round steps)",
    "run/threads": "torch CPU threads the run used (the threads setting, or the automatic choice), in the step-0 record",
    "eval/pass_rate": "held-out pass rate: mean reward of eval_samples completions per question sampled at "
                      "eval_temperature / eval_top_p (one greedy completion with eval_greedy)",
    "eval/pass_rate_se": "sampling standard error of eval/pass_rate over the fixed held-out set",
    "eval/reward_errors": "reward-function calls of the evaluation that raised or returned non-finite",
    "eval/reward_clamped": "rewards of the evaluation outside [0, 1], clamped into it",
    "time/generation": "seconds sampling fresh completions and their behaviour log-probs",
    "time/reference": "seconds rolling out the reference set (sampling and log-probs)",
    "time/reward": "seconds in the reward function (fresh and reference completions)",
    "time/prediction": "seconds embedding, training the adapter and predicting difficulty",
    "time/selection": "seconds computing selection probabilities and sampling",
    "time/replay": "seconds of replay-buffer bookkeeping",
    "time/update": "seconds of π_old passes, forward/backward and optimizer steps",
    "time/eval": "seconds evaluating held-out pass rate",
    "time/checkpoint": "seconds writing the checkpoint",
    "time/step": "wall-clock seconds of the step (evaluation and checkpoint excluded)",
    "time/elapsed": "cumulative training wall-clock seconds (eval and checkpoint excluded)",
    "time/to_target": "time/elapsed when eval/pass_rate first reached target_pass_rate",
    "rollout/generations_to_target": "rollout/total_generations at that moment",
}


class Logger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...


class NullLogger:
    def log(self, record: dict[str, Any]) -> None:
        pass


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; None reads back as "not measured"
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def clean_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it reads back from JSON: non-finite floats become None."""
    return {k: _clean(v) for k, v in record.items()}


class JsonlLogger:
    """Append-only metrics file; each record is written, flushed and fsync'ed in one call."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(self.path)

    def log(self, record: dict[str, Any]) -> None:
        line = json.dumps(clean_record(record), ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class MetricsError(ValueError):
    """A metrics file holds a line that is not a JSON record (not a torn last line)."""


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def repair_jsonl(path: str | os.PathLike) -> int:
    """Cut a torn last line (unterminated, or complete but unparsable); returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    else:
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        if data[last_start:].strip() and not _parses(data[last_start:]):
            keep = last_start
    if keep != len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return len(data) - keep


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics file. A torn last line is ignored (not repaired); a bad line before
    it raises MetricsError naming the file and line number."""
    out: list[dict[str, Any]] = []
    path = Path(path)
    if not path.exists():
        return out
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            if number >= len(lines) - 1:  # the last line: a torn write
                break
            raise MetricsError(f"{path}:{number}: not a JSON record ({err.msg}); fix or delete that line "
                               f"(the checkpoints are not affected)") from None
        if not isinstance(record, dict):
            raise MetricsError(f"{path}:{number}: not a JSON object")
        out.append(record)
    return out


def truncate_after_step(path: str | os.PathLike, step: int) -> None:
    """Repair a torn last line, then drop records of steps > ``step`` (written after the checkpoint a
    run resumes from)."""
    path = Path(path)
    if not path.exists():
        return
    repair_jsonl(path)
    records = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class OutOfRangeCounter:
    """Wraps a reward function and counts finite rewards outside [0, 1] (which SafeReward clamps),
    with one warning per run; :meth:`pop_count` gives the count since its last call."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self._count, self._warned = fn, 0, False
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, completion: str, question: Any) -> Any:
        value = self.fn(completion, question)
        if isinstance(value, (int, float)) and math.isfinite(value) and not 0.0 <= value <= 1.0:
            self._count += 1
            if not self._warned:
                self._warned = True
                logging.getLogger("dotslab.rewards").warning(
                    "reward %s returned %r for question %r, outside [0, 1]; clamped (counted in "
                    "rollout/reward_clamped, further ones are only counted)", self.__name__, value,
                    getattr(question, "id", "?"))
        return value

    def pop_count(self) -> int:
        count, self._count = self._count, 0
        return count


def pass_rate_histogram(pass_rates: Iterable[float], group_size: int) -> list[int]:
    """Counts of groups at each pass rate k/G, k = 0..G."""
    hist = [0] * (group_size + 1)
    for p in pass_rates:
        hist[min(group_size, max(0, round(p * group_size)))] += 1
    return hist


# the step-time split: these add up to (nearly) time/step; figures and summaries stack them in this order
TIME_KEYS = ("time/generation", "time/reference", "time/reward", "time/prediction", "time/selection",
             "time/replay", "time/update")
TIME_NAMES = {"time/generation": "generation", "time/reference": "reference rollouts", "time/reward": "reward",
              "time/prediction": "prediction", "time/selection": "selection", "time/replay": "replay bookkeeping",
              "time/update": "policy update"}
"""What each part of the split is called in legends and tables."""

"""One frozen, documented run configuration.

Implements the settings table of Sun et al., "Improving Data Efficiency for LLM Reinforcement
Fine-tuning Through Difficulty-targeted Online Data Selection and Rollout Replay" (arXiv 2506.05316),
§5 and App. B, as four sections (GRPO, predictor, selection, replay) plus run-level fields.

Field names are unique across sections, so a flat mapping (a papermill parameters cell, a CLI
``-p key value``) converts without ambiguity: ``Config.from_flat({...})``. Unknown keys and
out-of-range values raise :class:`ConfigError` naming the key; every field has a range in ``RANGES``.
A preset is the set of fields it names (``PRESET_VALUES``); values given next to it win over it.

Deviations (dotslab decisions, see docs/method.md):
  1. Presets ``cpu_demo`` and ``tiny`` shrink the paper's sizes but keep the ratios K/B = 1/2,
     δ = 1/2, C/B = 1 and ν = 2 (``tiny`` keeps all but C/B, which it doubles for small batches).
  2. lr for the 135M CPU policy is 1e-5 (paper: 1e-6 for 1.5B-7B policies at B = 512); it was chosen
     on GRPO alone, under the sampled evaluation, and is used unchanged for every method
     (docs/benchmarks.md, "Choosing lr").
  3. ``bf16_autocast`` is on by default (fp32 master weights); the paper preset and ``tiny`` turn it off.
  4. ``gradient_checkpointing`` is on by default, with micro-batches of 32 sequences (the main job's
     whole minibatch in one pass): the main job peaks at 2.95 GB instead of 4.1 GB, at the same step
     time (docs/benchmarks.md, "The main job under 3 GB"). ``mini`` turns it off: its policy is so
     small that recomputing costs time and saves nothing that matters.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

METHODS = ("grpo", "dots", "rr", "dots_rr", "dapo")
REFERENCE_STRATEGIES = ("random", "diverse", "stratified")
PREDICTOR_MODES = ("paper", "history")
REWARDS = ("auto", "exact", "math_verify", "reasoning_gym", "text", "list")
"""Reward names (``dotslab.rewards.REWARD_NAMES``; a test keeps the two equal)."""


class ConfigError(ValueError):
    """A configuration key is unknown or its value is out of range."""


@dataclass(frozen=True)
class GRPOConfig:
    group_size: int = 4
    """G: completions sampled per question (a group). Paper 8. Must be >= 2 (a group of one has no spread)."""
    questions_per_step: int = 8
    """B: fresh-or-replayed groups per training step. Paper 512."""
    minibatch_questions: int = 8
    """Groups per optimizer step; B / this = optimizer steps per training step. Paper 64 (8 per step)."""
    learning_rate: float = 1e-5
    """AdamW lr, constant, no warmup. Paper 1e-6 (1.5B-7B, B = 512); 1e-5 for the 135M CPU policy (docs/benchmarks.md)."""
    weight_decay: float = 0.0
    """AdamW weight decay. Paper 0 [paper], code 0.01 [code]."""
    clip_eps: float = 0.2
    """ε: PPO clip range; replayed tokens clip around c = π_old/μ (docs/method.md §5)."""
    kl_coef: float = 0.0
    """β: KL penalty to the initial policy (k3 estimator). Paper 0, which needs no reference model."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    max_importance_weight: float = 0.0
    """Truncate the replay weight c = π_old/μ at this value (0: off, the authors' rule) [ours]:
    docs/method.md §5 "Truncating c"."""
    temperature: float = 0.6
    """T: sampling temperature for every rollout; log-probs use logits / T. Paper 0.6."""
    top_p: float = 1.0
    """Nucleus sampling. Paper 0.95 [paper], code 1.0 [code]."""
    max_new_tokens: int = 32
    """Completion length cap in tokens (SmolLM2 answers arithmetic in about 20)."""
    advantage: str = "std"
    """'std': (r - mean)/(std + 1e-6) with unbiased std [code]; 'mean': r - mean [paper, Dr.GRPO]."""
    aggregation: str = "token"
    """'token': mean over all completion tokens of the minibatch [code]; 'sequence': mean of per-sequence means [paper]."""
    micro_batch_size: int = 32
    """Sequences per forward pass (memory knob, no effect on the math); 32 is the main job's minibatch of
    8 × 4, in one pass (with more passes, gradients wait in autograd's buffers beside the accumulated ones)."""
    rollout_engine: str = "hf"
    """'hf' (transformers generate) or 'vllm' (the gpu extra; weights synced after every update)."""
    bf16_autocast: bool = True
    """Run sampling, log-probs and forward/backward under bf16 autocast with fp32 master weights (about 2x
    faster on a CPU with AVX512-BF16); μ, π_old and π_θ then all use the same bf16 numerics."""
    gradient_checkpointing: bool = True
    """Recompute the update's activations in the backward instead of keeping them (memory knob, no effect
    on the math; the update costs one more forward): dotslab/prefix.py, decision 4."""


@dataclass(frozen=True)
class PredictorConfig:
    reference_set_size: int = 4
    """K: questions rolled out each round to label the predictor's references. Paper 256 (B/2)."""
    reference_strategy: str = "random"
    """How the reference set is drawn each round: 'random' [paper], 'diverse' (farthest point), 'stratified'."""
    embedder: str = "minilm"
    """Question encoder: 'minilm' (offline all-MiniLM-L6-v2), 'policy' (policy's mean-pooled hidden
    states), 'hash' (deterministic bag-of-ngrams, no model; tests), or any HF encoder id/path."""
    adapter_hidden_size: int = 256
    """h: width of the query/reference adapter MLPs. Code 896 for a 1536-d encoder."""
    attention_temperature: float = 1.0
    """τ_att: softmax temperature over reference scores. Code 1."""
    affine_correction: bool = True
    """Fit y_ref ≈ a·ŷ_ref + c on the references (leave-one-out) and apply to all, clipped to [0,1] [code+ours]."""
    adapter_learning_rate: float = 1e-3
    """Adam lr for the online adapter + calibration training. Paper 1e-3."""
    adapter_steps_per_round: int = 20
    """Online BCE episodes per selection round (0 disables online training: plain attention)."""
    min_labels_to_train: int = 8
    """Labelled questions needed before the adapter trains; until then raw-embedding attention is used."""
    label_history: int = 4096
    """Most recent (question, pass rate) labels kept for online training."""
    predictor_mode: str = "paper"
    """'paper': predict each round from that round's K references only (adapter + calibration, paper
    §3.1). 'history': attention over every label of the last ``history_window`` steps (references and
    fresh groups) plus each question's own recent label (dotslab extension, ``dotslab.history``). The
    default is the mode the `cpu_sampled` benchmark supported by its pre-registered rule (docs/benchmarks.md:
    the paper's mode reached GRPO's target in 4 of 5 seeds, median time ratio 1.57; history mode in 1 of 5)."""
    history_window: int = 8
    """W: history mode uses labels measured in the last W training steps."""
    history_decay: float = 0.9
    """γ: a label a steps old weighs γ^a, as a key and as a question's own evidence (history mode)."""
    history_prior_strength: float = 4.0
    """λ: pseudo-rollouts of the kernel prediction a question's own label is shrunk toward (history mode);
    with G = 4 and λ = 4 a fresh own label and the prediction weigh the same."""
    later_reference_set_size: int = -1
    """K after round 0: -1 keeps K; a smaller value (0 allowed in history mode, where fresh groups keep
    labelling) cuts the reference rollouts of later rounds."""


@dataclass(frozen=True)
class SelectionConfig:
    target_difficulty: float = 0.5
    """α: difficulty DOTS aims at (0.5 maximises the gradient signal, paper Thm 1)."""
    selection_temperature: float = 1e-3
    """τ: P(q) ∝ exp(-|d̂_q - α|/τ). Paper 1e-3 (effectively nearest-to-α)."""
    steps_per_round: int = 2
    """ν (the paper's μ; here μ is the behaviour policy): training steps per selection round; the reference
    set is re-rolled once per round. Paper 2."""
    reuse_reference_rollouts: bool = False
    """Reuse reference groups whose measured difficulty is near α as fresh groups [paper App. A.1]."""
    max_refills: int = 8
    """Method 'dapo': refill rounds per step at most (verl's ``max_num_gen_batches``); a step still short of
    B groups with spread then trains on those it has and logs ``rollout/filter_shortfall``."""


@dataclass(frozen=True)
class ReplayConfig:
    fresh_fraction: float = 0.5
    """δ: share of a step's groups that are freshly generated under replay. Paper 0.5."""
    buffer_capacity: int = 8
    """C: replay buffer capacity in groups. Paper 256-512 (C/B = 1 in the code)."""
    filter_on_write: bool = False
    """Drop zero-variance groups when writing [paper] instead of when reading [code]."""


@dataclass(frozen=True)
class Config:
    method: str = "grpo"
    """'grpo' (uniform, no replay), 'dots' (selection), 'rr' (uniform + replay), 'dots_rr' (both), 'dapo'
    (uniform with DAPO's dynamic-sampling filter: groups without reward spread are dropped and refilled,
    docs/method.md §6 "Baseline: DAPO's filter"). The
    default is the arm with the smallest median time to target in the `cpu` benchmark, by the rule its
    protocol fixed before the run (docs/benchmarks.md): GRPO; DOTS+RR is one switch away."""
    policy: str = "smollm2"
    """'smollm2' (offline SmolLM2-135M-Instruct), 'tiny' (random-init, tests), or an HF id / local path."""
    task: str = "arithmetic_mix"
    """'arithmetic_mix' (five strata, easy to hard), 'arithmetic' (2-3 terms of 1-2 digits),
    'reasoning_gym:<name>[,<name>]', a .jsonl/.parquet path, or 'hf:<dataset>'."""
    train_size: int = 256
    """Questions in the training pool N (generated tasks only; files use all rows)."""
    eval_size: int = 96
    """Held-out evaluation questions (never trained on, never used as references). With ``eval_samples`` 4,
    96 questions give one evaluation of SmolLM2 a standard error near 0.02 (``eval/pass_rate_se``)."""
    reward: str = "auto"
    """'exact' (numeric exact match), 'math_verify', or 'auto' (exact for arithmetic and arithmetic_mix,
    reasoning-gym's scorer for reasoning_gym tasks, math-verify otherwise)."""
    total_steps: int = 24
    """Training steps to run."""
    eval_every: int = 6
    """Evaluate held-out pass rate every this many steps (and at step 0 and the end); 0 disables."""
    eval_samples: int = 4
    """k: completions sampled per held-out question; held-out pass rate = mean reward over them [paper §5]."""
    eval_temperature: float = 0.6
    """Sampling temperature of the evaluation. Paper 0.6."""
    eval_top_p: float = 0.95
    """Nucleus mass of the evaluation's sampling. Paper 0.95."""
    eval_greedy: bool = False
    """Evaluate with one greedy (argmax) completion per question instead (off: greedy decoding measures only
    the argmax, so it can miss a sharpening of the sampled distribution that RL fine-tuning brings)."""
    target_pass_rate: float = 0.0
    """Held-out pass rate whose first crossing is logged as time-to-target (0: not tracked)."""
    checkpoint_every: int = 5
    """Write a resumable checkpoint every this many steps (and at the end); 0 writes none (benchmarks)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in checkpoints/; with 2 or more, an unreadable newest one falls back to the one before."""
    max_bad_steps: int = 3
    """Stop the run after this many consecutive steps with non-finite loss or gradients."""
    seed: int = 0
    """Seeds every RNG once per step (seed, step) so a resumed run replays identically on CPU."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', or a torch device string such as 'cuda:1'."""
    threads: int = 0
    """torch's CPU threads for the run; 0 chooses at start whichever of 1 thread and all cores runs a short
    matmul faster (on a busy 2-core machine 2 threads ran generation several times slower than 1; on a
    quiet one 2 are faster: docs/reference.md, "Threads"). Float rounding can differ between settings."""
    run_root: str = "runs"
    """Folder under which runs/<run_name>/ is created."""
    run_name: str = ""
    """Run folder name; empty derives '<method>-<task>-s<seed>-<hash>' from this config."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)

    def __post_init__(self) -> None:
        _validate(self)

    # ---- derived values -------------------------------------------------------------
    @property
    def uses_selection(self) -> bool:
        return self.method in ("dots", "dots_rr")

    @property
    def uses_replay(self) -> bool:
        return self.method in ("rr", "dots_rr")

    @property
    def filters_groups(self) -> bool:
        """DAPO's dynamic sampling: fresh groups without reward spread are dropped and refilled."""
        return self.method == "dapo"

    @property
    def fresh_per_step(self) -> int:
        """Fresh groups per step after round 0: δ·B under replay, else B."""
        if not self.uses_replay:
            return self.grpo.questions_per_step
        return max(1, round(self.replay.fresh_fraction * self.grpo.questions_per_step))

    @property
    def resolved_run_name(self) -> str:
        if self.run_name:
            return self.run_name
        task = "".join(c if c.isalnum() else "_" for c in self.task)[:24]
        return f"{self.method}-{task}-s{self.seed}-{self.short_hash()}"

    @property
    def run_dir(self) -> Path:
        """The run folder: ``run_root/<resolved run name>``."""
        return Path(self.run_root) / self.resolved_run_name

    @property
    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"

    def short_hash(self) -> str:
        d = self.to_dict()
        for k in RUN_ONLY:
            d.pop(k)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:6]

    def changed_fields(self) -> dict[str, Any]:
        """The flat fields whose value differs from ``Config()``'s, in field order."""
        default = Config().to_flat()
        return {k: v for k, v in self.to_flat().items() if default[k] != v}

    def _repr_markdown_(self) -> str:
        """In a notebook: a compact table of the fields that differ from the defaults (the repr wraps mid-word)."""
        rows = [f"| `{k}` | `{v!r}` |" for k, v in self.changed_fields().items()]
        return ("**Config**, fields that differ from the defaults (`Config()`; the rest: docs/reference.md):\n\n"
                "| field | value |\n|---|---|\n" + "\n".join(rows) if rows else "**Config**: all defaults.")

    # ---- conversions ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _SECTIONS}
        for name in _SECTIONS:
            flat.update(dataclasses.asdict(getattr(self, name)))
        return flat

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Inverse of :meth:`to_dict` (nested sections); unknown keys raise."""
        flat = {k: v for k, v in d.items() if k not in _SECTIONS}
        for name in _SECTIONS:
            flat.update(d.get(name, {}))
        return cls.from_flat({**ADDED_LATER, **flat})

    @classmethod
    def from_flat(cls, params: Mapping[str, Any], *, base: "Config | None" = None,
                  ignore_private: bool = True) -> "Config":
        """Build a config from flat ``key: value`` pairs: ``base`` (default: the Config defaults), then the
        fields that ``preset`` names, then every other pair, so explicit values win over the preset.

        Keys starting with '_' are skipped when ``ignore_private``; an unknown key raises ConfigError naming it.
        """
        params = dict(params)
        if ignore_private:
            params = {k: v for k, v in params.items() if not k.startswith("_")}
        preset = params.pop("preset", None)
        if preset:
            params = {**preset_values(preset), **params}
        base = cls() if base is None else base
        top = {f.name for f in dataclasses.fields(cls)} - set(_SECTIONS)
        section_kw: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        top_kw: dict[str, Any] = {}
        unknown = []
        for key, value in params.items():
            if key in top:
                top_kw[key] = value
            elif key in _FIELD_TO_SECTION:
                section_kw[_FIELD_TO_SECTION[key]][key] = value
            else:
                unknown.append(key)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}; "
                              f"known keys: {', '.join(sorted(top | set(_FIELD_TO_SECTION)))}")
        for name, kw in section_kw.items():
            if kw:
                top_kw[name] = _typed_replace(getattr(base, name), kw)
        return _typed_replace(base, top_kw)


_SECTIONS = ("grpo", "predictor", "selection", "replay")
RUN_ONLY = ("run_name", "run_root", "total_steps", "device", "keep_checkpoints")
"""Fields that say where and how long a run goes, not what it learns: left out of the derived run name,
and free to change when a run is resumed."""
ADDED_LATER = {"gradient_checkpointing": False}
"""Fields added after runs were saved without them, with the value that does what those runs did: a saved
config that lacks one of these keys is read with this value, not today's default."""
_SECTION_TYPES = {"grpo": GRPOConfig, "predictor": PredictorConfig,
                  "selection": SelectionConfig, "replay": ReplayConfig}
_FIELD_TO_SECTION = {f.name: s for s, t in _SECTION_TYPES.items() for f in dataclasses.fields(t)}


def _typed_replace(obj: Any, kw: Mapping[str, Any]) -> Any:
    """dataclasses.replace with type checks: ints accepted for floats, nothing else coerced."""
    types = {f.name: f.type for f in dataclasses.fields(obj)}
    for key, value in kw.items():
        expected = types[key]
        if expected in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
            kw = {**kw, key: float(value)}
        elif expected in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{key} must be an int, got {value!r}")
        elif expected in ("float", float) and not isinstance(kw[key], float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        elif expected in ("bool", bool) and not isinstance(value, bool):
            raise ConfigError(f"{key} must be True or False, got {value!r}")
        elif expected in ("str", str) and not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
    return dataclasses.replace(obj, **kw)


@dataclass(frozen=True)
class Range:
    """A field's allowed values: ``ok(value)`` and the words that say so in an error."""
    text: str
    ok: Callable[[Any], bool]


def at_least(lo: int | float) -> Range:
    return Range(f">= {lo}", lambda v: math.isfinite(v) and v >= lo)


def interval(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> Range:
    """[lo, hi] with either end open; ``hi = inf`` (open or not) allows only finite values unless closed."""
    text = "> 0" if (lo, hi, open_lo) == (0, math.inf, True) else \
        f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
    return Range(text, lambda v: (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi))


def one_of(*options: Any) -> Range:
    return Range(f"one of {options}", lambda v: v in options)


def matching(pattern: str, text: str) -> Range:
    return Range(text, lambda v: re.fullmatch(pattern, v) is not None)


POSITIVE = interval(0, math.inf, open_lo=True, open_hi=True)  # finite and > 0
UNIT = interval(0, 1)
NON_EMPTY = Range("a non-empty string", lambda v: bool(v.strip()))

RANGES: dict[str, Range] = {
    # GRPO
    "group_size": at_least(2), "questions_per_step": at_least(1), "minibatch_questions": at_least(1),
    "learning_rate": interval(0, 1, open_lo=True), "weight_decay": UNIT, "clip_eps": interval(0, 1, open_lo=True, open_hi=True),
    "kl_coef": at_least(0), "max_importance_weight": at_least(0), "max_grad_norm": Range("> 0 (inf: no clipping)", lambda v: v > 0),
    "temperature": POSITIVE, "top_p": interval(0, 1, open_lo=True), "max_new_tokens": at_least(1),
    "advantage": one_of("std", "mean"), "aggregation": one_of("token", "sequence"), "micro_batch_size": at_least(1),
    "rollout_engine": one_of("hf", "vllm"), "bf16_autocast": one_of(True, False),
    "gradient_checkpointing": one_of(True, False),
    # predictor
    "reference_set_size": at_least(2), "reference_strategy": one_of(*REFERENCE_STRATEGIES), "embedder": NON_EMPTY,
    "adapter_hidden_size": at_least(1), "attention_temperature": POSITIVE, "affine_correction": one_of(True, False),
    "adapter_learning_rate": interval(0, 1, open_lo=True), "adapter_steps_per_round": at_least(0),
    "min_labels_to_train": at_least(1), "label_history": at_least(1), "predictor_mode": one_of(*PREDICTOR_MODES),
    "history_window": at_least(1), "history_decay": interval(0, 1, open_lo=True), "history_prior_strength": POSITIVE,
    "later_reference_set_size": at_least(-1),
    # selection
    "target_difficulty": UNIT, "selection_temperature": POSITIVE, "steps_per_round": at_least(1),
    "reuse_reference_rollouts": one_of(True, False), "max_refills": at_least(0),
    # replay
    "fresh_fraction": UNIT, "buffer_capacity": at_least(1), "filter_on_write": one_of(True, False),
    # run
    "method": one_of(*METHODS), "policy": NON_EMPTY, "task": NON_EMPTY, "train_size": at_least(1),
    "eval_size": at_least(0), "reward": one_of(*REWARDS), "total_steps": at_least(0),
    "eval_every": at_least(0), "eval_samples": at_least(1), "eval_greedy": one_of(True, False),
    "eval_temperature": POSITIVE, "eval_top_p": interval(0, 1, open_lo=True), "target_pass_rate": UNIT,
    "checkpoint_every": at_least(0), "keep_checkpoints": at_least(1), "max_bad_steps": at_least(1),
    "seed": interval(0, 2**32 - 1), "device": matching(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", "auto, cpu, mps, cuda[:N] or xpu[:N]"), "threads": at_least(0),
    "run_root": NON_EMPTY,
    "run_name": matching(r"|(?!\.\.?$)[^/\\\x00]+", "empty (derived) or a folder name without '/'"),
}
"""Every field's range; a new field needs an entry here (tests/test_config_metrics.py checks that)."""
SYMBOLS = {"group_size": "G", "questions_per_step": "B", "reference_set_size": "K", "clip_eps": "epsilon",
           "kl_coef": "beta", "target_difficulty": "alpha", "selection_temperature": "tau",
           "steps_per_round": "mu", "fresh_fraction": "delta", "buffer_capacity": "C"}


def _validate(c: Config) -> None:
    flat = c.to_flat()
    for key, value in flat.items():
        ok = RANGES[key].ok(value)
        if not ok:
            name = f"{key} ({SYMBOLS[key]})" if key in SYMBOLS else key
            raise ConfigError(f"{name} must be {RANGES[key].text}, got {value!r}")
    later, history = flat["later_reference_set_size"], flat["predictor_mode"] == "history"
    if later not in (-1, 0) and later < 2 or later == 0 and not history:
        raise ConfigError(f"later_reference_set_size must be -1 (same as K), >= 2, or 0 in predictor_mode 'history' "
                          f"(where fresh groups keep labelling), got {later}")
    if flat["label_history"] < flat["min_labels_to_train"]:
        raise ConfigError(f"label_history must be >= min_labels_to_train ({flat['min_labels_to_train']}), "
                          f"got {flat['label_history']}: the adapter would never train")


def field_types() -> dict[str, str]:
    """Flat key -> 'int' | 'float' | 'bool' | 'str' for every Config field (and 'preset')."""
    out = {f.name: str(f.type) for f in dataclasses.fields(Config) if f.name not in _SECTIONS}
    for t in _SECTION_TYPES.values():
        out.update((f.name, str(f.type)) for f in dataclasses.fields(t))
    return {**out, "preset": "str"}


def config_diff(saved: Mapping[str, Any], cfg: Config, *, ignore: tuple[str, ...] = RUN_ONLY) -> list[str]:
    """Keys whose value in ``saved`` (a ``to_dict`` or ``to_flat`` mapping) differs from ``cfg``, as
    ``"key (saved X, now Y)"``; a key missing from ``saved`` (an older version) counts as its
    ``ADDED_LATER`` value, else as its default."""
    flat_saved = {**ADDED_LATER, **{k: v for k, v in saved.items() if k not in _SECTIONS}}
    for name in _SECTIONS:
        flat_saved.update(saved.get(name) or {})
    default, now = Config().to_flat(), cfg.to_flat()
    return [f"{k} (saved {flat_saved.get(k, default[k])!r}, now {v!r})" for k, v in now.items()
            if k not in ignore and flat_saved.get(k, default[k]) != v]


# ---- presets: each names the fields it sets ------------------------------------------------------
PRESET_VALUES: dict[str, dict[str, Any]] = {
    # The paper's setting (Qwen2.5-Math-1.5B, MATH/DeepScaleR): B=512, G=8, K=256, ν=2, δ=0.5, C=512.
    "paper": dict(
        policy="Qwen/Qwen2.5-Math-1.5B", task="hf:agentica-org/DeepScaleR-Preview-Dataset", train_size=10240,
        eval_size=500, total_steps=60, eval_every=10, eval_samples=1, checkpoint_every=5, group_size=8,
        questions_per_step=512, minibatch_questions=64, learning_rate=1e-6, max_new_tokens=3072, temperature=0.6,
        top_p=1.0, micro_batch_size=8, bf16_autocast=False, reference_set_size=256,
        embedder="Qwen/Qwen2.5-Math-1.5B-Instruct", adapter_hidden_size=896, min_labels_to_train=256,
        target_difficulty=0.5, selection_temperature=1e-3, steps_per_round=2, fresh_fraction=0.5,
        buffer_capacity=512, method="dots_rr", predictor_mode="paper"),
    # The main job's default on a 2-core CPU: the Config defaults themselves, so it names no field.
    "cpu_demo": {},
    # Seconds-per-step settings for tests: random-init policy, hash embedder, few tokens; DOTS + replay
    # with the paper's predictor, so that a tiny run goes through every part of the method.
    "tiny": dict(
        method="dots_rr", predictor_mode="paper", policy="tiny", task="arithmetic", train_size=48, eval_size=8, total_steps=4, eval_every=2, eval_samples=1,
        checkpoint_every=2, group_size=2, questions_per_step=4, minibatch_questions=2, learning_rate=1e-3,
        max_new_tokens=6, temperature=1.0, micro_batch_size=8, bf16_autocast=False, reference_set_size=2,
        embedder="hash", adapter_hidden_size=16, adapter_steps_per_round=2, min_labels_to_train=4,
        fresh_fraction=0.5, buffer_capacity=8, threads=1),
    # The miniature world (dotslab.mini): a ~1M-parameter policy pretrained here on carry-scratchpad
    # addition, where GRPO learns within minutes on 2 cores; DOTS + replay with the history predictor.
    "mini": dict(
        method="dots_rr", predictor_mode="history", policy="mini", task="addition:2-4", train_size=1024,
        eval_size=256, total_steps=200, eval_every=10, eval_samples=4, checkpoint_every=50, group_size=8,
        questions_per_step=16, minibatch_questions=16, learning_rate=1e-4, max_new_tokens=19, temperature=0.6,
        micro_batch_size=128, bf16_autocast=False, gradient_checkpointing=False, reference_set_size=8,
        buffer_capacity=16, fresh_fraction=0.5, steps_per_round=2),
}


def preset_values(name: str) -> dict[str, Any]:
    """The fields preset ``name`` sets; an unknown name raises ConfigError listing the presets."""
    if name not in PRESET_VALUES:
        raise ConfigError(f"preset must be one of {tuple(PRESET_VALUES)}, got {name!r}")
    return dict(PRESET_VALUES[name])


def paper() -> Config:
    """The paper's setting (Qwen2.5-Math-1.5B, MATH/DeepScaleR): DOTS+RR, B=512, G=8, K=256, ν=2, δ=0.5, C=512."""
    return Config.from_flat({"preset": "paper"})


def cpu_demo() -> Config:
    """The main job's default on a 2-core CPU: SmolLM2-135M, 8 questions x 4 completions, K=4."""
    return Config()


def tiny() -> Config:
    """Seconds-per-step settings for tests: random-init policy, hash embedder, few tokens, DOTS+RR (paper mode)."""
    return Config.from_flat({"preset": "tiny"})


def mini() -> Config:
    """The miniature world (dotslab.mini): DOTS+RR (history) on the ~1M-parameter policy and ``addition:2-4``."""
    return Config.from_flat({"preset": "mini"})


PRESETS = {"paper": paper, "cpu_demo": cpu_demo, "tiny": tiny, "mini": mini}

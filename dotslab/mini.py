"""The miniature world: a ~1M-parameter policy that dotslab pretrains itself, and its task family.

Not from the paper. The paper fine-tunes 1.5B-7B math models on GPUs, where plain GRPO learns
measurably within 60 steps; on a 2-core CPU, SmolLM2-135M barely learns in the steps a benchmark can
afford, so no comparison of methods has power there. The miniature gives a world with the paper's
shape at a size a laptop trains in minutes: a pool whose questions spread over difficulty under the
starting policy (some always solved, some never, many in between), completions of tens of tokens so
that generation dominates a step, and a baseline that learns in every seed.

  - Task family ``addition``: ``a+b=`` with both operands of ``n`` digits (the difficulty knob). The
    completion works from the least significant digit, writing per position the sum digit and the
    carry (``<digit><carry>``), positions separated by commas, then ``>`` and the answer:
    ``445+908=`` -> ``31,50,31>1353``. Reward 1 only when the text after the last ``>`` is the sum.
  - Policy ``mini``: a ``transformers`` Llama (so rollout, learner, prefix sharing, checkpoints and
    the TRL integration take it unchanged) over a 17-token character vocabulary, pretrained by
    next-token prediction on worked examples (:func:`pretrain`), deterministic from its
    :class:`MiniSpec` on one thread.

Decisions:
  1. The question space is split once, by a hash of the question text, into a pretraining part and an
     RL part (:func:`is_rl_question`): pretraining never sees a question that a training pool or a
     held-out set can hold, so held-out pass rates measure generalisation within the family.
  2. Pretraining weights the digit counts towards the easy end (``MiniSpec.digit_weights``) and stops
     early on purpose, so that the starting policy is sure of short sums, unsure of middle ones and
     mostly wrong on long ones, as the paper's policies are on their pools.
  3. The weights are built once into ``$DOTSLAB_CACHE/mini-<spec hash>/`` (``python -m dotslab.mini``
     builds and reports); the folder is a plain ``save_pretrained`` folder, so any HF tool opens it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .cache import cache_root
from .data import _operands, addition_questions, is_rl_question, max_new_tokens_for, worked_answer
from .rewards import SafeReward, get_reward_fn
from .rollout import HFGenerateEngine, measure_correct

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"
CHARS = "0123456789+=,>"
CHAT_TEMPLATE = "<bos>{{ messages[-1]['content'] }}"
"""The prompt is the question text after a BOS token: no roles, no instruction (the policy never saw any)."""


# ---- the policy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MiniSpec:
    """Everything that decides the miniature's weights; its hash names the cache folder."""
    seed: int = 0
    layers: int = 4
    hidden_size: int = 128
    heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 64
    steps: int = 850
    """Pretraining optimizer steps (AdamW, linear warm-up then constant). Chosen on a pilot (README of
    benchmarks, "Protocol of the mini benchmark"): at 850 the policy is unsure of 2- and 3-digit sums and
    mostly wrong on 4-digit ones; 100 steps later it is sure of most 2-digit sums."""
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    digit_weights: tuple[float, ...] = (0.15, 0.20, 0.25, 0.20, 0.12, 0.08)
    """Share of pretraining examples with 1, 2, ... digits per operand."""

    def short_hash(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:8]


DEFAULT_SPEC = MiniSpec()


def mini_tokenizer():
    """A character tokenizer over digits and ``+ = , >`` with PAD, EOS and BOS, and the prompt template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([PAD, EOS, BOS, *CHARS])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, eos_token=EOS, bos_token=BOS)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def init_model(spec: MiniSpec, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.layers,
                      num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                      intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_positions,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        return LlamaForCausalLM(cfg)


def _pretraining_batch(rng: random.Random, spec: MiniSpec, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids (B, L), labels (B, L)): right-padded worked examples, loss on completion tokens only."""
    digits = range(1, len(spec.digit_weights) + 1)
    rows = []
    while len(rows) < spec.batch_size:
        n = rng.choices(digits, weights=spec.digit_weights)[0]
        a, b = _operands(rng, n)
        prompt = f"{a}+{b}="
        if is_rl_question(prompt):
            continue
        p = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids
        c = tokenizer(worked_answer(a, b), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append((p, c))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p):len(p) + len(c)] = torch.tensor(c)
    return ids, labels


def pretrain(spec: MiniSpec, *, progress: Callable[[int, float], None] | None = None):
    """(model, tokenizer) after ``spec.steps`` steps of next-token training on worked examples.

    Deterministic for a spec on one thread (the caller sets the thread count); ``progress(step, loss)``
    is called every 50 steps.
    """
    tok = mini_tokenizer()
    model = init_model(spec, tok)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / spec.warmup_steps))
    rng = random.Random(spec.seed)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        for step in range(1, spec.steps + 1):
            ids, labels = _pretraining_batch(rng, spec, tok)
            loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if progress is not None and (step % 50 == 0 or step == spec.steps):
                progress(step, loss.item())
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def mini_path(root: Path, spec: MiniSpec | None = None, *, verbose: bool = True) -> Path:
    """The miniature's folder under ``root`` (the cache), pretraining it first (minutes) when it is not there;
    ``spec`` defaults to :data:`DEFAULT_SPEC`."""
    spec = DEFAULT_SPEC if spec is None else spec
    target = Path(root) / f"mini-{spec.short_hash()}"
    if (target / "model.safetensors").exists() and (target / "mini.json").exists():
        return target
    say = print if verbose else (lambda *a, **k: None)
    say(f"building the miniature policy (once; {spec.steps} pretraining steps) into {target}", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # decision 3: the same weights on every machine with this torch
    t0 = time.perf_counter()
    try:
        model, tok = pretrain(spec, progress=lambda s, loss: say(f"  step {s}/{spec.steps}  loss {loss:.3f}  "
                                                                    f"{time.perf_counter() - t0:.0f} s", flush=True))
    finally:
        torch.set_num_threads(threads)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".mini-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "mini.json").write_text(json.dumps({"spec": dataclasses.asdict(spec),
                                               "pretrain_seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def starting_spread(model, tokenizer, digits: Sequence[int], *, questions: int = 64, group_size: int = 8,
                    temperature: float = 0.6, seed: int = 0) -> list[dict[str, float]]:
    """Per digit count: mean pass rate and the shares of questions all right, all wrong and in between,
    from ``group_size`` samples of ``questions`` held-out-style questions each (the RL part of the space)."""
    engine = HFGenerateEngine(model, tokenizer, max_new_tokens=max_new_tokens_for(max(digits)), temperature=temperature)
    reward, rows = SafeReward(get_reward_fn("auto")), []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for d in digits:
            p = measure_correct(engine, tokenizer, list(addition_questions(questions, seed, (d,))), group_size,
                                reward).mean(axis=1)                                              # (questions,)
            rows.append({"digits": d, "pass_rate": float(p.mean()), "all_right": float((p == 1).mean()),
                         "all_wrong": float((p == 0).mean()), "in_between": float(((p > 0) & (p < 1)).mean())})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dotslab.mini``: build the miniature policy (if not cached) and print its starting spread."""
    import argparse

    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(prog="python -m dotslab.mini", description=main.__doc__)
    ap.add_argument("--digits", type=int, nargs="+", default=[2, 3, 4], help="digit counts to report (default 2 3 4)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    folder = mini_path(cache_root())
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    print(f"miniature policy: {folder} ({sum(p.numel() for p in model.parameters()):,} parameters, "
          f"ready in {time.perf_counter() - t0:.0f} s)")
    print("digits  pass rate  all right  all wrong  in between   (G = 8, T = 0.6, 64 questions each)")
    for r in starting_spread(model.eval(), tok, args.digits):
        print(f"{r['digits']:>6}  {r['pass_rate']:>9.2f}  {r['all_right']:>9.2f}  {r['all_wrong']:>9.2f}  "
              f"{r['in_between']:>10.2f}")


if __name__ == "__main__":
    main()

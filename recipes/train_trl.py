"""Train with DOTS + rollout replay on TRL's GRPOTrainer: the multi-GPU entry point.

Takes the same flat Config keys as the notebook (``-p key value`` or ``--key value``, parsed by the
key's type like ``dotslab train``; ``preset`` sets the fields it names, other keys win over it) plus
TRL-only GRPOConfig fields (``-t key value`` or ``--trl.key value``, parsed as plain literals:
``true``, ``3e-5``, ``[1,2]``; ``no`` stays a string). Every process must get the same arguments.

  # one process (CPU or one GPU)
  python recipes/train_trl.py -p preset tiny -p method dots_rr -p total_steps 4
  # paper scale: 8 GPUs, DeepSpeed ZeRO-2, vLLM colocated (see recipes/paper_dots_rr.sh)
  accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/train_trl.py \
      -p preset paper -p method dots_rr -t use_vllm true -t vllm_mode colocate
  # two CPU processes (gloo), e.g. to check the plans agree
  torchrun --nproc_per_node 2 recipes/train_trl.py -p preset tiny

Writes to <run_root>/<run_name>/trl/: TRL checkpoints (each with dotslab_state.pt), metrics.jsonl,
config.json, and plans.rank<r>.jsonl (the questions and replayed groups of every step, per process).
``--reward-fn module:function`` swaps in any ``(completion, question) -> float`` verifier;
``--resume`` continues the last checkpoint; ``--embed-only`` fills the predictor's embedding cache in
one process and exits (run it before a multi-GPU launch with a large encoder).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from dotslab.config import ConfigError
from dotslab.params import parse_value

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def parse(argv: list[str]) -> tuple[dict, dict, argparse.Namespace]:
    """Split argv into (Config keys, GRPOConfig overrides, script options)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("-t", "--trl", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--reward-fn", default=None, help="module:function verifier (default: the config's reward)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run folder")
    ap.add_argument("--embed-only", action="store_true", help="embed the question pool into the cache and exit")
    args, rest = ap.parse_known_args(argv)
    pairs, trl_pairs = [tuple(p) for p in args.parameter], [tuple(p) for p in args.trl]
    it = iter(rest)
    for token in it:
        if not token.startswith("--"):
            ap.error(f"unexpected argument {token!r}")
        key, _, value = token[2:].partition("=")
        value = value if value else next(it, None)
        if value is None:
            ap.error(f"{token} needs a value")
        target, key = (trl_pairs, key[4:]) if key.startswith("trl.") else (pairs, key)
        target.append((key.replace("-", "_"), value))
    try:  # Config keys by their type; TRL fields as plain literals (no Config key there)
        params = {k: parse_value(v, k) for k, v in pairs}
        trl_kw = {k: parse_value(v, kind="literal") for k, v in trl_pairs}
    except ConfigError as e:
        ap.error(str(e))
    return params, trl_kw, args


def embed_pool(cfg) -> int:
    """Compute and cache the pool's embeddings once, so the ranks of a launch only read them."""
    from dotslab.models import cache_root
    from dotslab.prepare import prepare_run

    if not cfg.uses_selection:
        print(f"train_trl: method {cfg.method!r} uses no embeddings")
        return 0
    emb = prepare_run(cfg, policy=False, to_device=True, embed_device=cfg.torch_device).embeddings
    print(f"train_trl: cached {emb.shape[0]} embeddings ({emb.shape[1]}-d) under {cache_root() / 'embeddings'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    params, trl_kw, opts = parse(sys.argv[1:] if argv is None else argv)
    from dotslab.config import Config, ConfigError
    try:
        cfg = Config.from_flat(params)
    except ConfigError as e:
        print(f"train_trl: bad parameter: {e}", file=sys.stderr)
        return 2
    if opts.embed_only:
        return embed_pool(cfg)
    from dotslab.integrations.trl import build_trainer

    reward_fn = None
    if opts.reward_fn:
        module, _, name = opts.reward_fn.partition(":")
        reward_fn = getattr(importlib.import_module(module), name)
    trainer = build_trainer(cfg, reward_fn=reward_fn, **trl_kw)
    out, rank = Path(trainer.args.output_dir), trainer.accelerator.process_index
    if trainer.accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    try:
        trainer.train(resume_from_checkpoint=True if opts.resume else None)
    finally:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"plans.rank{rank}.jsonl", "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in trainer.dots_plans)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # destroys the process group (gloo aborts at exit otherwise)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Part 4: one GRPO step of dotslab vs Hugging Face TRL's ``GRPOTrainer``, same model and batch.

Not from the paper: a sanity check that dotslab's step costs are in line with the reference
implementation people compare against. Both train the random-init tiny Llama of
:mod:`dotslab.models` (character tokenizer, same chat template) on the same arithmetic prompts, with
the same number of prompts, completions per prompt, completion length, temperature, lr, no KL,
one optimizer step per training step, fp32 on CPU and the synthetic parity reward.

Decisions:
  1. Each implementation runs in its own subprocess (``python -m benchmarks.peer --impl ...``) so
     peak memory does not mix. Reported: whole-process peak RSS (the kernel's ``VmHWM``, read before
     the reset below and at the end; not ``ru_maxrss``, which survives ``execve`` and so reports the
     parent's peak when the parent is bigger, as the benchmark runner holding SmolLM2 is), and the peak during
     the timed steps above the RSS reached after the warm-up (the kernel's peak mark is reset after
     warm-up), which is the memory one step needs on top of the loaded trainer.
  2. dotslab is timed by ``time/step`` of ``train`` with method ``grpo`` (the real loop, bookkeeping
     included); TRL by a callback from ``on_step_begin`` to ``on_step_end`` (generation included).
     The first ``warmup_steps`` steps are dropped, the median of the rest is reported.
  3. Both run on CPU (dotslab ``device cpu``, TRL ``use_cpu=True``), whatever the machine has.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LR = 1e-5
TEMPERATURE = 1.0


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status ('VmRSS': now, 'VmHWM': peak since exec or reset), in MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _hwm_mb() -> float:
    return _status_mb("VmHWM")


class StepMemory:
    """After the warm-up steps: note the steady RSS and reset the kernel's peak-RSS mark (VmHWM), so
    the peak read at the end covers the timed steps only (``/proc/self/clear_refs``, Linux >= 4.0)."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.steady_mb, self.reset_ok = warmup, 0, float("nan"), False
        self.warmup_peak_mb = 0.0

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.steady_mb = _rss_mb()
            self.warmup_peak_mb = _hwm_mb()   # the whole-process peak so far, before the reset
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.reset_ok = True
            except OSError:
                self.reset_ok = False

    def result(self) -> dict[str, Any]:
        hwm = _hwm_mb()
        peak = hwm if self.reset_ok else float("nan")
        return {"steady_rss_mb": self.steady_mb, "timed_peak_rss_mb": peak,
                "peak_rss_mb": max(self.warmup_peak_mb, hwm),
                "step_transient_mb": peak - self.steady_mb}


def _dotslab_config(a: argparse.Namespace, run_root: str):
    from dotslab.config import Config, tiny
    steps = a.warmup + a.steps
    return Config.from_flat({
        "method": "grpo", "policy": "tiny", "task": "arithmetic", "seed": a.seed, "train_size": 64, "eval_size": 0,
        "total_steps": steps, "eval_every": 0, "checkpoint_every": steps, "run_root": run_root, "run_name": "peer",
        "group_size": a.generations, "questions_per_step": a.prompts, "minibatch_questions": a.prompts,
        "micro_batch_size": a.prompts * a.generations, "max_new_tokens": a.max_new_tokens,
        "temperature": TEMPERATURE, "learning_rate": LR, "kl_coef": 0.0, "bf16_autocast": False,
        "device": "cpu"}, base=tiny())


def run_dotslab(a: argparse.Namespace) -> dict[str, Any]:
    from dotslab.rewards import parity_reward
    from dotslab.trainer import train

    base = _rss_mb()
    memory = StepMemory(a.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _dotslab_config(a, tmp)
        result = train(cfg, progress=False, reward_fn=parity_reward,
                       hooks=[lambda record: memory.step_done() if "time/step" in record else None])
    times = [r["time/step"] for r in result.records if r.get("time/step") is not None]
    return {"step_seconds": times, "rss_after_imports_mb": base, **memory.result()}


def run_trl(a: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dotslab.data import load_task, user_message
    from dotslab.models import tiny_policy, tiny_tokenizer
    from dotslab.rewards import parity_reward

    base = _rss_mb()
    memory = StepMemory(a.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _dotslab_config(a, tmp)
        train_set, _ = load_task(cfg)  # the same prompts dotslab trains on
        tok = tiny_tokenizer()
        tok.padding_side = "left"
        model = tiny_policy(tok, seed=a.seed)
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": user_message(q)}]}
                                  for q in train_set])

        def trl_parity_reward(completions, **kwargs):
            return [parity_reward(c[0]["content"] if isinstance(c, list) else c, None) for c in completions]

        times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                times.append(time.perf_counter() - self.t0)
                memory.step_done()

        args = GRPOConfig(
            output_dir=tmp, use_cpu=True, bf16=False, seed=a.seed, max_steps=a.warmup + a.steps,
            per_device_train_batch_size=a.prompts * a.generations, gradient_accumulation_steps=1,
            num_generations=a.generations, max_completion_length=a.max_new_tokens, temperature=TEMPERATURE,
            top_p=1.0, top_k=0, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, beta=0.0,
            num_iterations=1, report_to="none", save_strategy="no", logging_steps=10_000,
            dataloader_num_workers=0, disable_dropout=True)
        trainer = GRPOTrainer(model=model, reward_funcs=trl_parity_reward, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[Timer()])
        trainer.train()
    return {"step_seconds": times, "rss_after_imports_mb": base, **memory.result()}


def measure(impl: str, prompts: int, generations: int, max_new_tokens: int, warmup: int, steps: int,
            seed: int = 0, threads: int = 0, timeout: float = 1800) -> dict[str, Any]:
    """Run one implementation in a fresh interpreter; returns its JSON result (or an ``error``)."""
    cmd = [sys.executable, "-m", "benchmarks.peer", "--impl", impl, "--prompts", str(prompts),
           "--generations", str(generations), "--max-new-tokens", str(max_new_tokens), "--warmup", str(warmup),
           "--steps", str(steps), "--seed", str(seed), "--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"impl": impl, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}", "wall_seconds": wall}
    out = json.loads(lines[-1])
    out["wall_seconds"] = wall
    return out


def compare(peer: Any, seed: int = 0, threads: int = 0, log=print) -> dict[str, Any]:
    """Both implementations on the bench's peer sizes; TRL / dotslab ratios of time and memory."""
    import numpy as np

    results = {}
    for impl in ("dotslab", "trl"):
        r = measure(impl, peer.prompts, peer.generations, peer.max_new_tokens, peer.warmup_steps,
                    peer.timed_steps, seed, threads)
        timed = r.get("step_seconds", [])[peer.warmup_steps:]
        r["seconds_per_step"] = float(np.median(timed)) if timed else None
        if "peak_rss_mb" in r:
            r["peak_minus_imports_mb"] = r["peak_rss_mb"] - r["rss_after_imports_mb"]
        results[impl] = r
        log(f"  {impl:8s}: " + (f"error {r['error'][-300:]}" if "error" in r else
                                f"{r['seconds_per_step']:.3f} s/step, peak RSS {r['peak_rss_mb']:.0f} MB, "
                                f"a timed step peaks {r['step_transient_mb']:.1f} MB above the warm RSS"))
    d, t = results["dotslab"], results["trl"]
    ok = "error" not in d and "error" not in t and d.get("seconds_per_step") and t.get("seconds_per_step")
    return {"settings": {"policy": "tiny (random-init 2-layer Llama, hidden 32, char tokenizer)",
                         "prompts": peer.prompts, "generations": peer.generations,
                         "max_new_tokens": peer.max_new_tokens, "warmup_steps": peer.warmup_steps,
                         "timed_steps": peer.timed_steps, "temperature": TEMPERATURE, "learning_rate": LR,
                         "device": "cpu", "torch_threads": threads or "default"},
            "results": results,
            "trl_over_dotslab_time": t["seconds_per_step"] / d["seconds_per_step"] if ok else None,
            "trl_over_dotslab_peak_rss": t["peak_rss_mb"] / d["peak_rss_mb"] if ok else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one implementation's GRPO steps; prints one JSON line")
    ap.add_argument("--impl", choices=("dotslab", "trl"), required=True)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args(argv)
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers  # noqa: F401  both implementations import it; counted in the baseline

    torch.manual_seed(a.seed)
    out = run_dotslab(a) if a.impl == "dotslab" else run_trl(a)
    out.update({"impl": a.impl, "torch_threads": torch.get_num_threads()})
    if a.impl == "trl":
        import trl
        out["trl_version"] = trl.__version__
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

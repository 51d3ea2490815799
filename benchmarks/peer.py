"""Part 4: one GRPO step of dotslab vs Hugging Face TRL's ``GRPOTrainer``, and the compute floor of a step.

Not from the paper: are dotslab's step costs in line with the implementation people compare against,
and with what the machine's matrix multiply allows? Both train the same weights (``tiny``: the
random-init 2-layer Llama of :mod:`dotslab.models`, for tests; ``smollm2``: SmolLM2-135M-Instruct,
Q4_1 dequantized to fp32) on the same ``arithmetic_mix`` questions (:func:`dotslab.data.user_message`
as chat messages for TRL, rendered by dotslab itself; the prompt tokens are checked to be identical),
with the same B prompts × G completions, completion length cap, temperature, lr, no KL, one optimizer
step per training step, dtype (fp32: TRL ``bf16=False``, dotslab ``bf16_autocast=False``; ``--dtype
bf16`` turns on bf16 autocast in both) and a synthetic reward that alternates within each group (decision 4).

**The floor** (:mod:`benchmarks.floor`): ``2P·generated + 2P·(prompt + completion, the μ pass) +
6P·(prompt + completion, trained)`` FLOPs over all B·G rows of the step (SmolLM2: P = 134,515,008),
over the ``torch.mm`` rate measured in the same process on the policy's MLP shapes for the step's
tokens. A step can run *below* it: dotslab computes each group's prompt once (and the tokens every
prompt of a pass starts with once), runs the LM head only where it predicts a completion token and
skips rows of groups without reward spread, and neither implementation runs a separate μ pass here
(a fresh row's μ is the update's own first forward in both). Reported as measured.

Decisions:
  1. Each implementation runs in its own subprocess (``python -m benchmarks.peer --impl ...``) so
     peak memory does not mix. Reported: whole-process peak RSS (the kernel's ``VmHWM``, read before
     the reset below and at the end; not ``ru_maxrss``, which survives ``execve`` and so reports the
     parent's peak when the parent is bigger), and the peak during the timed steps above the RSS
     reached after the warm-up (the kernel's peak mark is reset after warm-up).
  2. dotslab is timed by ``time/step`` of ``train`` with method ``grpo`` (the real loop, bookkeeping
     included); TRL by a callback from ``on_step_begin`` to ``on_step_end`` (generation included).
     The first ``warmup_steps`` steps are dropped, the median of the rest is reported. Both run on CPU
     with the same torch thread count (``--threads``, else torch's default, passed to dotslab).
  3. Tokens per step. dotslab: completion tokens = ``train/completion_tokens`` (a mean) × rows; rows
     and questions from the reward calls, prompt tokens from dotslab's rendering. TRL: completion
     tokens from the ``completion_ids`` its reward function receives, prompt + completion from its
     ``state.num_input_tokens_seen``, checked per step against the rendered prompts.
  4. The reward alternates 0, 1, 0, 1, ... within each group, whatever the text, so every group has
     reward spread and both implementations train every row (dotslab skips rows of groups without
     spread; a content-based reward would let it skip work TRL does, which is an advantage of dotslab
     but not the comparison this part makes). ``rows_trained`` per step shows it.
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

from benchmarks.floor import matmul_rate, policy_size, step_floor_flops

REPO = Path(__file__).resolve().parent.parent
LR = 1e-5
TEMPERATURE = 1.0
TRAIN_SIZE = 64
POLICIES = {"tiny": "random-init 2-layer Llama (hidden 32, character tokenizer)",
            "smollm2": "SmolLM2-135M-Instruct (Q4_1, dequantized to fp32)"}
DTYPES = ("fp32", "bf16")
RESULT_PREFIX = "PEER-RESULT "


def add_floor(out: dict[str, Any], policy: str, dtype: str) -> None:
    """Add P, the measured matmul rate and each step's floor (FLOPs, seconds) to a child's result."""
    import numpy as np

    size = policy_size(policy)
    tokens = int(np.median([s["prompt_completion"] for s in out["tokens"]])) if out["tokens"] else 1
    m = max(1, min(tokens, 8192))   # the MLP of a pass over the step's tokens
    shapes = [(m, size["hidden"], size["intermediate"]), (m, size["intermediate"], size["hidden"])]
    rates = {d: matmul_rate(shapes, d, repeats=5 if d == "fp32" else 3) for d in ("fp32", dtype)}
    rate = rates[dtype]["gflops"] * 1e9
    flops = [step_floor_flops(size["params"], s["generated"], s["prompt_completion"]) for s in out["tokens"]]
    out.update({"params": size["params"], "policy_size": size, "matmul": rates, "floor_gflops": rate / 1e9,
                "floor_flops": flops, "floor_seconds": [f / rate for f in flops]})


# ---- memory ----------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status ('VmRSS': now, 'VmHWM': peak since exec or reset), in MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class StepMemory:
    """After the warm-up steps: note the steady RSS and reset the kernel's peak-RSS mark (VmHWM), so
    the peak read at the end covers the timed steps only (``/proc/self/clear_refs``, Linux >= 4.0)."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.steady_mb, self.reset_ok = warmup, 0, float("nan"), False
        self.warmup_peak_mb = 0.0

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.steady_mb = _status_mb("VmRSS")
            self.warmup_peak_mb = _status_mb("VmHWM")   # the whole-process peak so far, before the reset
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.reset_ok = True
            except OSError:
                self.reset_ok = False

    def result(self) -> dict[str, Any]:
        hwm = _status_mb("VmHWM")
        peak = hwm if self.reset_ok else float("nan")
        return {"steady_rss_mb": self.steady_mb, "timed_peak_rss_mb": peak,
                "peak_rss_mb": max(self.warmup_peak_mb, hwm), "step_transient_mb": peak - self.steady_mb}


# ---- the two implementations -----------------------------------------------------------------------
def _dotslab_config(a: argparse.Namespace, run_root: str):
    from dotslab.config import Config, cpu_demo, tiny
    return Config.from_flat({
        "method": "grpo", "policy": a.policy, "task": a.task, "seed": a.seed, "train_size": TRAIN_SIZE,
        "eval_size": 0, "total_steps": a.warmup + a.steps, "eval_every": 0, "checkpoint_every": 0,
        "run_root": run_root, "run_name": "peer", "group_size": a.generations, "questions_per_step": a.prompts,
        "minibatch_questions": a.prompts, "micro_batch_size": a.prompts * a.generations,
        "max_new_tokens": a.max_new_tokens, "temperature": TEMPERATURE, "top_p": 1.0, "learning_rate": LR,
        "weight_decay": 0.0, "kl_coef": 0.0, "clip_eps": 0.2, "max_grad_norm": 1.0, "advantage": "std",
        "aggregation": "token", "rollout_engine": "hf", "bf16_autocast": a.dtype == "bf16", "device": "cpu",
        "threads": a.threads}, base=tiny() if a.policy == "tiny" else cpu_demo())


def _prompt_ids(tok, questions) -> list[list[int]]:
    """Each question's prompt tokens as dotslab's rollout makes them (rendered text, no special tokens added)."""
    from dotslab.data import render_prompt
    return [tok(render_prompt(q, tok), add_special_tokens=False)["input_ids"] for q in questions]


def run_dotslab(a: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from dotslab.tasks import load_task
    from dotslab.models import smollm2_path, tiny_tokenizer
    from dotslab.trainer import train

    base = _status_mb("VmRSS")
    memory = StepMemory(a.warmup)
    calls: list[tuple[str, float]] = []   # (question id, reward) of the step so far, in scoring order
    tokens: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _dotslab_config(a, tmp)
        train_set, _ = load_task(cfg)
        tok = tiny_tokenizer() if a.policy == "tiny" else AutoTokenizer.from_pretrained(smollm2_path())
        prompt_len = {q.id: len(ids) for q, ids in zip(train_set, _prompt_ids(tok, train_set))}

        def reward(text, question):  # alternating within each group (module docstring, decision 4)
            r = float(sum(qid == question.id for qid, _ in calls) % 2)
            calls.append((question.id, r))
            return r

        def step_done(record):
            if "time/step" not in record:
                return
            rows, g = len(calls), a.generations
            generated = round(record["train/completion_tokens"] * rows)
            groups = [calls[k:k + g] for k in range(0, rows, g)]   # rollout scores a question's G rows together
            tokens.append({"rows": rows, "generated": generated,
                           "prompt_completion": sum(prompt_len[q] for q, _ in calls) + generated,
                           "rows_trained": sum(len(grp) for grp in groups if len({r for _, r in grp}) > 1),
                           "frac_zero_std": record["rollout/frac_zero_std"]})
            calls.clear()
            memory.step_done()

        result = train(cfg, progress=False, reward_fn=reward, hooks=[step_done])
    times = [r["time/step"] for r in result.records if r.get("time/step") is not None]
    return {"step_seconds": times, "rss_after_imports_mb": base, **memory.result(), "tokens": tokens}


def run_trl(a: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from dotslab.data import user_message
    from dotslab.tasks import load_task
    from dotslab.models import load_policy

    base = _status_mb("VmRSS")
    memory = StepMemory(a.warmup)
    times: list[float] = []
    tokens: list[dict[str, Any]] = []
    logged: list[dict[str, float]] = []
    step_calls: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_set, _ = load_task(_dotslab_config(a, tmp))   # the same questions dotslab trains on
        model, tok = load_policy(a.policy, seed=a.seed)
        messages = [[{"role": "user", "content": user_message(q)}] for q in train_set]
        # the call TRL 1.16 makes for conversational prompts (GRPOTrainer._tokenize_prompts)
        trl_ids = [tok.apply_chat_template(conversation=[m], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"][0] for m in messages]
        ours = _prompt_ids(tok, train_set)
        data = Dataset.from_list([{"prompt": m, "question_index": i} for i, m in enumerate(messages)])

        def trl_alternating_reward(completions, completion_ids, question_index, **kwargs):
            rewards = [float(k % a.generations % 2) for k in range(len(completions))]  # groups are contiguous
            step_calls.append({"completion": sum(len(c) for c in completion_ids), "rows": len(completion_ids),
                               "prompt": sum(len(ours[i]) for i in question_index)})
            return rewards

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self.t0, self.seen = time.perf_counter(), state.num_input_tokens_seen

            def on_step_end(self, args, state, control, **kwargs):
                times.append(time.perf_counter() - self.t0)
                calls = step_calls[:]
                step_calls.clear()
                seen = state.num_input_tokens_seen - self.seen     # TRL's own prompt + completion count
                ours_pc = sum(c["prompt"] + c["completion"] for c in calls)
                rows = sum(c["rows"] for c in calls)
                tokens.append({"rows": rows, "generated": sum(c["completion"] for c in calls),
                               "prompt_completion": seen, "rows_trained": rows,
                               "prompt_tokens_match_rendered": seen == ours_pc})
                memory.step_done()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "completions/mean_length" in logs:
                    logged.append({k: logs[k] for k in ("completions/mean_length", "frac_reward_zero_std") if k in logs})

        args = GRPOConfig(
            output_dir=tmp, use_cpu=True, bf16=a.dtype == "bf16", seed=a.seed, max_steps=a.warmup + a.steps,
            per_device_train_batch_size=a.prompts * a.generations, gradient_accumulation_steps=1,
            num_generations=a.generations, max_completion_length=a.max_new_tokens, temperature=TEMPERATURE,
            top_p=1.0, top_k=0, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, beta=0.0,
            epsilon=0.2, max_grad_norm=1.0, weight_decay=0.0, scale_rewards="group", loss_type="dapo",
            num_iterations=1, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
            include_num_input_tokens_seen="no", dataloader_num_workers=0, disable_dropout=True)
        trainer = GRPOTrainer(model=model, reward_funcs=trl_alternating_reward, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[Timer()])
        trainer.train()
    import trl
    return {"step_seconds": times, "rss_after_imports_mb": base, **memory.result(), "tokens": tokens,
            "logged": logged, "prompt_tokens_identical": [list(x) for x in trl_ids] == [list(x) for x in ours],
            "trl_version": trl.__version__}


# ---- both, each in its own process -----------------------------------------------------------------
def measure(impl: str, prompts: int, generations: int, max_new_tokens: int, warmup: int, steps: int,
            seed: int = 0, threads: int = 0, policy: str = "tiny", dtype: str = "fp32", task: str = "arithmetic_mix",
            timeout: float = 3600) -> dict[str, Any]:
    """Run one implementation in a fresh interpreter; returns its JSON result (or an ``error``)."""
    cmd = [sys.executable, "-m", "benchmarks.peer", "--impl", impl, "--prompts", str(prompts),
           "--generations", str(generations), "--max-new-tokens", str(max_new_tokens), "--warmup", str(warmup),
           "--steps", str(steps), "--seed", str(seed), "--threads", str(threads), "--policy", policy,
           "--dtype", dtype, "--task", task]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "error": f"no result within {timeout:.0f} s", "wall_seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [l[len(RESULT_PREFIX):] for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return {"impl": impl, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}", "wall_seconds": wall}
    out = json.loads(lines[-1])
    out["wall_seconds"] = wall
    return out


def summarise(r: dict[str, Any], warmup: int) -> None:
    """Medians over the timed steps: s/step, floor s/step, their ratio, tokens per step (in place)."""
    import numpy as np

    def median(values):
        timed = values[warmup:]
        return float(np.median(timed)) if timed else None

    r["seconds_per_step"] = median(r.get("step_seconds", []))
    if "peak_rss_mb" in r:
        r["peak_minus_imports_mb"] = r["peak_rss_mb"] - r["rss_after_imports_mb"]
    if "floor_seconds" in r:
        r["floor_seconds_per_step"] = median(r["floor_seconds"])
        r["multiple_of_floor"] = (r["seconds_per_step"] / r["floor_seconds_per_step"]
                                  if r["seconds_per_step"] and r["floor_seconds_per_step"] else None)
        r["tokens_per_step"] = {k: median([s[k] for s in r["tokens"]])
                                for k in ("rows", "generated", "prompt_completion", "rows_trained")}


def compare(peer: Any, seed: int = 0, threads: int = 0, log=print) -> dict[str, Any]:
    """Both implementations with the bench's peer settings; floors, TRL / dotslab ratios of time and memory."""
    results = {}
    for impl in ("dotslab", "trl"):
        r = measure(impl, peer.prompts, peer.generations, peer.max_new_tokens, peer.warmup_steps,
                    peer.timed_steps, seed, threads, peer.policy, peer.dtype, peer.task)
        summarise(r, peer.warmup_steps)
        results[impl] = r
        log(f"  {impl:8s}: " + (f"error {r['error'][-300:]}" if "error" in r else
                                f"{r['seconds_per_step']:.3f} s/step = {r['multiple_of_floor']:.1f}x the floor "
                                f"({r['floor_seconds_per_step']:.3f} s at {r['floor_gflops']:.1f} GFLOP/s), "
                                f"peak RSS {r['peak_rss_mb']:.0f} MB, a timed step peaks "
                                f"{r['step_transient_mb']:.1f} MB above the warm RSS"))
    d, t = results["dotslab"], results["trl"]
    ok = "error" not in d and "error" not in t and d.get("seconds_per_step") and t.get("seconds_per_step")
    return {"settings": {"policy": POLICIES.get(peer.policy, peer.policy), "policy_key": peer.policy,
                         "params": d.get("params", t.get("params")), "dtype": peer.dtype, "task": peer.task,
                         "prompts": peer.prompts, "generations": peer.generations,
                         "max_new_tokens": peer.max_new_tokens, "warmup_steps": peer.warmup_steps,
                         "timed_steps": peer.timed_steps, "temperature": TEMPERATURE, "learning_rate": LR,
                         "kl_coef": 0.0, "optimizer_steps_per_step": 1, "reward": "alternating 0/1 within each group (synthetic)",
                         "device": "cpu", "torch_threads": threads or d.get("torch_threads") or t.get("torch_threads")},
            "results": results,
            "trl_over_dotslab_time": t["seconds_per_step"] / d["seconds_per_step"] if ok else None,
            "trl_over_dotslab_peak_rss": t["peak_rss_mb"] / d["peak_rss_mb"] if ok else None}


# ---- rendering (called by benchmarks/report.py) ----------------------------------------------------
def _fmt(value, spec: str) -> str:
    if value is None or value != value:
        return "—"
    return (f"{value:.2g}" if value < 0.1 else f"{value:.2f}") if spec == "seconds" else spec.format(value)


def peer_markdown(part: dict) -> str:
    """The peer part as markdown: a heading line, one table row per implementation, the floor and the ratio."""
    st, results = part["settings"], part["results"]
    trl_version = results.get("trl", {}).get("trl_version", "")
    lines = [f"**4. One GRPO step, dotslab vs TRL {trl_version} GRPOTrainer** ({st['policy']}, {st['dtype']}; "
             f"{st['prompts']} prompts × {st['generations']} completions × ≤ {st['max_new_tokens']} new tokens, "
             f"T = {st['temperature']}, lr {st['learning_rate']:g}, no KL, one optimizer step, {st['reward']} reward, "
             f"{st['task']}; {st['device']}, torch threads: {st['torch_threads']}; median of {st['timed_steps']} "
             f"steps after {st['warmup_steps']} warm-up; each in its own process).", "",
             "| implementation | s / step | floor s / step | × floor | peak RSS (MB) | generated tokens / step | "
             "prompt + completion tokens / step | rows trained / step | matmul GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for impl, r in results.items():
        if "error" in r:
            lines.append(f"| {impl} | error: {r['error'][-120:]} |" + " — |" * 7)
            continue
        tok = r.get("tokens_per_step") or {}
        lines.append(f"| {impl} | {_fmt(r.get('seconds_per_step'), 'seconds')} | "
                     f"{_fmt(r.get('floor_seconds_per_step'), 'seconds')} | {_fmt(r.get('multiple_of_floor'), '{:.1f}×')} | "
                     f"{_fmt(r.get('peak_rss_mb'), '{:.0f}')} | {_fmt(tok.get('generated'), '{:.0f}')} | "
                     f"{_fmt(tok.get('prompt_completion'), '{:.0f}')} | {_fmt(tok.get('rows_trained'), '{:.0f}')} of "
                     f"{_fmt(tok.get('rows'), '{:.0f}')} | {_fmt(r.get('floor_gflops'), '{:.1f}')} |")
    params = st.get("params")
    lines += ["", f"Floor: FLOPs = 2P·generated + 2P·(prompt + completion, μ pass) + 6P·(prompt + completion, "
                  f"trained) over all rows, P = {_fmt(params, '{:,}')} parameters (tied embedding once), divided by "
                  f"the {st['dtype']} `torch.mm` rate on the policy's MLP shapes, measured in the same process. "
                  "dotslab computes each group's prompt once and skips rows of groups without reward spread, and "
                  "neither runs a separate μ pass, so a step can run below this floor.",
              f"TRL / dotslab time per step: {_fmt(part.get('trl_over_dotslab_time'), '{:.2f}')}; "
              f"peak RSS: {_fmt(part.get('trl_over_dotslab_peak_rss'), '{:.2f}')}."]
    return "\n".join(lines) + "\n"


def plot_peer(ax, part: dict) -> None:
    """Bars of s/step per implementation on ``ax``, each with its floor drawn as a black line across it."""
    impls = [i for i, r in part["results"].items() if "error" not in r and r.get("seconds_per_step")]
    if not impls:
        ax.set_title("peer: no result")
        return
    res = [part["results"][i] for i in impls]
    xs = list(range(len(impls)))
    ax.bar(xs, [r["seconds_per_step"] for r in res], 0.6, color="tab:red", label="s / step")
    floors = [r.get("floor_seconds_per_step") for r in res]
    fx = [x for x, f in zip(xs, floors) if f]
    ax.hlines([f for f in floors if f], [x - 0.3 for x in fx], [x + 0.3 for x in fx], colors="black",
              linewidth=2, label="floor (FLOPs / matmul rate)")
    for x, r in zip(xs, res):
        ax.annotate(f"{_fmt(r.get('multiple_of_floor'), '{:.1f}× floor')}\n{r['peak_rss_mb']:.0f} MB",
                    (x, r["seconds_per_step"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, impls)
    ax.set_ylabel("seconds per GRPO step")
    ax.set_ylim(0, 1.3 * max(r["seconds_per_step"] for r in res))
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"peer: one GRPO step, {part['settings'].get('policy_key', part['settings']['policy'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one implementation's GRPO steps; prints one result line")
    ap.add_argument("--impl", choices=("dotslab", "trl"), required=True)
    ap.add_argument("--policy", choices=tuple(POLICIES), default="tiny")
    ap.add_argument("--dtype", choices=DTYPES, default="fp32", help="bf16: bf16 autocast in both implementations")
    ap.add_argument("--task", default="arithmetic_mix", help="a dotslab task (its training questions are the prompts)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args(argv)
    if min(a.prompts, a.steps) < 1 or a.generations < 2 or a.max_new_tokens < 1 or a.warmup < 0:
        ap.error("need --prompts, --steps, --max-new-tokens >= 1, --generations >= 2 and --warmup >= 0")
    import torch
    a.threads = a.threads or torch.get_num_threads()   # both implementations get the same count
    torch.set_num_threads(a.threads)
    import transformers  # noqa: F401  both implementations import it; counted in the baseline

    torch.manual_seed(a.seed)
    out = run_dotslab(a) if a.impl == "dotslab" else run_trl(a)
    add_floor(out, a.policy, a.dtype)
    out.update({"impl": a.impl, "torch_threads": torch.get_num_threads(), "policy": a.policy, "dtype": a.dtype})
    print(RESULT_PREFIX + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

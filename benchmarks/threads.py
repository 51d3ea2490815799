"""How many torch threads to use: sampling time per ``Config.threads`` setting, on a quiet and a loaded machine.

    .venv/bin/python -m benchmarks.threads [--repeats 3] [--out benchmarks/results/threads-latest.json]

What it times: one step's sampling with SmolLM2-135M (8 prompts × 4 completions × 24 new tokens,
T = 0.6, bf16 autocast, the trainer's engine), the median of ``--repeats`` calls after one warm-up, for
``threads`` = 1, 2 and 0 (0: :func:`dotslab.trainer.choose_threads` picks at start). "Loaded" runs one
busy-looping Python process beside it, standing in for anything else on the machine (a second kernel,
a test run). Run it alone; the README's "Threads" paragraph reads its output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per setting (median; default %(default)s)")
    ap.add_argument("--out", default="benchmarks/results/threads-latest.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from dotslab.config import Config
    from dotslab.data import render_prompt
    from dotslab.tasks import load_task
    from dotslab.models import load_policy
    from dotslab.rollout import HFGenerateEngine
    from dotslab.trainer import choose_threads

    model, tok = load_policy("smollm2")
    pool, _ = load_task(Config())
    prompts = [render_prompt(q, tok) for q in list(pool)[:8]]
    engine = HFGenerateEngine(model, tok, max_new_tokens=24, temperature=0.6, autocast=True)

    def timed() -> float:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        engine.sample(prompts, 4)
        return time.perf_counter() - t0

    rows = []
    for load in ("quiet", "loaded"):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
        try:
            time.sleep(2)
            for setting in (1, 2, 0):
                chosen = choose_threads(setting)
                timed()  # warm-up
                secs = sorted(timed() for _ in range(args.repeats))[args.repeats // 2]
                rows.append({"machine": load, "setting": setting, "threads": chosen, "seconds": round(secs, 3)})
                print(f"{load:6s} threads={setting} (uses {chosen}): {secs:.2f} s", flush=True)
        finally:
            if hog:
                hog.kill()
    result = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "what": "seconds to sample 8 prompts x 4 completions x 24 tokens, SmolLM2-135M",
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

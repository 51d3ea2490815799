"""README's main-job table, made by running the main job: ``dotslab train`` with GRPO (the default) and DOTS+RR.

    .venv/bin/python -m benchmarks.main_job [--run-root /tmp/main-job] [--check README.md]

Runs the real command twice (``dotslab train`` and ``dotslab train -p method dots_rr``, each in its own
process, from the repository's notebook) and prints the table README shows under "What the main job did
here", built only from the two runs' ``metrics.jsonl``. ``--check`` compares it with the table in the
given README and exits 1 when a row differs, so a change that moves a figure cannot leave README stale
(``dotslab`` runs are deterministic on one machine and thread count; timings are printed but not checked).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
METHODS = ("grpo", "dots_rr")
CHECKED_ROWS = ("held-out pass rate", "completion length", "generations", "steps with", "largest gradient norm")
"""Rows that must agree (the rest are timings)."""


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def table_rows(runs: dict[str, Sequence[dict[str, Any]]]) -> list[str]:
    """The README table, one markdown row per figure, from each method's records."""
    def per(fn):
        return " | ".join(fn([r for r in runs[m]], m) for m in METHODS)

    def evals(recs):
        return [r for r in recs if r.get("eval/pass_rate") is not None]

    def steps(recs):
        return [r for r in recs if r.get("step", 0) > 0 and "time/step" in r]

    first = evals(runs[METHODS[0]])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    n_steps = len(steps(runs[METHODS[0]]))
    rows = [
        ("held-out pass rate ± SE (96 questions × 4 samples, T 0.6, top-p 0.95), steps "
         + " / ".join(str(r["step"]) for r in first),
         per(lambda rs, m: " / ".join(f"{r['eval/pass_rate']:.3f}" for r in evals(rs))
             + f" (± {mean([r['eval/pass_rate_se'] for r in evals(rs)]):.3f})")),
        (f"completion length (tokens), step 1 → step {n_steps}",
         per(lambda rs, m: f"{steps(rs)[0]['train/completion_tokens']:.1f} → {steps(rs)[-1]['train/completion_tokens']:.1f}")),
        ("generations, reference rollouts included", per(lambda rs, m: f"{steps(rs)[-1]['rollout/total_generations']}")),
        ("training time (evaluation, model load and checkpoints excluded)",
         per(lambda rs, m: _minutes(steps(rs)[-1]["time/elapsed"]))),
        (f"step time, mean of {n_steps} steps (s)",
         per(lambda rs, m: f"{mean([r['time/step'] for r in steps(rs)]):.1f}: generation "
                           f"{mean([r.get('time/generation', 0) for r in steps(rs)]):.1f}"
             + (f", reference {mean([r.get('time/reference', 0) for r in steps(rs)]):.1f}" if m != "grpo" else "")
             + f", update {mean([r.get('time/update', 0) for r in steps(rs)]):.1f}")),
        ("steps with ≥ 75% of fresh groups without reward spread",
         per(lambda rs, m: f"{sum(r['rollout/frac_zero_std'] >= 0.75 for r in steps(rs))} of {len(steps(rs))}")),
        ("largest gradient norm (before clipping to 1) / largest mean c of replayed tokens",
         per(lambda rs, m: f"{max(r['train/grad_norm'] for r in steps(rs)):.1f} / "
             + (f"{max(r['replay/mean_c'] for r in steps(rs) if 'replay/mean_c' in r):.2f}"
                if any("replay/mean_c" in r for r in steps(rs)) else "—"))),
    ]
    return ["| | `grpo` (default) | `dots_rr` |", "| --- | --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]


def run_main_job(run_root: Path) -> dict[str, list[dict[str, Any]]]:
    """Run ``dotslab train`` once per method into ``run_root``; each method's records."""
    runs = {}
    for method in METHODS:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "dotslab", "train", "-p", "run_root", str(run_root), "-p", "run_name", method,
               "--notebook", str(REPO / "notebooks" / "10_train.ipynb")] + (["-p", "method", method] if method != "grpo" else [])
        subprocess.run(cmd, check=True, cwd=REPO)
        print(f"{method}: {time.perf_counter() - t0:.0f} s wall", flush=True)
        runs[method] = [json.loads(line) for line in (run_root / method / "metrics.jsonl").read_text().splitlines()]
    return runs


def readme_rows(readme: str) -> list[str]:
    lines = readme.splitlines()
    start = lines.index("| | `grpo` (default) | `dots_rr` |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.main_job", description=__doc__.splitlines()[0])
    ap.add_argument("--run-root", default="/tmp/dotslab-main-job", help="where the two runs go (default: %(default)s)")
    ap.add_argument("--check", default=None, metavar="README", help="compare with this README's table")
    args = ap.parse_args(argv)
    root = Path(args.run_root)
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty: choose an empty --run-root")
    rows = table_rows(run_main_job(root))
    print("\n".join(rows))
    if args.check:
        have = readme_rows(Path(args.check).read_text(encoding="utf-8"))
        bad = [(a, b) for a, b in zip(rows, have) if a.split(" | ")[0].startswith(tuple(f"| {k}" for k in CHECKED_ROWS))
               and a != b] + ([("rows", "count")] if len(rows) != len(have) else [])
        for a, b in bad:
            print(f"README differs:\n  run:    {a}\n  README: {b}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

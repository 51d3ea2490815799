"""Reference cost after round 0: DOTS+RR (history) with no references after round 0, or with reused references.

    .venv/bin/python -m benchmarks.reference_cost --baseline benchmarks/results/runs/cpu-<timestamp>
                                                  [--seed 0] [--out benchmarks/results/reference-cost-latest.json]

The protocol is benchmarks/README.md, "Reference cost after round 0". Trains the `cpu` configuration's
``dots_rr`` arm in two one-key variants (``k0``: ``later_reference_set_size=0``; ``reuse``:
``reuse_reference_rollouts=true``) and reads the ``dots_rr`` and ``grpo`` runs of the same seed back from
the baseline runs folder (they must have finished there with the same configuration). Prints a
Markdown table and writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

VARIANTS = {"k0": {"later_reference_set_size": 0}, "reuse": {"reuse_reference_rollouts": True}}


def summary(records: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """The protocol's figures of one run's records (from :func:`dotslab.report.run_figures`)."""
    from dotslab.report import run_figures

    f = run_figures(records, target)
    return {"generations_per_step": f["generations_per_step"], "seconds_per_step": f["seconds_per_step"],
            "spread_share": f["effective_frac"], "final_pass_rate": f["final_pass_rate"],
            "target_step": None if np.isnan(f["step"]) else int(f["step"]),
            "target_seconds": None if np.isnan(f["seconds"]) else round(f["seconds"], 1)}


def markdown(rows: dict[str, dict[str, Any]], target: float) -> str:
    lines = [f"| run | generations / step | s / step | groups with reward spread | final pass rate | "
             f"step reaching {target:.3f} | seconds to it |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['generations_per_step']:.1f} | {r['seconds_per_step']:.2f} | "
                     f"{r['spread_share']:.2f} | {r['final_pass_rate']:.3f} | "
                     f"{r['target_step'] if r['target_step'] is not None else 'not reached'} | "
                     f"{r['target_seconds'] if r['target_seconds'] is not None else '—'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reference_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="runs folder of a finished `cpu` benchmark")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/reference-cost-latest.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import dataclasses

    import torch

    from .configs import cpu
    from .tasks import write_mix
    from .timetotarget import finished_records, run_methods

    bench = cpu()
    torch.set_num_threads(bench.torch_threads)
    baseline = Path(args.baseline).resolve()
    task = str(write_mix(Path("benchmarks/results/tasks").resolve() / f"{bench.name}-mix-{bench.task_mix_size}.jsonl",
                         bench.task_mix_size, 0))
    records: dict[str, list] = {}
    for name in ("grpo", "dots_rr"):
        cfg = bench.run_config(bench.arm(name), args.seed, str(baseline), task)
        found = finished_records(baseline / cfg.resolved_run_name, cfg)
        if found is None:
            raise SystemExit(f"{baseline / cfg.resolved_run_name} holds no finished run with the cpu config "
                             f"for {name} seed {args.seed}")
        records[name] = found
    base_arm = bench.arm("dots_rr")
    for variant, settings in VARIANTS.items():
        arm = dataclasses.replace(base_arm, name=f"dots_rr_{variant}",
                                  settings=tuple(sorted({**dict(base_arm.settings), **settings}.items())))
        recs, _ = run_methods(bench, [arm], [args.seed], Path("benchmarks/results/runs").resolve()
                              / f"reference-cost-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}", task, log=print)
        records[arm.name] = recs[arm.name][args.seed]
    from dotslab.report import final_pass_rate

    target = final_pass_rate(records["grpo"])
    rows = {name: summary(recs, target) for name, recs in records.items()}
    md = markdown(rows, target)
    print(md)
    out = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "seed": args.seed,
           "baseline": str(baseline), "variants": VARIANTS, "target": target, "rows": rows, "markdown": md}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark entry point: GRPO and DOTS+RR (history and paper mode; optionally DOTS, RR) side by side.

    .venv/bin/python -m benchmarks.run --config cpu [--seeds 0 1 2] [--out benchmarks/results]
                                       [--only timetotarget,predictor,overhead,peer] [--readme]
                                       [--resume benchmarks/results/runs/<config>-<timestamp>]

Parts (Sun et al., arXiv 2506.05316, §5 and Table 1-2; docs/method.md §7):
  1. timetotarget: every arm x seed trains the same steps; seconds, generations and steps to reach
     GRPO's final held-out pass rate, ratio to GRPO per seed, median and bootstrap 95% CI over seeds.
  2. predictor: Pearson / Spearman / MAE of predicted vs measured difficulty on held-out probes, per
     phase (initial policy, after GRPO), embedder, K and mode (paper raw / online, history).
  3. overhead: per-step time split; prediction + selection + replay share of a DOTS+RR step (< 3%?).
  4. peer: one GRPO step of dotslab vs TRL GRPOTrainer, same tiny model and batch, own processes.

Writes ``<out>/latest-<config>.json`` (one copy, dated inside), ``<out>/<config>-latest.md``
(the README table) and ``<out>/<config>-latest.png``; run folders go to ``<out>/runs/`` (git-ignored).
``--readme`` also writes the tables and figure into docs/benchmarks.md, between the config's marker comments.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PARTS = ("timetotarget", "predictor", "overhead", "peer")
REPO = Path(__file__).resolve().parent.parent


def _log(msg: str) -> None:
    print(msg, flush=True)


def settings_line(bench: Any) -> str:
    c, g = bench.train, bench.train.grpo
    task = "arithmetic mix (dotslab.data.ARITHMETIC_MIX)" if bench.task_mix_size else c.task
    pool = bench.task_mix_size - c.eval_size if bench.task_mix_size else c.train_size
    evaluation = "1 greedy completion" if c.eval_greedy else f"{c.eval_samples} samples"
    return (f"Policy `{c.policy}`, task {task}, pool N={pool}, held-out {c.eval_size} questions × "
            f"{evaluation} every {c.eval_every} steps; {c.total_steps} steps, B={g.questions_per_step}, "
            f"G={g.group_size}, K={c.predictor.reference_set_size} ({c.predictor.embedder}), "
            f"ν={c.selection.steps_per_round}, δ={c.replay.fresh_fraction}, C={c.replay.buffer_capacity}, "
            f"{g.max_new_tokens} new tokens, T={g.temperature}, lr={g.learning_rate:g}, reward {c.reward}"
            + (", bf16 autocast" if g.bf16_autocast else "") + f", {c.threads or 'auto'} torch threads; arms "
            + ", ".join(f"{a.name} ({', '.join(f'{k} {v}' for k, v in a.settings)})" for a in bench.arms) + ".")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .configs import CONFIGS

    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True, help="tiny (tests), cpu, gpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the config's seeds")
    ap.add_argument("--out", default="benchmarks/results", help="results folder (default: %(default)s)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    ap.add_argument("--arms", nargs="+", default=None, help="subset of the config's arms (default: all; grpo is "
                    "needed for targets; overhead reads dots_rr); see benchmarks/configs.py")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's; cpu: all cores)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override training Config keys (parsed by type, as dotslab train -p), e.g. --set total_steps=2 eval_size=8")
    ap.add_argument("--readme", nargs="?", const=str(REPO / "docs" / "benchmarks.md"), default=None, metavar="PATH",
                    help="also write the tables and figure into PATH's block for this config "
                         "(default PATH: docs/benchmarks.md)")
    ap.add_argument("--resume", default=None, metavar="RUNS_FOLDER",
                    help="finish an interrupted benchmark: train into this runs folder and read back every run "
                         "that already finished there with the same config (benchmarks/timetotarget.py, decision 5)")
    args = ap.parse_args(argv)
    if args.resume and not Path(args.resume).is_dir():
        ap.error(f"--resume: {args.resume} is not a folder (expected benchmarks/results/runs/<config>-<timestamp>)")
    if args.readme:
        from .report import readme_block
        readme = Path(args.readme)
        if not readme.is_file() or readme_block(readme.read_text(encoding="utf-8"), args.config) is None:
            ap.error(f"--readme: {readme} has no block for benchmark {args.config!r} (see benchmarks/report.py "
                     "readme_markers)")
    args.parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = set(args.parts) - set(PARTS)
    if unknown or not args.parts:
        ap.error(f"--only takes a comma-separated subset of {','.join(PARTS)}; got {args.only!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .configs import CONFIGS, with_settings

    bench = CONFIGS[args.config]()
    if args.seeds:
        bench = dataclasses.replace(bench, seeds=tuple(args.seeds))
    if args.arms:
        known = {a.name for a in bench.arms}
        if set(args.arms) - known:
            raise SystemExit(f"unknown arm(s) {sorted(set(args.arms) - known)}; the {bench.name} config has {sorted(known)}")
        bench = dataclasses.replace(bench, arms=tuple(a for a in bench.arms if a.name in args.arms))
    if args.threads is not None:
        bench = dataclasses.replace(bench, torch_threads=args.threads)
    bench = with_settings(bench, args.set)
    import torch

    threads_before = torch.get_num_threads()
    if bench.torch_threads:
        torch.set_num_threads(bench.torch_threads)
    try:
        return _run(bench, args, argv)
    finally:
        torch.set_num_threads(threads_before)  # main() may run inside a test session


def _run(bench: Any, args: argparse.Namespace, argv: list[str] | None) -> int:
    from . import overhead as overhead_part
    from . import peer as peer_part
    from . import predictor_quality as predictor_part
    from . import report, timetotarget
    from .configs import estimate_seconds
    from .tasks import write_mix

    parts = args.parts
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    run_root = Path(args.resume).resolve() if args.resume else out / "runs" / f"{bench.name}-{stamp}"
    t_start = time.perf_counter()
    machine = report.machine_info()
    est = estimate_seconds(bench, parts)
    _log(f"benchmark '{bench.name}': parts {', '.join(parts)}; seeds {list(bench.seeds)}; "
         f"estimated {sum(est.values()) / 60:.1f} min ("
         + ", ".join(f"{k} {v / 60:.1f}" for k, v in est.items()) + f"); load average {machine['loadavg_start'][0]:.2f}")
    _log(settings_line(bench))

    task = None
    if bench.task_mix_size:
        task = str(write_mix(out / "tasks" / f"{bench.name}-mix-{bench.task_mix_size}.jsonl", bench.task_mix_size, 0))
    result: dict[str, Any] = {
        "schema": report.SCHEMA, "config": bench.name, "created": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine, "estimate_seconds": est, "settings_line": settings_line(bench),
        "settings": {"train": dataclasses.replace(bench.train, task=task or bench.train.task).to_dict(),
                     "seeds": list(bench.seeds), "arms": [{"name": a.name, "label": a.label,
                                                            "settings": dict(a.settings)} for a in bench.arms],
                     "predictor": dataclasses.asdict(bench.predictor), "peer": dataclasses.asdict(bench.peer),
                     "task_mix_size": bench.task_mix_size,
                     "reward": getattr(bench.reward_fn, "__name__", None) or bench.train.reward},
        "parts": {}, "part_seconds": {}, "resumed_from": str(run_root) if args.resume else None}

    records, run_dirs = {}, {}
    if "timetotarget" in parts or "overhead" in parts:
        t0 = time.perf_counter()
        arms = bench.arms if "timetotarget" in parts else tuple(a for a in bench.arms if a.name == "dots_rr")
        if "timetotarget" in parts and "grpo" not in {a.name for a in arms}:
            raise SystemExit("timetotarget needs the grpo baseline; add grpo to --arms")
        _log(f"[1/4] training {len(arms)} arm(s) x {len(bench.seeds)} seed(s)")
        keep = (lambda m, s: m == "grpo" and s == bench.seeds[0]) if "predictor" in parts else (lambda m, s: False)
        records, run_dirs = timetotarget.run_methods(bench, arms, bench.seeds, run_root, task, keep, _log,
                                                      reuse=bool(args.resume))
        if "timetotarget" in parts:
            summary = timetotarget.summarise(records)
            summary["curves"] = timetotarget.eval_curves(records)
            summary["in_run_predictor"] = predictor_part.in_run_quality(records)
            summary["diagnostics"] = timetotarget.step_diagnostics(records)
            summary["run_dirs"] = run_dirs
            result["parts"]["timetotarget"] = summary
        result["part_seconds"]["training"] = time.perf_counter() - t0

    if "predictor" in parts:
        t0 = time.perf_counter()
        _log("[2/4] predictor quality")
        phases: dict[str, str | None] = {"init": None}
        grpo_dir = run_dirs.get("grpo", {}).get(bench.seeds[0])
        if grpo_dir and not list((Path(grpo_dir) / "checkpoints").glob("step-*.pt")) and args.resume:
            # the run was read back (--resume) and its checkpoint deleted: train the same run again,
            # into its own folder, only for the policy it ends with
            _log("  training grpo seed 0 again for its final policy (the read-back run kept no checkpoint)")
            _, dirs = timetotarget.run_methods(bench, [bench.arm("grpo")], [bench.seeds[0]],
                                               run_root / "predictor-after-grpo", task, lambda m, s: True, _log)
            grpo_dir = dirs["grpo"][bench.seeds[0]]
        if grpo_dir:
            ckpts = sorted((Path(grpo_dir) / "checkpoints").glob("step-*.pt"))
            if ckpts:
                phases["after_grpo"] = str(ckpts[-1])
        result["parts"]["predictor"] = predictor_part.run_predictor_quality(bench, task, phases, _log)
        if grpo_dir:
            shutil.rmtree(Path(grpo_dir) / "checkpoints", ignore_errors=True)
        result["part_seconds"]["predictor"] = time.perf_counter() - t0

    if "overhead" in parts:
        t0 = time.perf_counter()
        _log("[3/4] overheads")
        summary = overhead_part.summarise_overhead(records, "dots_rr")
        summary["embedding"] = _embedding_cost(bench, task, overhead_part)
        result["parts"]["overhead"] = summary
        _log(f"  bookkeeping share of a DOTS+RR step: {100 * summary['share_overall']:.2f}% overall, "
             f"max {100 * summary['share_max']:.2f}% (limit 3%)")
        result["part_seconds"]["overhead"] = time.perf_counter() - t0

    if "peer" in parts:
        t0 = time.perf_counter()
        _log("[4/4] peer: dotslab vs TRL GRPOTrainer")
        result["parts"]["peer"] = peer_part.compare(bench.peer, seed=bench.seeds[0],
                                                       threads=bench.torch_threads, log=_log)
        result["part_seconds"]["peer"] = time.perf_counter() - t0

    machine["loadavg_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - t_start
    json_path = out / f"latest-{bench.name}.json"  # one copy: it names its date; git keeps the older ones
    report.write_json(json_path, result)
    md = report.markdown(report.clean(result))
    (out / f"{bench.name}-latest.md").write_text(md, encoding="utf-8")
    report.plot(report.clean(result), out / f"{bench.name}-latest.png")
    if args.readme:
        report.update_readme(Path(args.readme), bench.name,
                             report.readme_content(md, out / f"{bench.name}-latest.png", Path(args.readme)))
        _log(f"updated the {bench.name!r} block of {args.readme}")
    _log(f"\n{md}\nwrote {json_path}, {out / f'{bench.name}-latest.md'}, {out / f'{bench.name}-latest.png'} "
         f"in {result['wall_seconds'] / 60:.1f} min")
    return 0


def _embedding_cost(bench: Any, task: str | None, overhead_part: Any) -> dict[str, Any]:
    """Cold cost of embedding the training pool with the configured embedder (outside every step)."""
    from dotslab.prepare import prepare_run

    cfg = dataclasses.replace(bench.train, seed=bench.seeds[0], task=task or bench.train.task)
    prepared = prepare_run(cfg, policy=False, embed=False)  # the policy only when it is the embedder
    return overhead_part.embedding_cost(cfg.predictor.embedder, prepared.train_set.prompts, prepared.model,
                                        prepared.tokenizer)


if __name__ == "__main__":
    sys.exit(main())

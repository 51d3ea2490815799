"""The benchmark harness: time-to-target arithmetic on hand-made records, the overhead split, the task
mix, and the whole entry point on the ``tiny`` configuration (all four parts, about half a minute).

Run: .venv/bin/python -m pytest tests/test_benchmarks.py
"""
import json
import math
from pathlib import Path

import pytest

from benchmarks import configs, overhead, timetotarget
from benchmarks.report import clean, markdown, readme_block, readme_content, readme_markers
from dotslab.rewards import parity_reward


def run(evals, seconds_per_step=10.0, gens_per_step=16):
    """Records of a run evaluated at the given steps: {step: pass rate}; step 0 has no time/step."""
    recs = []
    for step in range(0, max(evals) + 1):
        r = {"step": step, "rollout/total_generations": step * gens_per_step, "time/elapsed": step * seconds_per_step}
        if step:
            r.update({"time/step": seconds_per_step, "rollout/frac_zero_std": 0.5, "rollout/generations": gens_per_step})
        if step in evals:
            r["eval/pass_rate"] = evals[step]
        recs.append(r)
    return recs


# ---- time-to-target arithmetic ------------------------------------------------------------------
def test_spread_counts_not_reached_as_infinite():
    assert timetotarget.spread([1.0, 2.0, 3.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3, "reached": 3}
    one_missed = timetotarget.spread([1.0, math.nan, 3.0])
    assert one_missed["median"] == 3.0 and one_missed["max"] is None and one_missed["reached"] == 2
    most_missed = timetotarget.spread([1.0, math.nan, math.nan])
    assert most_missed["median"] is None and most_missed["min"] == 1.0 and most_missed["reached"] == 1
    assert timetotarget.spread([])["n"] == 0


def test_ratio_handles_not_reached_and_zero_baseline():
    assert timetotarget.ratio(50.0, 100.0) == 0.5
    assert math.isinf(timetotarget.ratio(math.nan, 100.0))   # method missed, GRPO reached
    assert math.isnan(timetotarget.ratio(50.0, 0.0))          # trivial target: undefined
    assert math.isnan(timetotarget.ratio(math.nan, math.nan))
    r = timetotarget.median_ratio([0.5, math.inf, math.nan, 0.7])
    assert r["median"] == pytest.approx(0.7) and r["n"] == 3 and r["undefined"] == 1 and r["reached"] == 2


def test_summarise_paired_targets_ratios_and_not_reached():
    records = {
        # GRPO improves 0.2 -> 0.5 in both seeds, first reaching 0.5 at step 8 (seed 0) / 6 (seed 1)
        "grpo": {0: run({0: 0.2, 4: 0.3, 8: 0.5}), 1: run({0: 0.2, 2: 0.3, 6: 0.5, 8: 0.5})},
        # DOTS reaches at step 4 in seed 0 with 20 gens/step; never in seed 1
        "dots": {0: run({0: 0.2, 4: 0.6, 8: 0.4}, gens_per_step=20), 1: run({0: 0.2, 4: 0.3, 8: 0.4}, gens_per_step=20)},
    }
    s = timetotarget.summarise(records)
    assert s["targets"] == {0: 0.5, 1: 0.5} and all(s["grpo_improved"].values())
    assert s["per_seed"]["grpo"][0]["seconds"] == 80.0 and s["per_seed"]["grpo"][1]["seconds"] == 60.0
    dots = s["per_seed"]["dots"]
    assert dots[0] == pytest.approx({**dots[0], "seconds": 40.0, "generations": 80.0, "step": 4.0})
    assert math.isnan(dots[1]["seconds"]) and dots[1]["final_pass_rate"] == 0.4
    m = s["methods"]["dots"]
    assert m["seconds"]["reached"] == 1 and m["seconds"]["median"] is None     # 1 of 2 seeds: no median
    assert m["seconds_ratio"]["min"] == pytest.approx(0.5) and m["seconds_ratio"]["max"] is None
    assert m["generations_ratio"]["min"] == pytest.approx(80 / 128)
    assert s["methods"]["grpo"]["seconds_ratio"]["median"] == 1.0
    assert s["methods"]["grpo"]["effective_frac"]["median"] == 0.5
    assert m["steps_ratio"]["per_seed"] == [pytest.approx(0.5), None]       # step 4 vs 8; seed 1 not reached
    assert m["generations_per_step"]["median"] == 20.0


def test_summarise_flags_a_trivial_target_and_leaves_its_ratio_undefined():
    records = {"grpo": {0: run({0: 0.4, 4: 0.3})}, "dots": {0: run({0: 0.4, 4: 0.5})}}
    s = timetotarget.summarise(records)
    assert s["trivial_target"] == {0: True} and s["grpo_improved"] == {0: False}
    assert s["per_seed"]["dots"][0]["seconds"] == 0.0                 # reached at step 0
    assert s["methods"]["dots"]["seconds_ratio"] == {"median": None, "min": None, "max": None, "n": 0,
                                                      "reached": 0, "undefined": 0, "ci_low": None, "ci_high": None,
                                                      "ci_high_inf": False, "per_seed": []}


# ---- overhead split -----------------------------------------------------------------------------
def test_step_split_and_three_percent_verdict():
    recs = [{"step": 0, "eval/pass_rate": 0.1},
            {"step": 1, "time/step": 10.0, "time/generation": 5.0, "time/update": 4.0, "time/prediction": 0.2,
             "time/selection": 0.05, "time/replay": 0.05},
            {"step": 2, "time/step": 10.0, "time/generation": 5.0, "time/update": 4.9, "time/replay": 0.01}]
    rows = overhead.step_split(recs)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["bookkeeping_share"] == pytest.approx(0.03) and rows[0]["other"] == pytest.approx(0.7)
    s = overhead.summarise_overhead({"dots_rr": {0: recs}})
    assert s["share_overall"] == pytest.approx(0.31 / 20) and s["under_limit"] is True
    assert s["max_step_under_limit"] is False and s["share_max"] == pytest.approx(0.03)
    assert overhead.summarise_overhead({"grpo": {0: recs}})["under_limit"] is None  # no DOTS+RR run


# ---- task mix -----------------------------------------------------------------------------------
def test_write_mix_writes_the_arithmetic_mix(tmp_path):
    from benchmarks.tasks import write_mix
    from dotslab.data import arithmetic_mix_questions
    from dotslab.readers import load_file

    path = write_mix(tmp_path / "mix.jsonl", 40, seed=0)
    assert [q.prompt for q in load_file(path)] == [q.prompt for q in arithmetic_mix_questions(40, 0)]


def test_configs_build_and_cpu_estimate_is_well_under_an_hour():
    for name, make in configs.CONFIGS.items():
        bench = make()
        assert bench.name == name and bench.arm("grpo").method == "grpo" and bench.seeds
        cfg = bench.run_config(bench.arm("dots_rr"), 1, "/tmp/x")
        assert cfg.method == "dots_rr" and cfg.seed == 1 and cfg.grpo == bench.train.grpo
    cpu = configs.cpu()
    # the pre-registered protocol (benchmarks/README.md): >= 5 seeds, >= 32 steps, eval SE <= 0.03
    assert len(cpu.seeds) >= 5 and cpu.train.total_steps >= 32 and cpu.train.policy == "smollm2"
    assert cpu.train.eval_greedy and 0.5 / math.sqrt(cpu.train.eval_size) <= 0.03
    assert {a.name for a in cpu.arms} >= {"grpo", "dots_rr", "dots_rr_paper"}
    assert cpu.arm("dots_rr").settings == (("method", "dots_rr"), ("predictor_mode", "history"))
    est = configs.estimate_seconds(cpu, ("timetotarget", "predictor", "overhead", "peer"))
    assert 0 < sum(est.values()) < 95 * 60
    assert parity_reward("ab", None) == 1.0 and parity_reward("abc", None) == 0.0


def test_markdown_writes_not_reached_and_nulls():
    result = clean({"config": "x", "created": "now", "command": "c", "settings_line": "s", "wall_seconds": 60.0,
                    "machine": {"cpu_count": 2, "cpu_model": "cpu", "torch": "t", "loadavg_start": [1.0],
                                "loadavg_end": [1.0], "git_commit": "abc"},
                    "parts": {"timetotarget": timetotarget.summarise(
                        {"grpo": {0: run({0: 0.2, 4: 0.5})}, "dots": {0: run({0: 0.2, 4: 0.3})}})}})
    md = markdown(result)
    assert "| DOTS | 0/1 | not reached (0/1) | not reached (0/1) | not reached (0/1) | 0.300 |" in md
    assert "| GRPO | 1/1 | 1.00 [1.00–1.00] |" in md
    assert "NaN" not in json.dumps(result)


def test_figure_names_every_ratio_when_the_first_arm_misses_and_has_one_row_for_timetotarget_alone():
    """The cpu_sampled figure had no legend (the first arm's medians were not reached, and only the first arm's
    bars were labelled) and an empty second row (only part 1 was run)."""
    from benchmarks.report import figure

    runs = {"grpo": {0: run({0: 0.2, 4: 0.5}), 1: run({0: 0.2, 4: 0.5})},
            "dots": {0: run({0: 0.2, 4: 0.3}), 1: run({0: 0.2, 4: 0.3})},
            "dots_rr": {0: run({0: 0.2, 2: 0.5, 4: 0.6}, seconds_per_step=30.0), 1: run({0: 0.2, 4: 0.5})}}
    part = {**timetotarget.summarise(runs), "curves": timetotarget.eval_curves(runs)}
    fig = figure(clean({"config": "x", "created": "now", "machine": {"cpu_model": "cpu"},
                        "parts": {"timetotarget": part}}))
    assert len(fig.axes) == 3  # one row
    legend = fig.axes[2].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["seconds", "generations", "steps",
                                                          "hatched: median not reached"]
    # dots_rr against GRPO (4 steps, 40 s, 64 generations in both seeds): seed 0 reaches 0.5 at step 2, 60 s,
    # 32 generations (ratios 1.5, 0.5, 0.5); seed 1 at step 4, 40 s, 64 (all 1). Medians of two: the means.
    heights = sorted(round(b.get_height(), 3) for b in fig.axes[2].patches if b.get_facecolor()[3] > 0)  # filled
    assert heights == [0.75, 0.75, 1.25]
    import matplotlib.pyplot as plt
    plt.close(fig)


# ---- the whole harness --------------------------------------------------------------------------
def test_tiny_benchmark_end_to_end(tmp_path, tmp_cache):
    from benchmarks.run import main

    out = tmp_path / "results"
    readme = tmp_path / "README.md"
    start, end = readme_markers("tiny")
    readme.write_text(f"# intro\n\n{start}\nold table\n{end}\n\n## after\n")
    assert main(["--config", "tiny", "--seeds", "0", "1", "--out", str(out), "--readme", str(readme)]) == 0
    result = json.loads((out / "latest-tiny.json").read_text())
    assert result["schema"] == "dotslab-benchmark/1" and result["config"] == "tiny"
    assert {"platform", "cpu_model", "cpu_count", "torch", "loadavg_start", "loadavg_end"} <= set(result["machine"])
    assert set(result["parts"]) == {"timetotarget", "predictor", "overhead", "peer"}

    t = result["parts"]["timetotarget"]
    assert t["seeds"] == [0, 1] and set(t["methods"]) == {"grpo", "dots_rr", "dots_rr_paper", "rr"}
    for m in t["methods"].values():
        assert {"seconds", "generations", "seconds_ratio", "generations_ratio", "steps_ratio",
                "final_pass_rate"} <= set(m)
        assert {"ci_low", "ci_high", "per_seed"} <= set(m["seconds_ratio"])
    # generations per step follow B·G, δB·G after round 0, (δB + K/ν)·G
    gens = {m: t["per_seed"][m]["0"]["total_generations"] for m in t["methods"]}
    B, G, K, steps = 4, 2, 2, 4
    assert gens["grpo"] == steps * B * G
    assert gens["rr"] == 2 * B * G + 2 * (B // 2) * G and gens["dots_rr"] == gens["rr"] + steps * K // 2 * G
    assert gens["dots_rr_paper"] == gens["dots_rr"]
    # the arms differ only in what they name: the two DOTS+RR arms in the predictor mode
    assert result["settings"]["arms"][1]["settings"] == {"method": "dots_rr", "predictor_mode": "history"}
    assert set(t["in_run_predictor"]) == {"dots_rr", "dots_rr_paper"}
    assert all(q["steps_scored"] > 0 for q in t["in_run_predictor"].values())

    p = result["parts"]["predictor"]
    assert set(p["phases"]) == {"init", "after_grpo"}
    rows = p["phases"]["init"]["results"]
    assert {(r["embedder"], r["k"], r["predictor"]) for r in rows} == (
        {(e, k, kind) for e in ("hash", "policy") for k in (2, 4) for kind in ("raw", "online", "history")}
        | {(e, 0, "history") for e in ("hash", "policy")})
    assert all({"pearson", "spearman", "mae", "no_ranking_share"} <= set(r) for r in rows)
    assert all(r["used_adapter"] == (r["predictor"] == "online") for r in rows)

    o = result["parts"]["overhead"]
    assert o["method"] == "dots_rr" and 0 <= o["share_overall"] < 1 and o["embedding"]["cached_call_encoded"] == 0
    assert len(o["per_step"]["0"]) == steps

    q = result["parts"]["peer"]
    for impl in ("dotslab", "trl"):
        r = q["results"][impl]
        assert "error" not in r, r.get("error")
        assert r["seconds_per_step"] > 0 and r["peak_rss_mb"] > r["rss_after_imports_mb"] > 0
        # the child's own peak, not its parent's (ru_maxrss survives exec): a tiny model adds tens of MB
        assert r["peak_rss_mb"] >= r["steady_rss_mb"] and r["peak_rss_mb"] < r["rss_after_imports_mb"] + 500
    assert q["trl_over_dotslab_time"] > 0

    md = (out / "tiny-latest.md").read_text()
    assert "| DOTS+RR (history) |" in md and "Predictor quality" in md and "dotslab vs TRL" in md
    assert (out / "tiny-latest.png").stat().st_size > 10_000
    text = readme.read_text()
    assert text.startswith("# intro\n") and text.endswith("## after\n") and "old table" not in text
    assert readme_block(text, "tiny") == f"{md.rstrip()}\n\n![benchmark figure](results/tiny-latest.png)"
    assert [p.name for p in out.glob("*.json")] == ["latest-tiny.json"]  # one copy of the results file
    assert not list((out / "runs").rglob("*.pt")), "checkpoints must be deleted after the run"


def test_resume_reads_back_finished_runs_and_trains_the_rest(tmp_path, tmp_cache, capsys):
    """An interrupted benchmark finished with --resume: a finished run is read back (not trained again), a
    cut-short one is trained again, and the predictor part trains its own policy for the after-GRPO phase."""
    from benchmarks.run import main

    out = tmp_path / "results"
    args = ["--config", "tiny", "--seeds", "0", "--arms", "grpo", "dots_rr", "--only", "timetotarget,predictor",
            "--out", str(out)]
    assert main(args) == 0
    first = json.loads((out / "latest-tiny.json").read_text())
    runs = next((out / "runs").iterdir())
    cut = runs / "dots_rr-s0" / "metrics.jsonl"
    cut.write_text("".join(cut.read_text().splitlines(keepends=True)[:2]))   # interrupted after step 1
    capsys.readouterr()

    assert main(args + ["--resume", str(runs)]) == 0
    log = capsys.readouterr().out
    assert "grpo           seed 0: read back" in log and "dots_rr        seed 0: read back" not in log
    again = json.loads((out / "latest-tiny.json").read_text())
    assert again["resumed_from"] == str(runs.resolve()) and first["resumed_from"] is None
    grpo_before, grpo_after = (r["parts"]["timetotarget"]["per_seed"]["grpo"]["0"] for r in (first, again))
    assert grpo_after == grpo_before                     # the same records, timings included
    steps = [json.loads(line)["step"] for line in cut.read_text().splitlines()]
    assert steps == list(range(0, 5))                    # trained again from scratch, all 4 steps
    assert "training grpo seed 0 again" in log and set(again["parts"]["predictor"]["phases"]) == {"init", "after_grpo"}


def test_entry_point_rejects_unknown_parts_and_missing_baseline(tmp_path):
    from benchmarks.run import main

    readme = tmp_path / "README.md"
    readme.write_text("# no benchmark block here\n")
    with pytest.raises(SystemExit):                      # refused before anything trains
        main(["--config", "tiny", "--out", str(tmp_path), "--readme", str(readme)])
    assert readme.read_text() == "# no benchmark block here\n" and not list(tmp_path.glob("*.json"))

    with pytest.raises(SystemExit):
        main(["--config", "tiny", "--only", "speed", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="grpo"):
        main(["--config", "tiny", "--only", "timetotarget", "--arms", "dots_rr", "--out", str(tmp_path)])


@pytest.mark.parametrize("name", ["cpu", "mini"])
def test_benchmarks_doc_shows_the_committed_benchmark(name):
    """docs/benchmarks.md's block for a config is exactly what `benchmarks.run --config <name> --readme` wrote
    from the committed result."""
    root = Path(__file__).resolve().parent.parent
    results = root / "benchmarks" / "results"
    doc = root / "docs" / "benchmarks.md"
    block = readme_block(doc.read_text(encoding="utf-8"), name)
    assert block is not None, f"docs/benchmarks.md lost its benchmark:{name} block"
    md = (results / f"{name}-latest.md").read_text(encoding="utf-8")
    assert block == readme_content(md, results / f"{name}-latest.png", doc)
    saved = json.loads((results / f"latest-{name}.json").read_text(encoding="utf-8"))
    assert markdown(clean(saved)) == md, f"{name}-latest.md was edited by hand or is stale against latest-{name}.json"


def test_benchmarks_doc_shows_the_committed_sweep():
    """docs/benchmarks.md's sweep block is what `benchmarks.sweep --readme` writes from the committed result."""
    from benchmarks.sweep import sweep_markdown
    root = Path(__file__).resolve().parent.parent
    doc = root / "docs" / "benchmarks.md"
    block = readme_block(doc.read_text(encoding="utf-8"), "sweep-mini", "benchmarks.sweep")
    assert block is not None, "docs/benchmarks.md lost its benchmark:sweep-mini block"
    saved = json.loads((root / "benchmarks" / "results" / "sweep-mini-latest.json").read_text(encoding="utf-8"))
    assert block == sweep_markdown(saved, "../benchmarks/results/")
    for knob in saved["knobs"]:
        assert (root / "benchmarks" / "results" / f"sweep-mini-{knob}.png").stat().st_size > 0


def test_bootstrap_ci_of_the_median_against_a_direct_enumeration():
    """Three seeds: all 27 equally likely resamples can be enumerated, so the CI is known exactly."""
    import itertools
    values = [0.4, 0.6, math.inf]
    medians = sorted(sorted(c)[1] for c in itertools.product(values, repeat=3))   # 27 resample medians
    lo, hi = timetotarget.bootstrap_median_ci(values, resamples=200_000, seed=1)
    # P(median = 0.4) = P(at least two 0.4s) = 7/27 > 2.5%, so the lower end is 0.4; P(median = inf) = 7/27 too
    assert medians.count(0.4) == 7 and medians.count(math.inf) == 7
    assert lo == 0.4 and math.isinf(hi)
    lo, hi = timetotarget.bootstrap_median_ci([0.5, 0.5, 0.5, 0.5])
    assert lo == hi == 0.5
    s = timetotarget.ratio_summary([0.5, 0.7, 0.6, 0.55, 0.65])
    assert s["median"] == 0.6 and 0.5 <= s["ci_low"] <= 0.6 <= s["ci_high"] <= 0.7 and not s["ci_high_inf"]


def test_in_run_quality_pools_pairs_per_seed_and_scores_flat_steps_as_no_ranking():
    import numpy as np
    from benchmarks.predictor_quality import in_run_quality
    seed0 = [{"step": 1, "predictor/probe_pairs": [[0.2, 0.25], [0.6, 0.5]]},
             {"step": 2, "predictor/probe_pairs": [[0.4, 0.75], [0.4, 0.0]], "select/effective_frac": 0.5}]
    out = in_run_quality({"dots_rr": {0: seed0}, "grpo": {0: [{"step": 1}]}})
    assert set(out) == {"dots_rr"}                       # GRPO has no predictor
    pred, act = np.array([0.2, 0.6, 0.4, 0.4]), np.array([0.25, 0.5, 0.75, 0.0])
    r = np.corrcoef(pred, act)[0, 1]
    q = out["dots_rr"]
    assert q["pooled"]["pearson"]["mean"] == pytest.approx(r)
    assert q["pooled"]["mae"]["mean"] == pytest.approx(np.abs(pred - act).mean())
    assert q["flat_step_share"] == 0.5                   # step 2 predicted 0.4 for both: no ranking
    assert q["per_step_pearson"]["mean"] == pytest.approx((1.0 + 0.0) / 2)   # step 1 r = 1, step 2 scored 0


# ---- peer: dotslab vs TRL, and the compute floor ------------------------------------------------
def test_step_floor_and_matmul_flop_arithmetic():
    from benchmarks.floor import matmul_rate, step_floor_flops

    # P = 1000 parameters, 10 generated tokens, 30 prompt + completion tokens:
    # 2·1000·10 (sampling) + 2·1000·30 (μ pass) + 6·1000·30 (forward + backward) = 20k + 60k + 180k
    assert step_floor_flops(1000, 10, 30) == 260_000
    assert step_floor_flops(134_515_008, 0, 1) == 8 * 134_515_008
    rate = matmul_rate([(3, 4, 5), (2, 6, 7)], "fp32", repeats=2)
    assert [s["flops"] for s in rate["shapes"]] == [120, 168]       # 2·3·4·5, 2·2·6·7
    assert rate["flops"] == 288 and rate["dtype"] == "fp32" and rate["threads"] >= 1
    for s in rate["shapes"]:
        assert s["gflops"] == pytest.approx(s["flops"] / s["best_seconds"] / 1e9)
    assert rate["gflops"] == pytest.approx(288 / (rate["shapes"][0]["best_seconds"] + rate["shapes"][1]["best_seconds"]) / 1e9)
    assert matmul_rate([(2, 3, 4)], "bf16", repeats=1)["shapes"][0]["flops"] == 48


def test_peer_bench_rejects_unknown_policy_and_dtype():
    with pytest.raises(ValueError, match="policy"):
        configs.PeerBench(prompts=2, generations=2, max_new_tokens=4, policy="gpt2")
    with pytest.raises(ValueError, match="dtype"):
        configs.PeerBench(prompts=2, generations=2, max_new_tokens=4, dtype="fp16")
    assert configs.cpu().peer.policy == "smollm2" and configs.tiny().peer.policy == "tiny"


def test_peer_on_the_tiny_policy_reports_tokens_floor_and_multiple():
    from benchmarks.floor import policy_size
    from benchmarks.peer import compare

    bench = configs.PeerBench(prompts=2, generations=2, max_new_tokens=4, warmup_steps=1, timed_steps=1)
    part = compare(bench, threads=1, log=lambda *_: None)
    params = policy_size("tiny")["params"]
    # the tiny Llama by hand: tied embedding 101·32, per layer 4 attention 32×32 + 3 MLP 32×64 + 2 norms, final norm
    assert params == 101 * 32 + 2 * (4 * 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32
    assert part["settings"]["params"] == params and part["settings"]["dtype"] == "fp32"
    for impl in ("dotslab", "trl"):
        r = part["results"][impl]
        assert "error" not in r, r.get("error")
        assert len(r["step_seconds"]) == len(r["tokens"]) == 2 and r["torch_threads"] == 1
        for s in r["tokens"]:
            assert s["rows"] == 4 and 4 <= s["generated"] <= 4 * 4 and s["prompt_completion"] > s["generated"]
            assert s["rows_trained"] == s["rows"]  # the alternating reward gives every group spread
        # floor: (2·gen + 8·(prompt + completion))·P FLOPs at the measured rate, per step
        s = r["tokens"][1]
        assert r["floor_flops"][1] == params * (2 * s["generated"] + 8 * s["prompt_completion"])
        assert r["floor_seconds_per_step"] == pytest.approx(r["floor_flops"][1] / (r["floor_gflops"] * 1e9))
        assert r["multiple_of_floor"] == pytest.approx(r["seconds_per_step"] / r["floor_seconds_per_step"])
        assert r["matmul"]["fp32"]["shapes"][0]["k"] == 32 and r["matmul"]["fp32"]["shapes"][0]["n"] == 64
    t = part["results"]["trl"]
    assert t["prompt_tokens_identical"] and all(s["prompt_tokens_match_rendered"] for s in t["tokens"])
    # TRL's completion count agrees with its own logged mean length
    assert [s["generated"] / s["rows"] for s in t["tokens"]] == pytest.approx(
        [l["completions/mean_length"] for l in t["logged"]])
    assert part["trl_over_dotslab_time"] > 0


def test_peer_markdown_and_plot_render_a_hand_made_result():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.peer import peer_markdown, plot_peer

    def impl(seconds, floor, trained):
        return {"seconds_per_step": seconds, "floor_seconds_per_step": floor, "multiple_of_floor": seconds / floor,
                "peak_rss_mb": 3000.0, "floor_gflops": 40.0,
                "tokens_per_step": {"rows": 32, "generated": 900, "prompt_completion": 2500, "rows_trained": trained}}

    part = {"settings": {"policy": "SmolLM2", "policy_key": "smollm2", "params": 134_515_008, "dtype": "fp32",
                         "task": "arithmetic_mix", "prompts": 8, "generations": 4, "max_new_tokens": 32,
                         "warmup_steps": 1, "timed_steps": 3, "temperature": 1.0, "learning_rate": 1e-5,
                         "reward": "parity (synthetic)", "device": "cpu", "torch_threads": 2},
            "results": {"dotslab": impl(8.0, 2.5, 28), "trl": {**impl(12.0, 2.4, 32), "trl_version": "1.16.0"}},
            "trl_over_dotslab_time": 1.5, "trl_over_dotslab_peak_rss": 1.0}
    md = peer_markdown(part)
    assert "TRL 1.16.0 GRPOTrainer" in md and "8 prompts × 4 completions" in md
    assert "| dotslab | 8.00 | 2.50 | 3.2× | 3000 | 900 | 2500 | 28 of 32 | 40.0 |" in md
    assert "| trl | 12.00 | 2.40 | 5.0× | 3000 | 900 | 2500 | 32 of 32 | 40.0 |" in md
    assert "P = 134,515,008" in md and "TRL / dotslab time per step: 1.50" in md
    part["results"]["dotslab"] = impl(0.0415, 0.000624, 28)                        # tiny: significant digits
    assert "| dotslab | 0.042 | 0.00062 | 66.5× |" in peer_markdown(part)
    part["results"]["trl"] = {"impl": "trl", "error": "exit 1: boom"}
    part["trl_over_dotslab_time"] = None
    md = peer_markdown(part)
    assert "| trl | error: exit 1: boom |" in md and "time per step: —" in md
    fig, ax = plt.subplots()
    plot_peer(ax, part)
    assert len(ax.patches) == 1 and len(ax.collections) == 1   # one bar and its floor line
    plt.close(fig)


def test_reference_cost_summary_by_hand():
    """benchmarks/reference_cost.py's figures of one run, computed by hand on three steps."""
    from benchmarks.reference_cost import markdown, summary

    recs = [{"step": 0, "eval/pass_rate": 0.30},
            {"step": 1, "time/step": 2.0, "time/elapsed": 2.0, "rollout/generations": 48, "rollout/total_generations": 48,
             "rollout/frac_zero_std": 0.5},
            {"step": 2, "time/step": 3.0, "time/elapsed": 5.0, "rollout/generations": 24, "rollout/total_generations": 72,
             "rollout/frac_zero_std": 0.25, "eval/pass_rate": 0.45},
            {"step": 3, "time/step": 4.0, "time/elapsed": 9.0, "rollout/generations": 24, "rollout/total_generations": 96,
             "rollout/frac_zero_std": 1.0, "eval/pass_rate": 0.40}]
    r = summary(recs, target=0.42)
    assert r["generations_per_step"] == 32 and r["seconds_per_step"] == 3.0
    assert r["spread_share"] == pytest.approx((0.5 + 0.75 + 0.0) / 3)
    assert r["final_pass_rate"] == 0.40 and r["target_step"] == 2 and r["target_seconds"] == 5.0
    assert summary(recs, target=0.5)["target_step"] is None
    assert "| a | 32.0 | 3.00 | 0.42 | 0.400 | 2 | 5.0 |" in markdown({"a": r}, 0.42)


def test_registered_cpu_config_is_what_its_committed_result_ran():
    """The `cpu` protocol was registered at the cpu_demo lr of the time (3e-5); cpu_demo's lr has since moved
    to 1e-5, and `cpu` must not move with it (its committed runs could no longer be resumed or compared)."""
    from dotslab.config import Config, cpu_demo
    result = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "latest-cpu.json"
    saved = Config.from_dict(json.loads(result.read_text())["settings"]["train"]).to_flat()
    now = configs.cpu().train.to_flat()
    differs = {k for k in saved if saved[k] != now[k]}
    assert differs <= {"task", "method"}, differs  # the task path is the machine's; the arms set method
    assert now["learning_rate"] == 3e-5 != cpu_demo().grpo.learning_rate


def test_cpu_sampled_is_cpu_with_the_papers_evaluation_and_the_pilot_lr():
    """Issue 19.8's amendment: only the evaluation and lr differ from the registered `cpu` config, and one
    evaluation's sampling standard error is within 0.02 whatever the pass rates (p(1-p) <= 1/4)."""
    from benchmarks import configs
    cpu, amended = configs.cpu(), configs.cpu_sampled()
    a, b = cpu.train.to_flat(), amended.train.to_flat()
    assert {k for k in a if a[k] != b[k]} <= {"eval_greedy", "eval_samples", "learning_rate"}
    assert (b["eval_greedy"], b["eval_samples"], b["eval_temperature"], b["eval_top_p"]) == (False, 4, 0.6, 0.95)
    assert b["learning_rate"] == configs.CPU_SAMPLED_LEARNING_RATE in (1e-5, 3e-5, 1e-4)
    assert math.sqrt(0.25 / (b["eval_size"] * b["eval_samples"])) <= 0.02 < math.sqrt(0.25 / b["eval_size"])
    assert (amended.seeds, amended.arms, amended.task_mix_size) == (cpu.seeds, cpu.arms, cpu.task_mix_size)


def test_profile_step_runs_and_puts_the_originals_back(tmp_path, tmp_cache):
    import dotslab.rollout as rollout
    import dotslab.trainer as trainer
    from benchmarks.profile_step import main

    before = (rollout.HFGenerateEngine.sample, trainer.policy_update)
    out = tmp_path / "profile.json"
    assert main(["--policy", "tiny", "--steps", "2", "--warmup", "1", "--threads", "1", "-p", "preset", "tiny",
                 "-p", "learning_rate", "3e-5", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["timed_steps"] == 2 and got["config"]["learning_rate"] == 3e-5
    assert got["calls"]["sampling"] >= 3 and got["calls"]["update"] == 3       # warm-up step included
    assert got["peak_rss_mb"] >= got["peak_rss_per_call_mb"]["update"] > 0
    assert (rollout.HFGenerateEngine.sample, trainer.policy_update) == before


def test_bf16_momentum_adamw_matches_adamw_written_out_by_hand():
    """Two steps of the profile's memory option against AdamW's equations in plain floats, with the first
    moment rounded to bfloat16 after each update (a value bfloat16 cannot hold exactly: 0.1 * 0.3)."""
    import torch
    from benchmarks.profile_step import BF16MomentumAdamW

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BF16MomentumAdamW([w], lr=0.01, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)
    grads = [[0.3, -1.7], [-0.2, 0.5]]
    x, m, v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    bf16 = lambda f: float(torch.tensor(f).to(torch.bfloat16))  # noqa: E731
    for t, g in enumerate(grads, start=1):
        w.grad = torch.tensor(g)
        opt.step()
        for i in range(2):
            x[i] *= 1 - 0.01 * 0.1
            m_new = 0.9 * m[i] + 0.1 * g[i]          # the update uses the fp32 value, then stores it in bf16
            v[i] = 0.99 * v[i] + 0.01 * g[i] ** 2
            x[i] -= 0.01 / (1 - 0.9 ** t) * m_new / ((v[i] / (1 - 0.99 ** t)) ** 0.5 + 1e-8)
            m[i] = bf16(m_new)
        assert w.tolist() == pytest.approx(x, rel=1e-6)
        assert opt.state[w]["exp_avg"].dtype == torch.bfloat16 and opt.state[w]["exp_avg"].tolist() == m
    assert m[0] != 0.9 * 0.03 + 0.1 * -0.2  # bfloat16 rounding is in play


def test_profile_step_bf16_momentum_flag_puts_adamw_back(tmp_path, tmp_cache):
    import torch
    from benchmarks.profile_step import main

    adamw = torch.optim.AdamW
    out = tmp_path / "profile.json"
    assert main(["--policy", "tiny", "--steps", "1", "--warmup", "1", "--threads", "1", "-p", "preset", "tiny",
                 "--bf16-momentum", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["bf16_momentum"] is True and torch.optim.AdamW is adamw


def test_sweep_knob_values_and_bootstrap_ci_by_hand():
    from benchmarks.configs import CONFIGS
    from benchmarks.sweep import KNOBS, bootstrap_mean_ci, knob_arms
    mini = CONFIGS["mini"]()
    assert KNOBS["C"][1](mini) == (8, 16, 32) and KNOBS["K"][1](mini) == (4, 16, 64)
    valued = knob_arms(mini, "delta")
    assert [v for v, _ in valued] == [0.25, 0.5, 1.0]
    assert [mini.run_config(a, 0, "/r").to_flat()["fresh_fraction"] for _, a in valued] == [0.25, 0.5, 1.0]
    assert all(dict(a.settings)["method"] == "dots_rr" for _, a in valued)
    # the config's own value (delta 1/2, C = B = 16, alpha 1/2) is the benchmark's dots_rr arm, trained once
    assert [a.name for _, a in valued] == ["delta=0.25", "dots_rr", "delta=1"]
    assert [a.name for _, a in knob_arms(mini, "C")] == ["C=8", "dots_rr", "C=32"]
    assert "dots_rr" not in [a.name for _, a in knob_arms(mini, "K")]  # the mini config's K = 8 is not swept
    # two values 0 and 1: resampled means are 0, 1/2, 1 with chances 1/4, 1/2, 1/4 -> percentiles 2.5 and 97.5
    assert bootstrap_mean_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_mean_ci([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4))


def test_sweep_runs_one_knob_on_the_tiny_config(tmp_path):
    from benchmarks.sweep import main as sweep_main
    from benchmarks.sweep import sweep_markdown
    doc = tmp_path / "doc.md"
    start, end = readme_markers("sweep-tiny", "benchmarks.sweep")
    doc.write_text(f"before\n{start}\nold\n{end}\nafter\n")
    assert sweep_main(["--config", "tiny", "--knobs", "delta", "--seeds", "0", "1", "--set", "total_steps=2",
                       "eval_every=1", "--out", str(tmp_path), "--readme", str(doc)]) == 0
    saved = json.loads((tmp_path / "sweep-tiny-latest.json").read_text())
    rows = saved["knobs"]["delta"]["rows"]
    assert [r["value"] for r in rows] == [0.25, 0.5, 1.0] and saved["seeds"] == [0, 1]
    assert [r["arm"] for r in rows] == ["delta=0.25", "dots_rr", "delta=1"]
    # the mechanism columns, recomputed from the runs' own metrics files
    runs = next((tmp_path / "runs").iterdir())
    for r in rows:
        steps = [json.loads(line) for seed in (0, 1) for line in
                 (runs / f"{r['arm']}-s{seed}" / "metrics.jsonl").read_text().splitlines()]
        steps = [x for x in steps if x["step"] > 0]
        assert r["spread_share"] == pytest.approx(sum(1 - x["rollout/frac_zero_std"] for x in steps) / len(steps))
        assert r["step_seconds"] == pytest.approx(sum(x["time/step"] for x in steps) / len(steps))
    assert rows[2]["mean_c"] is None  # delta = 1 replays nothing
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "\nold\n" not in text
    assert readme_block(text, "sweep-tiny", "benchmarks.sweep") == sweep_markdown(saved, "./")
    table = [line for line in text.splitlines() if line.startswith("| delta |")]
    assert [line.split(" | ")[1] for line in table] == ["GRPO", "0.25", "**0.5** (config)", "1"]
    assert "![sweep delta](./sweep-tiny-delta.png)" in text
    assert (tmp_path / "sweep-tiny-delta.png").stat().st_size > 0
    assert not list(tmp_path.glob("sweep-tiny-2*.json"))  # one copy of the results file


def test_step_diagnostics_by_hand():
    from benchmarks.timetotarget import step_diagnostics

    def rec(step, gen, ref, upd, total, zero, c=None, norm=1.0, ev=None):
        r = {"step": step, "time/generation": gen, "time/reference": ref, "time/update": upd, "time/step": total,
             "rollout/frac_zero_std": zero, "train/grad_norm": norm}
        if c is not None:
            r["replay/mean_c"] = c
        if ev is not None:
            r["eval/pass_rate"] = ev
        return r

    runs = {"dots_rr": {0: [{"step": 0, "eval/pass_rate": 0.3},
                            rec(1, 0.2, 0.1, 0.3, 0.7, 0.5, norm=2.0, ev=0.5),
                            rec(2, 0.4, 0.0, 0.5, 1.0, 0.25, c=3.0, norm=4.0, ev=0.4)],
                        1: [{"step": 0, "eval/pass_rate": 0.2}, rec(1, 0.2, 0.1, 0.1, 0.5, 0.75, c=1.0, ev=0.1)]}}
    d = step_diagnostics(runs)["dots_rr"]
    assert math.isclose(d["step_seconds"], (0.7 + 1.0 + 0.5) / 3)
    # update (0.3 + 0.5 + 0.1)/3; other = 2.2/3 - (0.8 + 0.2 + 0.9)/3 = 0.1
    assert math.isclose(d["seconds"]["time/update"], 0.3) and math.isclose(d["seconds"]["other"], 0.1)
    assert math.isclose(d["spread_share"], (0.5 + 0.75 + 0.25) / 3)
    assert d["mean_c"] == 2.0 and d["max_c"] == 3.0 and d["steps_c_over_2"] == 0.5
    assert math.isclose(d["grad_norm_mean"], 7 / 3) and d["grad_norm_max"] == 4.0
    assert math.isclose(d["largest_eval_fall"], (0.1 + 0.1) / 2)  # seed 0: 0.5 -> 0.4; seed 1: 0.2 -> 0.1


def test_main_job_table_from_records_by_hand():
    from benchmarks.main_job import readme_rows, table_rows

    def run(c=None):
        recs = [{"step": 0, "eval/pass_rate": 0.25, "eval/pass_rate_se": 0.02}]
        for s, (gen, zero, norm) in enumerate([(2.0, 0.75, 1.5), (4.0, 0.5, 3.25)], start=1):
            r = {"step": s, "time/step": gen + 1.0, "time/generation": gen, "time/update": 1.0, "time/reference": 0.5,
                 "train/completion_tokens": 10.0 * s, "rollout/total_generations": 32 * s, "time/elapsed": 70.0 * s,
                 "rollout/frac_zero_std": zero, "train/grad_norm": norm}
            if c is not None and s == 2:
                r["replay/mean_c"] = c
            recs.append(r)
        recs[-1].update({"eval/pass_rate": 0.5, "eval/pass_rate_se": 0.04})
        return recs

    rows = table_rows({"grpo": run(), "dots_rr": run(c=1.234)})
    assert rows[2] == ("| held-out pass rate ± SE (96 questions × 4 samples, T 0.6, top-p 0.95), steps 0 / 2 | "
                       "0.250 / 0.500 (± 0.030) | 0.250 / 0.500 (± 0.030) |")
    assert rows[3] == "| completion length (tokens), step 1 → step 2 | 10.0 → 20.0 | 10.0 → 20.0 |"
    assert rows[5] == "| training time (evaluation, model load and checkpoints excluded) | 2 min 20 s | 2 min 20 s |"
    assert rows[6] == ("| step time, mean of 2 steps (s) | 4.0: generation 3.0, update 1.0 | "
                       "4.0: generation 3.0, reference 0.5, update 1.0 |")
    assert rows[7] == "| steps with ≥ 75% of fresh groups without reward spread | 1 of 2 | 1 of 2 |"
    assert rows[8].endswith("| 3.2 / — | 3.2 / 1.23 |")
    assert readme_rows("x\n" + "\n".join(rows) + "\n\ntext") == rows

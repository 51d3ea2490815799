"""One-step learning, determinism, resume after SIGKILL, and bad input at the trainer level.

Run: .venv/bin/python -m pytest tests/test_trainer.py
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from dotslab.config import Config, tiny
from dotslab.data import DataError, arithmetic_questions, save_jsonl
from dotslab.learner import policy_update
from dotslab.models import load_policy
from dotslab.metrics import read_jsonl
from dotslab.rewards import SafeReward, parity_reward
from dotslab.rollout import HFGenerateEngine, rollout_groups
from dotslab.trainer import train


def tiny_cfg(tmp_path, **kw) -> Config:
    return Config.from_flat({"run_root": str(tmp_path / "runs"), **kw}, base=tiny())


def strip_time(records):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def test_one_update_changes_parameters_and_loss_is_finite():
    model, tok = load_policy("tiny", seed=0)
    engine = HFGenerateEngine(model, tok, max_new_tokens=6, temperature=1.0)
    qs = list(arithmetic_questions(6, seed=0))
    torch.manual_seed(0)
    groups = rollout_groups(engine, model, tok, qs, 4, SafeReward(parity_reward), step=1, temperature=1.0)
    assert any(g.has_variance for g in groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = tiny().grpo
    import numpy as np
    res = policy_update(model, opt, groups, [], cfg, step=1, rng=np.random.default_rng(0))
    assert np.isfinite(res.loss) and not res.skipped and res.optimizer_steps >= 1
    assert abs(res.mean_c - 1.0) < 1e-6  # fresh rows: π_old = μ exactly
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert changed, "no parameter changed"
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"


def test_behaviour_logprobs_match_a_fresh_forward():
    """μ stored at rollout equals log π at logits/T recomputed later (docs/method.md §8 consistency)."""
    from dotslab.rollout import completion_logprobs
    model, tok = load_policy("tiny", seed=1)
    engine = HFGenerateEngine(model, tok, max_new_tokens=5, temperature=0.7)
    qs = list(arithmetic_questions(3, seed=1))
    groups = rollout_groups(engine, model, tok, qs, 2, SafeReward(parity_reward), step=1, temperature=0.7,
                            micro_batch_size=1)
    rows = [r for g in groups for r in g.rollouts]
    with torch.no_grad():
        again = completion_logprobs(model, [r.prompt_ids for r in rows], [r.completion_ids for r in rows], 0.7, 16)
    for r, lp in zip(rows, again):
        assert torch.allclose(r.behaviour_logprobs, lp, atol=1e-5)


@pytest.mark.parametrize("method", ["grpo", "dots", "rr", "dots_rr"])
def test_each_method_trains_and_logs(tmp_path, tmp_cache, method):
    cfg = tiny_cfg(tmp_path, method=method, total_steps=4)
    res = train(cfg, progress=False, reward_fn=parity_reward)
    steps = [r for r in res.records if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all("train/loss" in r and "time/update" in r for r in steps)
    assert (res.run_dir / "config.json").exists() and (res.run_dir / "metrics.jsonl").exists()
    if method in ("rr", "dots_rr"):
        assert any(r["replay/replayed"] > 0 for r in steps[2:])
    if method in ("dots", "dots_rr"):
        assert steps[0]["rollout/generations"] > steps[1]["rollout/generations"]  # reference rollouts counted
    assert steps[-1]["rollout/total_generations"] == sum(r["rollout/generations"] for r in steps)


def test_same_seed_same_metrics(tmp_path, tmp_cache):
    a = train(tiny_cfg(tmp_path, run_name="a"), progress=False, reward_fn=parity_reward)
    b = train(tiny_cfg(tmp_path, run_name="b"), progress=False, reward_fn=parity_reward)
    assert strip_time(a.records) == strip_time(b.records)


def test_resume_matches_uninterrupted(tmp_path, tmp_cache):
    full = train(tiny_cfg(tmp_path, run_name="full", total_steps=6), progress=False, reward_fn=parity_reward)
    part = tiny_cfg(tmp_path, run_name="part", total_steps=6, checkpoint_every=1)

    def interrupt(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(part, hooks=[interrupt], progress=False, reward_fn=parity_reward)
    resumed = train(part, resume=True, progress=False, reward_fn=parity_reward)
    assert strip_time(resumed.records) == strip_time(full.records)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from dotslab.config import Config, tiny
    from dotslab.trainer import train
    from dotslab.rewards import parity_reward
    cfg = Config.from_flat({{"run_root": {root!r}, "run_name": "killed", "total_steps": 6,
                             "checkpoint_every": 1}}, base=tiny())
    kill_at = int(sys.argv[1])
    def hook(rec):
        if rec["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, hooks=[hook], resume=len(sys.argv) > 2, progress=False, reward_fn=parity_reward)
""")


def test_sigkill_and_resume_reproduces_metrics(tmp_path, tmp_cache):
    root = str(tmp_path / "runs")
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=os.path.dirname(__file__), root=root))
    env = {**os.environ, "DOTSLAB_CACHE": str(tmp_cache), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(script), "4"], env=env, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    run_dir = tmp_path / "runs" / "killed"
    # simulate a kill mid-write of the metrics file as well
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/')
    p = subprocess.run([sys.executable, str(script), "99", "resume"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    full = train(Config.from_flat({"run_root": root, "run_name": "clean", "total_steps": 6, "checkpoint_every": 1},
                                  base=tiny()), progress=False, reward_fn=parity_reward)
    assert strip_time(read_jsonl(run_dir / "metrics.jsonl")) == strip_time(full.records)


def test_kill_between_checkpoint_and_record_loses_no_metrics(tmp_path, tmp_cache, monkeypatch):
    import dotslab.trainer as trainer_mod
    cfg = tiny_cfg(tmp_path, run_name="gap", total_steps=4, checkpoint_every=1)
    full = train(tiny_cfg(tmp_path, run_name="ref", total_steps=4), progress=False, reward_fn=parity_reward)
    real_log = trainer_mod.JsonlLogger.log

    def dies_at_step_2(self, record):
        if record.get("step") == 2:
            raise KeyboardInterrupt  # checkpoint of step 2 is on disk, its record is not
        real_log(self, record)

    monkeypatch.setattr(trainer_mod.JsonlLogger, "log", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, reward_fn=parity_reward)
    monkeypatch.setattr(trainer_mod.JsonlLogger, "log", real_log)
    resumed = train(cfg, resume=True, progress=False, reward_fn=parity_reward)
    assert strip_time(resumed.records) == strip_time(full.records)


def test_resume_with_changed_config_refuses(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, run_name="r", total_steps=2)
    train(cfg, progress=False, reward_fn=parity_reward)
    with pytest.raises(ValueError, match=r"config differs from the one in its config.json in group_size \(saved 2, now 3\)"):
        train(Config.from_flat({"group_size": 3}, base=cfg), resume=True, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, progress=False)


def test_pool_smaller_than_round_is_a_clear_error(tmp_path, tmp_cache):
    path = tmp_path / "small.jsonl"
    save_jsonl(arithmetic_questions(6, seed=0), path)
    cfg = tiny_cfg(tmp_path, task=str(path), eval_size=2)
    with pytest.raises(DataError, match=r"training pool has 4 questions but one round needs .* = 8"):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()  # no partial state written


def test_reference_set_larger_than_pool(tmp_path, tmp_cache):
    path = tmp_path / "small.jsonl"
    save_jsonl(arithmetic_questions(12, seed=0), path)
    cfg = tiny_cfg(tmp_path, task=str(path), eval_size=2, reference_set_size=11)
    with pytest.raises(DataError, match=r"reference_set_size K = 11 is larger than the training pool \(10"):
        train(cfg, progress=False)


def test_raising_and_nan_rewards_count_as_zero(tmp_path, tmp_cache, caplog):
    calls = {"n": 0}

    def flaky(completion, question):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("verifier crashed")
        if calls["n"] % 3 == 1:
            return float("nan")
        return 1.0

    res = train(tiny_cfg(tmp_path, total_steps=2, method="grpo"), progress=False, reward_fn=flaky)
    errors = sum(r.get("rollout/reward_errors", 0) for r in res.records)
    assert errors > 0 and "verifier crashed" in caplog.text


def test_nan_loss_skips_update_and_stops_after_max_bad_steps(tmp_path, tmp_cache, monkeypatch):
    import dotslab.learner as learner
    real = learner.policy_loss

    def poisoned(*a, **k):
        loss, stats = real(*a, **k)
        return loss * float("nan"), stats

    monkeypatch.setattr(learner, "policy_loss", poisoned)
    res = train(tiny_cfg(tmp_path, total_steps=10, max_bad_steps=2, method="grpo"), progress=False,
                reward_fn=parity_reward)
    steps = [r for r in res.records if r["step"] > 0]
    # a step whose groups all lack reward spread trains nothing, so only the others can meet the NaN
    assert res.stopped_early and [r["train/skipped"] for r in steps[-2:]] == [1.0, 1.0]
    assert all(r["train/skipped"] == float(r["rollout/frac_zero_std"] < 1) for r in steps)
    assert len(steps) == 2 + sum(r["rollout/frac_zero_std"] == 1 for r in steps)


def test_empty_completions_are_handled(tmp_path, tmp_cache, monkeypatch):
    """A model that emits nothing (EOS at once) gives empty completions: no crash, no update."""
    from dotslab import rollout
    from dotslab.rollout import Sample
    real = rollout.HFGenerateEngine.sample

    def eos_only(self, prompts, n, **sampling):
        out = real(self, prompts, n, **sampling)
        eos = torch.tensor([self.tokenizer.eos_token_id])
        return [[Sample(s.prompt_ids, eos[:0], "") for s in group] for group in out]

    monkeypatch.setattr(rollout.HFGenerateEngine, "sample", eos_only)
    res = train(tiny_cfg(tmp_path, total_steps=2, method="grpo"), progress=False)
    assert [r["train/completion_tokens"] for r in res.records if r["step"] > 0] == [0.0, 0.0]


def test_every_emitted_metric_key_is_in_the_glossary(tmp_path, tmp_cache):
    from dotslab.metrics import GLOSSARY
    keys = set()
    for method, extra in (("dots_rr", {"reuse_reference_rollouts": True}), ("rr", {}), ("grpo", {}),
                          ("dots", {"predictor_mode": "history"})):
        cfg = tiny_cfg(tmp_path, method=method, run_name=method, total_steps=4, eval_every=2,
                       target_pass_rate=0.01, **extra)
        keys |= {k for r in train(cfg, progress=False, reward_fn=parity_reward).records for k in r}
    assert {"replay/mean_c", "predictor/pearson", "predictor/keys", "time/reward", "eval/pass_rate"} <= keys
    assert keys <= set(GLOSSARY), sorted(keys - set(GLOSSARY))


def test_dapo_filter_trains_only_groups_with_spread_and_counts_every_generation(tmp_path):
    # questions whose id ends in an even digit never have reward spread; the rest score parity of length
    calls = []

    def reward(completion, question):
        calls.append(question.id)
        return 0.0 if int(question.id[-1]) % 2 == 0 else float(len(completion) % 2 == 0)

    cfg = tiny_cfg(tmp_path, method="dapo", total_steps=3, eval_every=0, checkpoint_every=0, group_size=4,
                   questions_per_step=4, minibatch_questions=4, max_refills=6)
    res = train(cfg, progress=False, reward_fn=reward)
    records = [r for r in res.records if r["step"] > 0]
    assert len(calls) == records[-1]["rollout/total_generations"]  # every completion generated is counted
    assert sum(r["rollout/discarded_groups"] for r in records) > 0
    for r in records:
        kept = cfg.grpo.questions_per_step - r["rollout/filter_shortfall"]
        assert r["rollout/generations"] == (kept + r["rollout/discarded_groups"]) * cfg.grpo.group_size
        assert r["rollout/frac_zero_std"] == 0.0  # the trained groups all have spread

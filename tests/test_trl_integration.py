"""DOTS + rollout replay on TRL's GRPOTrainer: config mapping, the replay loss, CPU training, 2 processes.

Run: .venv/bin/python -m pytest tests/test_trl_integration.py   (about a minute on 2 CPU cores)
"""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from dotslab.config import Config, ConfigError, paper, tiny  # noqa: E402
from dotslab.data import arithmetic_questions  # noqa: E402
from dotslab.embed import make_embedder  # noqa: E402
from dotslab.grpo import group_advantages_std, policy_loss  # noqa: E402
from dotslab.integrations.trl import _pad, build_trainer, grpo_config_from  # noqa: E402
from dotslab.models import load_policy  # noqa: E402
from dotslab.records import Group, Rollout  # noqa: E402
from dotslab.rewards import SafeReward, parity_reward  # noqa: E402
from dotslab.rollout import HFGenerateEngine, completion_logprobs, rollout_groups  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def tiny_cfg(tmp_path, **kw) -> Config:
    return Config.from_flat({"run_root": str(tmp_path / "runs"), **kw}, base=tiny())


# ---- config mapping --------------------------------------------------------------------------
def test_grpo_config_maps_one_step_to_one_generation_batch(tmp_path):
    cfg = tiny_cfg(tmp_path, aggregation="sequence", advantage="mean", kl_coef=0.1, top_p=0.9)
    a = grpo_config_from(cfg, num_processes=1)
    g = cfg.grpo
    assert a.num_generations == g.group_size and a.generation_batch_size == g.questions_per_step * g.group_size
    assert a.per_device_train_batch_size * a.gradient_accumulation_steps == g.minibatch_questions * g.group_size
    assert a.steps_per_generation // a.gradient_accumulation_steps == g.questions_per_step // g.minibatch_questions
    assert a.max_steps == cfg.total_steps * (g.questions_per_step // g.minibatch_questions)
    assert (a.learning_rate, a.temperature, a.top_p, a.max_completion_length, a.epsilon, a.beta) == \
        (g.learning_rate, g.temperature, 0.9, g.max_new_tokens, g.clip_eps, 0.1)
    assert (a.loss_type, a.scale_rewards, a.lr_scheduler_type.value) == ("grpo", "none", "constant")
    assert a.num_iterations == 1 and a.disable_dropout and not a.mask_truncated_completions
    assert grpo_config_from(tiny_cfg(tmp_path)).loss_type == "dapo"  # token-level mean
    assert a.gradient_checkpointing is g.gradient_checkpointing is True   # ours, not TRL's default
    assert grpo_config_from(tiny_cfg(tmp_path, gradient_checkpointing=False)).gradient_checkpointing is False
    assert grpo_config_from(cfg, learning_rate=3e-4).learning_rate == 3e-4  # overrides win


def test_grpo_config_paper_preset_on_eight_gpus():
    a = grpo_config_from(paper(), num_processes=8, use_cpu=True, bf16=False)
    # 512 questions x 8 = 4096 rows per step; 64 x 8 = 512 rows per optimizer step = 8 per device x 8 GPUs x 8
    assert (a.per_device_train_batch_size, a.gradient_accumulation_steps, a.generation_batch_size) == (8, 8, 4096)
    assert a.max_steps == 60 * 8


def test_grpo_config_rejects_ragged_geometry(tmp_path):
    with pytest.raises(ConfigError, match="multiple of minibatch_questions"):
        grpo_config_from(tiny_cfg(tmp_path, questions_per_step=5, minibatch_questions=2))
    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        grpo_config_from(tiny_cfg(tmp_path), num_processes=1, per_device_train_batch_size=3)


# ---- the replay loss: TRL's loss on replayed rows is docs/method.md §5 ---------------------------------
def test_replayed_rows_give_the_method_loss_and_gradient(tmp_path):
    cfg = tiny_cfg(tmp_path, method="rr", aggregation="sequence", temperature=0.7, group_size=4)
    trainer = build_trainer(cfg, reward_fn=parity_reward, save_strategy="no")
    model, tok, T, eps = trainer.model, trainer.processing_class, 0.7, cfg.grpo.clip_eps
    qs = list(arithmetic_questions(6, seed=3))
    torch.manual_seed(0)
    behaviour, _ = load_policy("tiny", seed=7)  # an older policy sampled the replayed groups: c != 1
    reward = SafeReward(parity_reward)
    replay = rollout_groups(HFGenerateEngine(behaviour, tok, max_new_tokens=6, temperature=T), behaviour, tok,
                            qs[:3], 4, reward, step=1, temperature=T)
    fresh = rollout_groups(HFGenerateEngine(model, tok, max_new_tokens=6, temperature=T), model, tok,
                           qs[3:], 4, reward, step=2, temperature=T)
    assert all(g.has_variance for g in replay)
    rows = [r for g in fresh for r in g.rollouts]
    p_ids, p_mask = _pad([r.prompt_ids for r in rows], tok.pad_token_id, left=True)
    c_ids, c_mask = _pad([r.completion_ids for r in rows], tok.pad_token_id, left=False)
    adv = torch.cat([group_advantages_std(g.rewards[None], eps=1e-4)[0] for g in fresh])
    out = {"prompt_ids": p_ids, "prompt_mask": p_mask, "completion_ids": c_ids, "completion_mask": c_mask,
           "advantages": adv, "num_items_in_batch": c_mask.sum(),
           "old_per_token_logps": trainer._token_logps(p_ids, p_mask, c_ids, c_mask)}
    batch, replay_c = trainer._with_replay(out, replay)
    assert replay_c["replay/c_outside_clip_frac"] > 0  # stale enough to matter

    with torch.no_grad():  # the update moves π_θ away from π_old, so some tokens clip
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.eval()
    model.zero_grad()
    trainer._compute_loss(model, batch).backward()
    trl_grads = [p.grad.clone() for p in model.parameters()]

    all_rows = rows + [r for g in replay for r in g.rollouts]
    mask = batch["completion_mask"].bool()
    old = [batch["old_per_token_logps"][i][mask[i]] for i in range(len(all_rows))]
    mu = old[:len(rows)] + [r.behaviour_logprobs for g in replay for r in g.rollouts]  # fresh rows: μ = π_old
    advantages = torch.cat([adv] + [group_advantages_std(g.rewards[None], eps=1e-4)[0] for g in replay])
    model.zero_grad()
    logp = completion_logprobs(model, [r.prompt_ids for r in all_rows], [r.completion_ids for r in all_rows], T)
    loss, stats = policy_loss(logp, mu, old, advantages, clip_eps=eps, aggregation="sequence")
    loss.backward()
    assert stats.clip_frac > 0 and abs(stats.mean_c - 1) > 1e-3
    assert torch.allclose(trainer._compute_loss(model, batch), loss, atol=1e-5)
    for a, b in zip(trl_grads, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-5)

    # the importance ratio is real: treating replayed rows as on-policy (old := π_θ) gives another gradient
    plain = advantages[:, None].expand_as(batch["advantages"]).clone()  # A without c
    on_policy = {k: v for k, v in batch.items() if k != "old_per_token_logps"}
    model.zero_grad()
    trainer._compute_loss(model, dict(on_policy, advantages=plain)).backward()
    assert not all(torch.allclose(a, p.grad, atol=1e-5) for a, p in zip(trl_grads, model.parameters()))


# ---- training on CPU ---------------------------------------------------------------------------
def test_dapo_is_refused_with_a_reason(tmp_path, tmp_cache):
    with pytest.raises(ConfigError, match="dotslab's own trainer only"):
        build_trainer(tiny_cfg(tmp_path, method="dapo"), reward_fn=parity_reward, save_strategy="no")


def test_dots_rr_trains_on_trl(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, method="dots_rr", total_steps=5)
    trainer = build_trainer(cfg, reward_fn=parity_reward, save_strategy="no")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    recs = trainer.dots_records
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    assert sum(r.get("replay/replayed", 0) for r in recs) > 0, "no step replayed"
    assert all(np.isfinite(r["replay/mean_c"]) for r in recs if r.get("replay/replayed"))
    assert recs[0]["predictor/reference_pass_rate"] >= 0 and "select/mean_predicted_difficulty" in recs[0]
    assert 0 < len(trainer.planner.buffer) <= cfg.replay.buffer_capacity
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    logged = [json.loads(line) for line in open(Path(trainer.args.output_dir) / "metrics.jsonl")]
    assert any("replay/replayed" in r and "loss" in r for r in logged)


class CountingReward:
    """A reward that ignores the completion: the k-th call for a question returns a fixed bit.

    Both trainers call the reward once per completion, G times per group, so with it every label, and
    therefore every prediction and plan, is the same whichever engine sampled the text.
    """

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __call__(self, completion, question):
        k = self.calls.get(question.id, 0)
        self.calls[question.id] = k + 1
        return float((zlib.crc32(question.id.encode()) + k) % 3 == 0)


def test_notebook_trainer_and_trl_plan_the_same_steps(tmp_path, tmp_cache, monkeypatch):
    from dotslab import planner as planner_module
    from dotslab.trainer import train
    cfg = tiny_cfg(tmp_path, method="dots_rr", total_steps=6, group_size=4, eval_every=0, checkpoint_every=0,
                   train_size=40)
    notebook_plans = []
    real_plan_step = planner_module.RoundPlanner.plan_step

    def recording(self, *a, **kw):
        plan, metrics = real_plan_step(self, *a, **kw)
        notebook_plans.append(plan.to_dict())
        return plan, metrics
    monkeypatch.setattr(planner_module.RoundPlanner, "plan_step", recording)
    train(cfg, reward_fn=CountingReward(), progress=False)
    monkeypatch.setattr(planner_module.RoundPlanner, "plan_step", real_plan_step)

    trainer = build_trainer(cfg, reward_fn=CountingReward(), save_strategy="no")
    trainer.train()
    assert sum(bool(p["replay"]) for p in notebook_plans) >= 2, "the comparison needs replaying steps"
    assert sum(bool(p["references"]) for p in notebook_plans) >= 2, "... and DOTS rounds after round 0"
    assert trainer.dots_plans == notebook_plans


def test_replayed_c_is_one_while_the_policy_is_unchanged(tmp_path, tmp_cache):
    """μ (stored at generation) and π_old (recomputed at replay) agree: docs/method.md §8's free consistency check."""
    cfg = tiny_cfg(tmp_path, method="rr", total_steps=4, learning_rate=1e-30)
    trainer = build_trainer(cfg, reward_fn=parity_reward, save_strategy="no")
    trainer.train()
    replayed = [r for r in trainer.dots_records if r.get("replay/replayed")]
    assert replayed and all(r["replay/mean_abs_log_c"] < 1e-4 for r in replayed)


def test_checkpoint_holds_the_planner_and_resume_restores_it(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, method="dots_rr", total_steps=3, checkpoint_every=3)
    trainer = build_trainer(cfg, reward_fn=parity_reward)
    trainer.train()
    state_file = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}" / "dotslab_state.pt"
    assert state_file.exists()
    again = build_trainer(dataclasses.replace(cfg, total_steps=4), reward_fn=parity_reward)
    again.train(resume_from_checkpoint=True)
    assert [r["step"] for r in again.dots_records] == [4]
    assert again.planner.total_generations > trainer.planner.total_generations


# ---- the launch recipe ---------------------------------------------------------------------------
def _recipe():
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_trl", ROOT / "recipes" / "train_trl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipe_reads_config_keys_and_trl_fields():
    params, trl_kw, opts = _recipe().parse(["-p", "preset", "paper", "--method", "dots", "--total_steps=7",
                                            "-t", "save_strategy", "no", "--trl.use_vllm", "true", "--resume"])
    assert params == {"preset": "paper", "method": "dots", "total_steps": 7}
    assert trl_kw == {"save_strategy": "no", "use_vllm": True} and opts.resume
    cfg = Config.from_flat(params)
    assert cfg.grpo.questions_per_step == 512 and cfg.method == "dots"


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file
    for name in ("multi_gpu", "zero2", "zero3"):
        c = load_config_from_file(str(ROOT / "recipes" / "accelerate" / f"{name}.yaml"))
        assert c.num_processes == 8 and c.mixed_precision == "bf16"
        assert (c.deepspeed_config or {}).get("zero_stage") == {"multi_gpu": None, "zero2": 2, "zero3": 3}[name]


def test_two_processes_draw_the_same_questions(tmp_path, tmp_cache):
    """torchrun + gloo: both ranks log identical plans (fresh questions, replayed groups, references)."""
    (tmp_path / "parity_reward.py").write_text(textwrap.dedent("""
        def parity(completion, question):
            return float(len(completion) % 2 == 0)
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           str(ROOT / "recipes" / "train_trl.py"), "-p", "preset", "tiny", "-p", "method", "dots_rr",
           "-p", "total_steps", "5", "-p", "run_root", str(tmp_path / "runs"),
           "--reward-fn", "parity_reward:parity", "-t", "save_strategy", "no"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (out,) = (tmp_path / "runs").glob("*/trl")
    plans = [[json.loads(line) for line in open(out / f"plans.rank{r}.jsonl")] for r in (0, 1)]
    assert len(plans[0]) == 5 and plans[0] == plans[1]
    assert any(p["replay"] for p in plans[0]) and plans[0][0]["references"]


@pytest.mark.gpu
def test_dots_rr_trains_on_trl_on_a_gpu(tmp_path, tmp_cache):
    cfg = tiny_cfg(tmp_path, method="dots_rr", total_steps=3)
    trainer = build_trainer(cfg, reward_fn=parity_reward, save_strategy="no", bf16=True)
    trainer.train()
    assert trainer.model.device.type == "cuda" and len(trainer.dots_records) == 3

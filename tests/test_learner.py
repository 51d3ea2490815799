"""The policy update against an independent evaluation of the loss (docs/method.md §5) on fresh and replayed rows.

Every expected value here comes from a plain ``model(input_ids).logits`` forward pass and a direct
per-token loop over the spec's formula, never from ``dotslab.grpo`` or ``completion_logprobs``.

Run: .venv/bin/python -m pytest tests/test_learner.py
"""
import dataclasses

import numpy as np
import pytest
import torch

import dotslab.learner as learner
from dotslab.config import GRPOConfig
from dotslab.data import arithmetic_questions
from dotslab.learner import policy_update
from dotslab.models import load_policy
from dotslab.records import Group
from dotslab.rewards import SafeReward, parity_reward
from dotslab.rollout import HFGenerateEngine, rollout_groups

EPS = 0.2
TEMPERATURE = 0.8


def with_rewards(group: Group, rewards) -> Group:
    """The same completions with chosen rewards (so every group has spread, and advantages are known)."""
    rollouts = tuple(dataclasses.replace(r, reward=float(x), is_correct=x >= 1) for r, x in zip(group.rollouts, rewards))
    return dataclasses.replace(group, rollouts=rollouts)


def direct_logprobs(model, rollout) -> torch.Tensor:
    """log π(c_t | prompt, c_<t) at logits / T, from one full forward of the whole sequence; (C,)."""
    ids = torch.cat([rollout.prompt_ids, rollout.completion_ids])[None]
    logits = model(input_ids=ids).logits[0].float() / TEMPERATURE           # (P + C, V)
    p, c = len(rollout.prompt_ids), len(rollout.completion_ids)
    logp = torch.log_softmax(logits[p - 1:p - 1 + c], dim=-1)                # (C, V)
    return logp[torch.arange(c), rollout.completion_ids]


def direct_loss(model, groups, old_logp, clipped_tokens: list | None = None, max_c: float = 0.0) -> torch.Tensor:
    """docs/method.md §5 token by token: mean over all tokens of max(-A·ρ, -A·clip(ρ, c(1-ε), c(1+ε))),
    each term times min(c, max_c)/c when ``max_c`` > 0 ("Truncating c")."""
    terms = []
    for g in groups:
        r = g.rewards
        adv = (r - r.mean()) / (r.std() + 1e-6)  # unbiased std, as the config's 'std' advantage
        for j, ro in enumerate(g.rollouts):
            logp = direct_logprobs(model, ro)
            mu = ro.behaviour_logprobs if ro.behaviour_logprobs is not None else old_logp[id(ro)]  # fresh: μ = π_old
            for t in range(len(ro.completion_ids)):
                rho = torch.exp(logp[t] - mu[t])
                c = torch.exp(old_logp[id(ro)][t] - mu[t])
                lo, hi = c * (1 - EPS), c * (1 + EPS)
                clipped = torch.minimum(torch.maximum(rho, lo), hi)
                term = torch.maximum(-adv[j] * rho, -adv[j] * clipped)
                terms.append(term * torch.clamp(c, max=max_c) / c if max_c > 0 else term)
                if clipped_tokens is not None:
                    clipped_tokens.append(bool(-adv[j] * clipped > -adv[j] * rho))
    return torch.stack(terms).mean()


@pytest.fixture(scope="module")
def moved_policy_batch():
    """Replayed groups sampled at step 1, then the policy moves, then fresh groups at step 2."""
    torch.manual_seed(0)
    model, tok = load_policy("tiny", seed=3)
    model.eval()
    engine = HFGenerateEngine(model, tok, max_new_tokens=5, temperature=TEMPERATURE)
    qs = list(arithmetic_questions(4, seed=5))
    reward = SafeReward(parity_reward)
    old_groups = rollout_groups(engine, model, tok, qs[:2], 3, reward, step=1, temperature=TEMPERATURE)
    with torch.no_grad():  # the policy moves after μ was recorded
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    new_groups = rollout_groups(engine, model, tok, qs[2:], 3, reward, step=2, temperature=TEMPERATURE)
    replayed = [with_rewards(g, w) for g, w in zip(old_groups, ([1, 0, 0], [0, 1, 1]))]
    fresh = [with_rewards(g, w) for g, w in zip(new_groups, ([0, 0, 1], [1, 1, 0]))]
    return model, fresh, replayed


def grpo_cfg(n_groups: int) -> GRPOConfig:
    return GRPOConfig(group_size=3, questions_per_step=n_groups, minibatch_questions=n_groups,
                      clip_eps=EPS, temperature=TEMPERATURE, max_grad_norm=1e9, micro_batch_size=2,
                      bf16_autocast=False, advantage="std", aggregation="token")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_replayed_rows_get_pi_old_and_the_gradient_matches_the_spec(moved_policy_batch, monkeypatch, checkpointing):
    model0, fresh, replayed = moved_policy_batch
    model = load_policy("tiny", seed=3)[0]
    model.load_state_dict(model0.state_dict())
    groups = fresh + replayed

    # independent π_old: the parameters at the start of the update, full forward per row
    with torch.no_grad():
        old = {id(r): direct_logprobs(model, r) for g in groups for r in g.rollouts}
    c_replayed = torch.cat([torch.exp(old[id(r)] - r.behaviour_logprobs) for g in replayed for r in g.rollouts])
    assert (c_replayed - 1).abs().max() > 0.05, "the policy must have moved for this test to mean anything"

    # the π_old each row reaches the loss with
    seen: dict[int, torch.Tensor] = {}
    real_loss = learner.policy_loss

    def spy(logp, behaviour_logp, old_logp, *a, **kw):
        for mu, o in zip(behaviour_logp, old_logp):
            seen[id(mu)] = o.detach()
        return real_loss(logp, behaviour_logp, old_logp, *a, **kw)
    monkeypatch.setattr(learner, "policy_loss", spy)

    # expected loss and gradient, evaluated directly at the start parameters
    model.zero_grad()
    expected = direct_loss(model, groups, old)
    expected.backward()
    expected_grad = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad()

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg = dataclasses.replace(grpo_cfg(len(groups)), gradient_checkpointing=checkpointing)
    res = policy_update(model, opt, fresh, replayed, cfg, step=2, rng=np.random.default_rng(0))

    for g in groups:
        for r in g.rollouts:
            got = seen[id(r.behaviour_logprobs)]
            assert torch.allclose(got, old[id(r)], atol=1e-5), "π_old must come from the start parameters"
    for g in fresh:  # fresh rows: μ was recorded by these very parameters, so c = 1
        for r in g.rollouts:
            assert torch.allclose(torch.exp(seen[id(r.behaviour_logprobs)] - r.behaviour_logprobs),
                                  torch.ones(len(r.completion_ids)), atol=1e-5)
    assert res.loss == pytest.approx(float(expected.detach()), rel=1e-4, abs=1e-6)
    for n, p in model.named_parameters():
        assert torch.allclose(before[n] - p.detach(), expected_grad[n], atol=1e-5, rtol=1e-3), n
    # the replay diagnostics describe the replayed tokens only
    assert res.replay_mean_c == pytest.approx(float(c_replayed.mean()), rel=1e-4)
    assert res.replay_mean_abs_log_c == pytest.approx(float(c_replayed.log().abs().mean()), rel=1e-4)
    assert res.replay_c_outside_clip_frac == pytest.approx(float(((c_replayed - 1).abs() > EPS).float().mean()))


def test_a_cap_on_c_reaches_the_update_through_the_config(moved_policy_batch):
    """``max_importance_weight`` truncates c in the learner's own loss: the SGD step equals the gradient of
    the direct loss with each term scaled by min(c, cap)/c, and differs from the uncapped step."""
    model0, fresh, replayed = moved_policy_batch
    groups = fresh + replayed
    model = copy_of(model0)
    with torch.no_grad():
        old = {id(r): direct_logprobs(model, r) for g in groups for r in g.rollouts}
    c = torch.cat([torch.exp(old[id(r)] - r.behaviour_logprobs) for g in replayed for r in g.rollouts])
    cap = float(c.median())  # the replayed tokens above it are truncated (below 1, the fresh ones too, in both)
    assert (c > cap).any() and (c < cap).any()

    def expected_step(max_c):
        ref = copy_of(model0)
        direct_loss(ref, groups, old, max_c=max_c).backward()
        return {n: q.grad.detach().clone() for n, q in ref.named_parameters()}

    capped, uncapped = expected_step(cap), expected_step(0.0)
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    cfg = dataclasses.replace(grpo_cfg(len(groups)), max_importance_weight=cap)
    policy_update(model, torch.optim.SGD(model.parameters(), lr=1.0), fresh, replayed, cfg, step=2,
                  rng=np.random.default_rng(0))
    moved_apart = False
    for n, q in model.named_parameters():
        assert torch.allclose(before[n] - q.detach(), capped[n], atol=1e-5, rtol=1e-3), n
        moved_apart |= not torch.allclose(capped[n], uncapped[n], atol=1e-5, rtol=1e-3)
    assert moved_apart, "the cap must change the update for this test to mean anything"


def copy_of(model0: torch.nn.Module) -> torch.nn.Module:
    model = load_policy("tiny", seed=3)[0]
    model.load_state_dict(model0.state_dict())
    return model


def direct_sgd(model0, groups, old, order, lr, clipped: list[bool] | None = None) -> torch.nn.Module:
    """Plain SGD over minibatches of two groups in ``order``, each step on the direct per-token loss;
    ``clipped`` collects, from the second minibatch on, which tokens the clip acted on."""
    expected = copy_of(model0)
    for k in range(0, len(groups), 2):
        expected.zero_grad()
        direct_loss(expected, [groups[i] for i in order[k:k + 2]], old, clipped if k else None).backward()
        with torch.no_grad():
            for p in expected.parameters():
                p.sub_(lr * p.grad if p.grad is not None else 0)
    return expected


def test_second_minibatch_clips_around_c(moved_policy_batch):
    """Two optimizer steps: the second minibatch sees θ ≠ π_old, so the clip around c is active somewhere."""
    model0, fresh, replayed = moved_policy_batch
    groups = fresh + replayed
    model = copy_of(model0)
    with torch.no_grad():
        old = {id(r): direct_logprobs(model, r) for g in groups for r in g.rollouts}
    lr, cfg = 2.0, dataclasses.replace(grpo_cfg(len(groups)), minibatch_questions=2)

    # direct: the same minibatch order the learner draws (a permutation from the same generator)
    clipped: list[bool] = []
    expected = direct_sgd(model0, groups, old, np.random.default_rng(7).permutation(len(groups)), lr, clipped)
    assert any(clipped), "the test needs clipped tokens in the second minibatch"

    policy_update(model, torch.optim.SGD(model.parameters(), lr=lr), fresh, replayed, cfg, step=2,
                  rng=np.random.default_rng(7))
    for (n, p), q in zip(model.named_parameters(), expected.parameters()):
        assert torch.allclose(p, q, atol=1e-4, rtol=1e-3), n


def without_behaviour(group: Group) -> Group:
    return dataclasses.replace(group, rollouts=tuple(dataclasses.replace(r, behaviour_logprobs=None)
                                                     for r in group.rollouts))


def test_fresh_rows_without_mu_and_rows_without_spread_give_the_same_update(moved_policy_batch):
    """μ computed inside the update (first forward / a no-grad pass), zero-advantage rows skipped but counted."""
    model0, fresh, replayed = moved_policy_batch
    flat = with_rewards(fresh[0], [1, 1, 1])                        # no reward spread: A = 0 on every row
    fresh_no_mu = [without_behaviour(g) for g in fresh] + [without_behaviour(flat)]
    groups = fresh_no_mu + replayed
    model = copy_of(model0)
    with torch.no_grad():
        old = {id(r): direct_logprobs(model, r) for g in groups for r in g.rollouts}
    lr, cfg = 2.0, dataclasses.replace(grpo_cfg(len(groups)), minibatch_questions=2)

    order = np.random.default_rng(11).permutation(len(groups))
    # fresh groups both in the first minibatch (μ from its forward) and later (μ from the no-grad pass)
    assert {0, 1} & set(order[:2].tolist()) and {0, 1} & set(order[2:].tolist())
    expected = direct_sgd(model0, groups, old, order, lr)

    res = policy_update(model, torch.optim.SGD(model.parameters(), lr=lr), fresh_no_mu, replayed, cfg, step=2,
                        rng=np.random.default_rng(11))
    for (n, p), q in zip(model.named_parameters(), expected.parameters()):
        assert torch.allclose(p, q, atol=1e-4, rtol=1e-3), n
    # the buffer gets μ = π_old(start parameters) for every row of a group with spread, nothing for the flat one
    for sent, back in zip(fresh_no_mu[:2], res.fresh[:2]):
        for r_in, r_out in zip(sent.rollouts, back.rollouts):
            assert torch.allclose(r_out.behaviour_logprobs, old[id(r_in)], atol=1e-5)
    assert all(r.behaviour_logprobs is None for r in res.fresh[2].rollouts)


def test_the_update_threshold_is_set_for_the_block_and_put_back_even_after_an_error(monkeypatch):
    """Decision 7's allocator setting lasts exactly as long as the block; without glibc it is a no-op."""
    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))

        def malloc_trim(self, pad):
            calls.append(("trim", pad))
    monkeypatch.setattr(learner, "_glibc", lambda: FakeLibc())
    with pytest.raises(RuntimeError):
        with learner.large_blocks_from_the_os():
            assert calls == [(-3, 1 << 20)]   # glibc's M_MMAP_THRESHOLD, 1 MB
            raise RuntimeError("the update failed")
    assert calls == [(-3, 1 << 20), (-3, 32 << 20)]
    monkeypatch.setattr(learner, "_glibc", lambda: None)
    with learner.large_blocks_from_the_os():
        learner.release_freed_memory()
    assert len(calls) == 2

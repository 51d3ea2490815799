"""Exact math of advantages and the clipped, importance-corrected loss.

Run: .venv/bin/python -m pytest tests/test_grpo.py
"""
import math

import torch
from hypothesis import given, settings, strategies as st

from dotslab.grpo import (aggregate_sequence_mean, aggregate_token_mean, group_advantages_mean,
                          group_advantages_std, k3_kl, policy_loss, token_policy_loss)


def test_equal_rewards_give_zero_advantage():
    r = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(group_advantages_std(r), torch.zeros_like(r))
    assert torch.equal(group_advantages_mean(r), torch.zeros_like(r))


def test_std_advantage_hand_computed():
    # rewards 1,0,0,0: mean .25, unbiased std = sqrt(((.75)^2 + 3(.25)^2)/3) = 0.5
    a = group_advantages_std(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / (0.5 + 1e-6)
    assert torch.allclose(a, expected)
    assert torch.allclose(group_advantages_mean(torch.tensor([[1.0, 0.0]])), torch.tensor([[0.5, -0.5]]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=2, max_size=8), min_size=1, max_size=5).filter(
    lambda rows: len({len(r) for r in rows}) == 1))
def test_advantages_sum_to_zero_per_group(rows):
    r = torch.tensor(rows, dtype=torch.float64)
    for fn in (group_advantages_std, group_advantages_mean):
        a = fn(r)
        assert torch.all(torch.isfinite(a))
        assert torch.allclose(a.sum(dim=1), torch.zeros(len(rows), dtype=torch.float64), atol=1e-6)


def test_on_policy_loss_is_minus_advantage():
    # fresh rows: θ = old = μ, so ρ = c = 1 and loss_t = -A
    lp = torch.log(torch.tensor([0.5, 0.25]))
    loss, clipped = token_policy_loss(lp, lp, lp, torch.tensor([2.0, -1.0]), 0.2)
    assert torch.allclose(loss, torch.tensor([-2.0, 1.0]))
    assert not clipped.any()


def test_clip_is_around_c_for_stale_rows():
    # μ = 0.5, π_old = 0.75 (c = 1.5), π_θ = 0.9 (ρ = 1.8). clip range c·[0.8, 1.2] = [1.2, 1.8]
    mu, old, new = (torch.log(torch.tensor([x])) for x in (0.5, 0.75, 0.9))
    loss, clipped = token_policy_loss(new, mu, old, torch.tensor([1.0]), 0.2)
    assert torch.allclose(loss, torch.tensor([-1.8]), atol=1e-6) and not clipped.any()
    # π_θ = 1.0 (ρ = 2.0 > 1.8): positive advantage is clipped at -1.8
    loss, clipped = token_policy_loss(torch.log(torch.tensor([1.0])), mu, old, torch.tensor([1.0]), 0.2)
    assert torch.allclose(loss, torch.tensor([-1.8]), atol=1e-6) and clipped.all()
    # equals -c·min(r·A, clip(r,1±ε)·A) with r = π_θ/π_old
    r = 1.0 / 0.75
    assert math.isclose(float(loss), -1.5 * min(r, min(max(r, 0.8), 1.2)), rel_tol=1e-6)


def test_clipped_token_has_zero_gradient_and_unclipped_has_gradient():
    mu = torch.log(torch.tensor([0.5, 0.5]))
    old = mu.clone()
    new = torch.log(torch.tensor([0.9, 0.55])).requires_grad_()  # ρ = 1.8 (clipped), 1.1 (inside)
    loss, clipped = token_policy_loss(new, mu, old, torch.tensor([1.0, 1.0]), 0.2)
    loss.sum().backward()
    assert clipped.tolist() == [True, False]
    assert new.grad[0] == 0 and new.grad[1] < 0


def test_aggregations():
    per_token = torch.tensor([1.0, 3.0, 5.0])
    assert float(aggregate_token_mean(per_token, [2, 1])) == 3.0
    assert float(aggregate_sequence_mean(per_token, [2, 1])) == 3.5  # mean(mean(1,3), 5)
    assert float(aggregate_sequence_mean(per_token, [0, 3])) == 3.0


def test_policy_loss_stats_and_kl():
    lp = [torch.log(torch.tensor([0.5, 0.5])), torch.log(torch.tensor([0.2]))]
    loss, stats = policy_loss(lp, lp, lp, torch.tensor([1.0, -2.0]), clip_eps=0.2)
    assert math.isclose(float(loss), (-1 - 1 + 2) / 3, abs_tol=1e-6)
    assert stats.mean_c == 1.0 and stats.clip_frac == 0.0 and stats.mean_abs_log_rho == 0.0
    assert float(k3_kl(torch.tensor(0.0), torch.tensor(0.0))) == 0.0
    loss_kl, stats = policy_loss(lp, lp, lp, torch.tensor([1.0, -2.0]), clip_eps=0.2,
                                 ref_logp=[x - 0.1 for x in lp], kl_coef=0.5)
    assert stats.kl > 0 and float(loss_kl) > float(loss)


def test_truncated_c_matches_a_direct_loop_over_tokens():
    # c = π_old/μ = 4, 0.5, 3 and 1.2: a cap of 2 truncates the first and third; the loop uses the r = π_θ/π_old form
    behaviour = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.5]))
    old = torch.log(torch.tensor([0.2, 0.2, 0.3, 0.6]))
    new = torch.log(torch.tensor([0.3, 0.15, 0.25, 0.6]))
    adv = torch.tensor([1.0, -0.5, -2.0, 0.7])
    eps, cap = 0.2, 2.0
    loss, _ = token_policy_loss(new, behaviour, old, adv, eps, max_c=cap)
    for t in range(4):
        c = math.exp(old[t] - behaviour[t])
        r = math.exp(new[t] - old[t])
        a = float(adv[t])
        expected = -min(c, cap) * min(r * a, max(1 - eps, min(r, 1 + eps)) * a)
        assert math.isclose(float(loss[t]), expected, rel_tol=1e-5), t
    untruncated, _ = token_policy_loss(new, behaviour, old, adv, eps)
    assert torch.allclose(loss[[1, 3]], untruncated[[1, 3]])       # c <= cap: unchanged
    assert not torch.allclose(loss[[0, 2]], untruncated[[0, 2]])   # c > cap: scaled by cap / c
    # the gradient on a truncated token is cap/c times the untruncated one
    x = new.clone().requires_grad_()
    token_policy_loss(x, behaviour, old, adv, eps, max_c=cap)[0][0].backward()
    y = new.clone().requires_grad_()
    token_policy_loss(y, behaviour, old, adv, eps)[0][0].backward()
    assert math.isclose(float(x.grad[0]), float(y.grad[0]) * cap / 4.0, rel_tol=1e-5)

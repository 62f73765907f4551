"""The GRPO loss against values computed by hand (float64), one property per test."""
import math

import pytest
import torch

from cwm.rl.grpo import GRPOConfig, group_advantages, grpo_loss
from cwm.rl.learner import select
from cwm.rl.rollout import Trajectory


def test_advantage_is_reward_minus_group_mean_without_std():
    rewards = torch.tensor([1., -1., -1., 1., 1., -1., -1., -1., -1., -1.])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    adv = group_advantages(rewards, groups)
    assert adv.tolist() == [1., -1., -1., 1., 1.5, -0.5, -0.5, -0.5, 0., 0.]


def test_advantage_std_switch_divides_by_sample_std():
    rewards = torch.tensor([1., -1., -1., 1., 1., -1., -1., -1.])
    groups = torch.tensor([7, 7, 7, 7, 3, 3, 3, 3])  # group ids need not be 0..n
    adv = group_advantages(rewards, groups, std_normalize=True)
    # group 7: mean 0, sample std sqrt(4/3); group 3: mean -0.5, sample std sqrt((2.25 + 3 * 0.25) / 3) = 1
    s = math.sqrt(3) / 2
    assert adv.tolist() == pytest.approx([s, -s, -s, s, 1.5, -0.5, -0.5, -0.5], abs=1e-5)


def _case():
    """Two sequences: A = +1 with ratios (0.5, 1.0, 1.3, 1.2), A = -1 with ratios (0.5, 0.9, 1.3, 0.75)."""
    ratios = torch.tensor([[0.5, 1.0, 1.3, 1.2], [0.5, 0.9, 1.3, 0.75]], dtype=torch.float64)
    old = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.25, 0.5, 0.125, 0.6]], dtype=torch.float64))
    logp = (old + torch.log(ratios)).requires_grad_()
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.float64)
    return logp, old, adv, mask


def test_clip_higher_both_sides_and_fixed_token_budget():
    logp, old, adv, mask = _case()
    loss, stats = grpo_loss(logp, old, adv, mask, GRPOConfig(token_budget=10))
    # A>0: -min(r, clip(r, 0.8, 1.25)) = -(0.5, 1.0, 1.25, [1.2 masked]); upper clip at 1.25, not 1.2
    # A<0: -min(-r, -clip(r)) = max(r, clip(r)) = ([0.8, 0.9 masked], 1.3, 0.8); lower clip at 0.8
    assert loss.item() == pytest.approx((-(0.5 + 1.0 + 1.25) + (1.3 + 0.8)) / 10, abs=1e-12)
    assert stats["tokens"] == 5 and stats["clipped_tokens"] == 2  # r=1.3 with A>0; r=0.75 with A<0
    loss.backward()
    # d/dlogp of -A*r is -A*r where unclipped; zero where clipped or masked
    expected = torch.tensor([[-0.5, -1.0, 0.0, 0.0], [0.0, 0.0, 1.3, 0.0]], dtype=torch.float64) / 10
    assert torch.allclose(logp.grad, expected, atol=1e-12)


def test_token_normalisation_switches():
    logp, old, adv, mask = _case()
    total = -(0.5 + 1.0 + 1.25) + (1.3 + 0.8)
    tokens, _ = grpo_loss(logp, old, adv, mask, GRPOConfig(loss_norm="tokens"))
    seqs, _ = grpo_loss(logp, old, adv, mask, GRPOConfig(loss_norm="sequences"))
    assert tokens.item() == pytest.approx(total / 5, abs=1e-12)
    assert seqs.item() == pytest.approx((-(0.5 + 1.0 + 1.25) / 3 + (1.3 + 0.8) / 2) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="loss_norm"):
        grpo_loss(logp, old, adv, mask, GRPOConfig(loss_norm="mean"))


def test_masked_tokens_change_nothing():
    logp, old, adv, mask = _case()
    garbage = logp.detach().clone()
    garbage[mask == 0] = 50.0  # absurd log-probs on prompt/observation positions
    a, _ = grpo_loss(logp, old, adv, mask, GRPOConfig())
    b, _ = grpo_loss(garbage, old, adv, mask, GRPOConfig())
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_optional_kl_is_k3_estimator():
    logp = torch.log(torch.tensor([[0.5]], dtype=torch.float64))
    ref = torch.log(torch.tensor([[0.25]], dtype=torch.float64))
    adv = torch.zeros(1, dtype=torch.float64)
    mask = torch.ones((1, 1), dtype=torch.float64)
    loss, _ = grpo_loss(logp, logp.clone(), adv, mask, GRPOConfig(kl_coef=0.1, token_budget=1), ref)
    assert loss.item() == pytest.approx(0.1 * (0.5 - math.log(0.5) - 1), abs=1e-12)
    assert float(grpo_loss(logp, logp.clone(), adv, mask, GRPOConfig(token_budget=1), ref)[0]) == 0.0  # CWM: off
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logp, logp.clone(), adv, mask, GRPOConfig(kl_coef=0.1))


def test_zero_advantage_groups_skipped_unless_switched_off():
    def traj(group, reward):
        return Trajectory(env="t", task=0, group=group, tokens=[1], mask=[0], logprobs=[0.], version=0, reward=reward)

    trajs = [traj(0, 1.), traj(0, -1.), traj(1, -1.), traj(1, -1.), traj(2, 1.), traj(2, 1.)]
    batch = select(trajs, GRPOConfig())
    assert [t.group for t in batch.trajectories] == [0, 0] and batch.advantages == [1., -1.]
    assert batch.skipped_groups == 2
    assert len(select(trajs, GRPOConfig(skip_zero_advantage=False)).trajectories) == 6

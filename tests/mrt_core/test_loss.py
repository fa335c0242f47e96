"""The clipped policy-gradient loss (METHOD.md (14)) on hand-worked cases."""

import math

import pytest
import torch

from mrt_core.loss import kl_k3, policy_loss


def test_on_policy_loss_is_minus_mean_advantage_over_counted_tokens():
    # ratio 1 everywhere; rollout 0 has A=1 on 2 counted tokens, rollout 1 A=-1 on 1 counted token
    # l = [-1, -1, +1] -> (-1 - 1 + 1) / 3 = -1/3
    logp = torch.log(torch.full((2, 2), 0.5))
    mask = torch.tensor([[True, True], [True, False]])
    loss, stats = policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx(-1 / 3)
    assert stats.n_tokens == 3 and stats.clip_fraction == 0 and stats.ratio_mean == pytest.approx(1.0)


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.5, 1.0, -1.2),  # min(1.5, clip 1.2) * 1 -> -1.2: no gain past the clip
        (1.5, -1.0, 1.5),  # min(-1.5, -1.2) = -1.5 -> pessimistic: +1.5
        (0.5, 1.0, -0.5),  # min(0.5, 0.8) = 0.5 -> -0.5
        (0.5, -1.0, 0.8),  # min(-0.5, -0.8) = -0.8 -> +0.8
    ],
)
def test_clipping_hand_values(ratio, adv, expected):
    old = torch.log(torch.tensor([[0.4]]))
    logp = old + math.log(ratio)
    loss, _ = policy_loss(logp, old, torch.tensor([adv]), torch.tensor([[True]]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_kl_term_hand_value_and_non_negative():
    # logp = log 0.5, ref = log 0.25: d = log 0.5 -> exp(d) - d - 1 = 0.5 + 0.6931 - 1 = 0.19315
    logp, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    assert kl_k3(logp, ref).item() == pytest.approx(0.193147, abs=1e-6)
    loss, stats = policy_loss(logp, logp, torch.tensor([0.0]), torch.tensor([[True]]), ref_logp=ref, beta=0.1)
    assert loss.item() == pytest.approx(0.1 * 0.193147, abs=1e-6) and stats.kl == pytest.approx(0.193147, abs=1e-6)
    assert (kl_k3(torch.randn(50).log_softmax(0), torch.randn(50).log_softmax(0)) >= 0).all()


def test_masked_tokens_never_count():
    # environment/forced tokens (mask False) with huge advantages change nothing
    logp = torch.log(torch.full((1, 3), 0.5))
    adv = torch.tensor([[1.0, 1e6, -1e6]])
    mask = torch.tensor([[True, False, False]])
    loss, _ = policy_loss(logp, logp, adv, mask)
    assert loss.item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="no counted tokens"):
        policy_loss(logp, logp, adv, torch.zeros(1, 3, dtype=torch.bool))


def test_an_infinite_value_at_a_masked_position_stays_out_of_loss_and_gradient():
    # logp - old_logp = +inf at the masked slot: the ratio there is inf; a product with the mask
    # would give NaN (inf * 0), in the loss and in the gradient
    logp = torch.tensor([[-1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -float("inf")]])
    loss, stats = policy_loss(logp, old, torch.tensor([1.0]), torch.tensor([[True, False]]))
    loss.backward()
    assert loss.item() == pytest.approx(-1.0) and torch.isfinite(logp.grad).all() and stats.ratio_mean == 1.0

"""Advantages (METHOD.md (8)-(13)), the STaR filter, and the trap in the authors' code."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrt_core.advantages import (
    dense_token_advantages,
    group_advantages,
    length_penalized_rewards,
    mixed_group_advantages,
    progress_reward,
    star_filter,
    termination_baseline_advantages,
)
from mrt_core.loss import policy_loss


def test_grpo_and_unnormalised_hand_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # mean 0.5, population std 0.5 -> (r - 0.5) / 0.5 = [1, -1, -1, 1]
    assert group_advantages(r).tolist() == pytest.approx([1, -1, -1, 1], abs=1e-5)
    assert group_advantages(r, normalize_std=False).tolist() == [0.5, -0.5, -0.5, 0.5]


def test_termination_baseline_hand_values():
    # r = [1, 0], J = 0.25, alpha = 1: R = r + (r - J) = [1.75, -0.25]; A = R - J = [1.5, -0.5]
    r = torch.tensor([1.0, 0.0])
    assert progress_reward(r, 0.25, 1.0).tolist() == [1.75, -0.25]
    assert termination_baseline_advantages(r, 0.25, 1.0).tolist() == [1.5, -0.5]
    # = (1 + alpha)(r - J)
    assert termination_baseline_advantages(r, 0.25, 1.0).tolist() == (2 * (r - 0.25)).tolist()


def test_dense_bonus_lands_on_each_episodes_tokens():
    # outcome 0.5; episode progress [0.1, 0.0, 0.6]; alpha 2 -> episode bonuses [0.2, 0, 1.2]
    # tokens: ep0 ep0 [env] ep2 ep2 [forced] -> [0.7, 0.7, 0, 1.7, 1.7, 0]
    adv = dense_token_advantages(
        torch.tensor([0.5]),
        torch.tensor([[0.1, 0.0, 0.6]]),
        torch.tensor([[0, 0, 1, 2, 2, 0]]),
        torch.tensor([[True, True, False, True, True, False]]),
        alpha=2.0,
    )
    assert adv.tolist()[0] == pytest.approx([0.7, 0.7, 0.0, 1.7, 1.7, 0.0])


def test_mixed_group_normalises_answer_now_and_continue_together():
    # all rewards [0, 0 | 1, 0]: mean 0.25, std sqrt(0.25 * 0.75) = 0.4330
    # continue: (1 - 0.25)/0.433 = 1.732, (0 - 0.25)/0.433 = -0.577; answer-now: -0.577 each
    answer, cont = mixed_group_advantages(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert answer.tolist() == pytest.approx([-0.57735, -0.57735], abs=1e-4)
    assert cont.tolist() == pytest.approx([1.73205, -0.57735], abs=1e-4)


def test_star_filter_keeps_correct_progressing_traces():
    # trace 0: correct, progress sums to 0.5, no zero episode -> keep
    # trace 1: correct but half its episodes make no progress -> drop; trace 2: wrong -> drop
    keep = star_filter([1, 1, 0], [[0.2, 0.3], [0.0, 0.5], [0.9]], min_total_progress=0.4,
                       max_zero_share=0.0, zero_threshold=0.01)
    assert keep == [True, False, False]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16), st.floats(0, 1), st.floats(0, 5))
def test_advantages_finite_for_all_equal_rewards(g, value, alpha):
    r = torch.full((g,), float(value > 0.5))
    for adv in (group_advantages(r), group_advantages(r, False), termination_baseline_advantages(r, value, alpha),
                *mixed_group_advantages(r, r)):
        assert torch.isfinite(adv).all()
    assert group_advantages(r).abs().max() == 0  # nothing to learn from a group that agrees


# --- The trap (METHOD.md after (11)) ------------------------------------------------------------

def _grad(advantages: torch.Tensor) -> torch.Tensor:
    """Gradient of the policy loss w.r.t. the logits of a fixed 4-rollout, 3-token batch."""
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, requires_grad=True)
    actions = torch.tensor([[0, 1, 2], [3, 4, 0], [1, 1, 1], [2, 0, 4]])
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    loss, _ = policy_loss(logp, logp.detach(), advantages, torch.ones(4, 3, dtype=torch.bool))
    loss.backward()
    return logits.grad


def test_trap_constant_j_bonus_cancels_under_group_normalisation():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    plain = _grad(group_advantages(r))
    for j, alpha in [(0.2, 1.0), (0.8, 5.0)]:
        # the authors' form: R = r + alpha (r - J) with J constant in the group, then GRPO:
        assert torch.allclose(_grad(group_advantages(progress_reward(r, j, alpha))), plain, atol=1e-5)
        # without std normalisation it is only a (1 + alpha) rescaling: a learning-rate change
        unnorm = _grad(group_advantages(progress_reward(r, j, alpha), normalize_std=False))
        assert torch.allclose(unnorm, (1 + alpha) * _grad(group_advantages(r, normalize_std=False)), atol=1e-5)


def test_our_mrt_advantages_change_the_gradient():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    plain = _grad(group_advantages(r))
    # termination baseline: the gradient depends on J (how good answering now already was)
    low, high = _grad(termination_baseline_advantages(r, 0.2, 1.0)), _grad(termination_baseline_advantages(r, 0.8, 1.0))
    assert not torch.allclose(low, high, atol=1e-4)
    assert not torch.allclose(low / low.norm(), plain / plain.norm(), atol=1e-3)
    # dense bonus: two rollouts with the same outcome but different episode progress differ
    prog = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    episodes = torch.tensor([[0, 1, 2]] * 4)
    mask = torch.ones(4, 3, dtype=torch.bool)
    dense = _grad(dense_token_advantages(group_advantages(r), prog, episodes, mask, alpha=1.0))
    assert not torch.allclose(dense, plain, atol=1e-4)


def test_length_penalized_rewards_hand_values():
    # lambda 0.5, C_0 = 24: a correct trace of 12 tokens keeps 1 - 0.5 * 12/24 = 0.75, a wrong
    # one of 24 tokens gets 0 - 0.5 * 1 = -0.5, a correct one of 6 tokens 1 - 0.125 = 0.875
    out = length_penalized_rewards(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([12, 24, 6]), 0.5, 24)
    assert out.tolist() == [0.75, -0.5, 0.875]
    assert length_penalized_rewards(torch.tensor([1.0]), torch.tensor([24]), 0.0, 24).tolist() == [1.0]

"""The RL arms: each one's advantages on one shared batch (METHOD.md (8)-(13), (21)), and the
registry (moved from tests/mrt_core/test_advantages.py with their assertions)."""

import pytest
import torch

from mrt_core.advantages import GroupedRollouts
from mrt_lib.config import RlConfig
from mrt_lib.rl.arms import ARM_NAMES, REGISTRY, get_arm


def adv(arm: str, batch: GroupedRollouts, alpha: float, star: dict | None = None, **settings) -> torch.Tensor:
    """The advantages of ``arm`` with ``rl.alpha = alpha`` (and the STaR thresholds)."""
    return get_arm(arm).advantages(batch, RlConfig(alpha=alpha, **(star or {}), **settings))


def _batch(rewards, j, answer_now=None, progress=None, n_episodes=None):
    """P=1 prefix, G=4 samples, T=3 tokens: episode 0, episode 1, then the answer (index k)."""
    rewards = torch.tensor([rewards], dtype=torch.float32)
    k = 2
    progress = torch.zeros(1, 4, k) if progress is None else torch.tensor([progress])
    return GroupedRollouts(
        rewards=rewards, j_prefix=torch.tensor([j]),
        answer_now=torch.zeros(1, 4, dtype=torch.bool) if answer_now is None else torch.tensor([answer_now]),
        progress=progress, n_episodes=torch.full((1, 4), k) if n_episodes is None else torch.tensor([n_episodes]),
        token_episode=torch.tensor([[[0, 1, k]] * 4]), mask=torch.ones(1, 4, 3, dtype=torch.bool),
    )


def test_arm_advantages_hand_values():
    b = _batch([1, 0, 0, 1], 0.25, progress=[[0.5, 0.25], [0.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    # grpo: mean 0.5, std 0.5 -> [1, -1, -1, 1] on every token
    assert adv("grpo", b, 1.0)[0, :, 0].tolist() == pytest.approx([1, -1, -1, 1], abs=1e-5)
    # mrt_prefix: (1 + 1)(r - 0.25) = [1.5, -0.5, -0.5, 1.5]
    assert adv("mrt_prefix", b, 1.0)[0, :, 2].tolist() == [1.5, -0.5, -0.5, 1.5]
    # mrt_dense, alpha 2: sample 0 tokens = 1 + 2 * [0.5, 0.25, 0 (answer)] = [2, 1.5, 1]
    assert adv("mrt_dense", b, 2.0)[0, 0].tolist() == pytest.approx([2.0, 1.5, 1.0], abs=1e-5)
    assert adv("mrt_dense", b, 2.0)[0, 3].tolist() == pytest.approx([1.0, 2.0, 1.0], abs=1e-5)
    # mrt_star: keep correct traces with total progress >= 0.5 and no zero-progress episode:
    # sample 0 (0.75, none zero) kept; sample 3 has a zero episode -> dropped
    star = {"star_min_total_progress": 0.5, "star_max_zero_share": 0.0, "zero_threshold": 0.01}
    assert adv("mrt_star", b, 1.0, star)[0, :, 1].tolist() == [1.0, 0.0, 0.0, 0.0]
    # ... but with only its first episode real (n_episodes 1), sample 3 (progress 0.0) fails on total
    b1 = _batch([1, 0, 0, 1], 0.25, progress=[[0.5, 0.25], [0.0, 0.0], [0.0, 0.0], [0.6, 0.0]], n_episodes=[2, 2, 2, 1])
    assert adv("mrt_star", b1, 1.0, star)[0, :, 1].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_mixed_arm_normalises_answer_now_with_continuations():
    # answer-now samples [0, 0], continuations [1, 0]: as in test_mixed_group_normalises_...
    b = _batch([0, 0, 1, 0], 0.1, answer_now=[True, True, False, False])
    got = adv("mrt_mixed", b, 1.0)[0, :, 0].tolist()
    assert got == pytest.approx([-0.57735, -0.57735, 1.73205, -0.57735], abs=1e-4)
    with pytest.raises(ValueError, match="answer-now and continue"):
        adv("mrt_mixed", _batch([0, 0, 1, 0], 0.1), 1.0)


def test_arm_advantages_vanish_off_the_mask_and_differ_from_grpo_where_they_should():
    b = _batch([1, 0, 0, 1], 0.25, progress=[[0.5, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    masked = GroupedRollouts(**{**b.__dict__, "mask": torch.zeros(1, 4, 3, dtype=torch.bool)})
    for arm in ("grpo", "mrt_prefix", "mrt_dense"):
        assert adv(arm, masked, 1.0).abs().max() == 0
    # the termination baseline moves with J (GRPO does not): the bonus is not cancelled
    low = adv("mrt_prefix", _batch([1, 0, 0, 1], 0.1), 1.0)
    high = adv("mrt_prefix", _batch([1, 0, 0, 1], 0.9), 1.0)
    assert not torch.allclose(low, high)


def test_length_penalty_arm_hand_values():
    # C_0 = 24 (rl.train_budget), lambda 0.5; rewards [1, 0, 1, 0], tokens [12, 24, 6, 0]:
    # R = [1 - 0.25, 0 - 0.5, 1 - 0.125, 0] = [0.75, -0.5, 0.875, 0]; mean 0.28125;
    # deviations [0.46875, -0.78125, 0.59375, -0.28125]; population std = sqrt(mean of squares)
    # = sqrt((0.2197265625 + 0.6103515625 + 0.3525390625 + 0.0791015625) / 4) = sqrt(0.3154296875)
    b = _batch([1, 0, 1, 0], 0.25)
    b = GroupedRollouts(**{**b.__dict__, "gen_tokens": torch.tensor([[12, 24, 6, 0]])})
    std = 0.3154296875 ** 0.5
    want = [d / (std + 1e-6) for d in (0.46875, -0.78125, 0.59375, -0.28125)]
    got = adv("length_penalty", b, 1.0, length_penalty=0.5, train_budget=24)
    assert got[0, :, 0].tolist() == pytest.approx(want, abs=1e-5)
    assert got[0, :, 1].tolist() == pytest.approx(want, abs=1e-5)  # constant over the sample's tokens
    # lambda 0 is GRPO; a longer correct trace gets less than a shorter one
    assert adv("length_penalty", b, 1.0, length_penalty=0.0).tolist() == adv("grpo", b, 1.0).tolist()
    assert got[0, 0, 0] < got[0, 2, 0]
    with pytest.raises(ValueError, match="gen_tokens"):
        adv("length_penalty", _batch([1, 0, 1, 0], 0.25), 1.0)


def test_registry_names_every_arm_once_and_the_config_refuses_others():
    assert set(ARM_NAMES) == {"grpo", "mrt_prefix", "mrt_mixed", "mrt_dense", "mrt_dense_live", "mrt_star",
                              "length_penalty"}
    assert all(REGISTRY[name].name == name for name in ARM_NAMES)
    assert [n for n in ARM_NAMES if get_arm(n).answer_now] == ["mrt_mixed"]
    assert {n: get_arm(n).probes for n in ARM_NAMES if get_arm(n).probes != "none"} == {
        "mrt_prefix": "prefix", "mrt_dense": "episodes", "mrt_dense_live": "episodes", "mrt_star": "episodes"}
    with pytest.raises(ValueError, match="unknown RL arm 'ppo'.*grpo"):
        RlConfig(arms=["grpo", "ppo"])
    with pytest.raises(ValueError, match="unknown RL arm"):
        RlConfig(overrides={"ppo": {"lr": 1e-3}})
    # each arm's own settings may be tuned per arm; the rest stay matched
    RlConfig(overrides={"length_penalty": {"length_penalty": 0.3}})
    with pytest.raises(ValueError, match="cannot differ between arms"):
        RlConfig(overrides={"grpo": {"train_budget": 30}})

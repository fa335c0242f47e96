"""The tuning flow's settings reach the arm, even where the profile already holds tuned ones."""

from pathlib import Path

from flows.rl_tuning import settings, tuning_params

HEADLINE = Path(__file__).resolve().parents[2] / "profiles" / "params_headline.yaml"


def test_every_setting_is_what_the_arm_trains_with():
    # the headline profile tunes grpo to lr 3e-4, beta 0.05: a setting must not be overridden by it
    for arm in ("grpo", "mrt_prefix", "mrt_dense", "mrt_dense_live", "length_penalty"):
        seen = set()
        for setting in settings(arm):
            cfg = tuning_params(str(HEADLINE), arm, setting).rl.for_arm(arm)
            got = tuple(getattr(cfg, key.split(".")[1]) for key in setting)
            assert got == tuple(setting.values())
            seen.add(got)
        assert len(seen) == 4  # four distinct settings per arm

"""The champion gate on hand-made cases (paired per-problem values)."""

import pytest

from mrt_lib.champion import decide


def test_the_first_candidate_becomes_champion():
    v = decide("regret", 0.01, None, [0.5, 0.6])
    assert v.promote and v.reason.startswith("first candidate")


def test_a_better_challenger_is_promoted():
    # regret gains champion - challenger = 0.10, 0.12, 0.08, 0.10: mean 0.10, s = 0.0163,
    # t(0.975, 3) = 3.182 -> half width 3.182 * 0.0163 / 2 = 0.026: interval [0.074, 0.126]
    v = decide("regret", 0.05, [0.6, 0.7, 0.5, 0.6], [0.5, 0.58, 0.42, 0.5])
    assert v.promote
    assert v.compared["gain"] == pytest.approx(0.10)
    assert v.compared["gain_low"] == pytest.approx(0.10 - 3.1824 * 0.016330 / 2, abs=1e-3)


def test_a_worse_challenger_is_not():
    v = decide("accuracy", 0.0, [0.9, 0.8, 0.85], [0.7, 0.6, 0.66])  # gains -0.2, -0.2, -0.19
    assert not v.promote and "accuracy worse by 0.1967" in v.reason


def test_a_tie_within_the_margin_keeps_the_champion():
    v = decide("regret", 0.05, [0.5, 0.6, 0.7], [0.49, 0.58, 0.69])  # gains 0.01, 0.02, 0.01
    assert not v.promote and "within the margin 0.05" in v.reason


def test_a_gain_whose_interval_includes_zero_keeps_the_champion():
    v = decide("accuracy", 0.01, [0.5, 0.5, 0.5], [0.9, 0.3, 0.6])  # gains 0.4, -0.2, 0.1: mean 0.1
    assert not v.promote and "includes 0" in v.reason


def test_a_missing_metric_is_never_promoted():
    assert not decide("regret", 0.01, [0.5], None).promote
    v = decide("regret", 0.01, [], [0.5, 0.4])
    assert not v.promote and "champion has no regret" in v.reason
    with pytest.raises(ValueError, match="different problems"):
        decide("regret", 0.01, [0.5, 0.4], [0.5])
    with pytest.raises(ValueError, match="unknown gate metric"):
        decide("loss", 0.01, [0.5], [0.4])

"""Backtrack construction (METHOD.md (18))."""

import pytest

from mrt_core.backtrack import BacktrackPlan, choose_backtrack_step, plan_trace, success_gain


def test_choose_best_prefix_ties_to_the_later_step():
    assert choose_backtrack_step([0.0, 0.125, 0.5]) == 2
    assert choose_backtrack_step([0.25, 0.5, 0.5]) == 2  # tie: keep more confirmed work
    assert choose_backtrack_step([0.5, 0.25, 0.0]) == 0
    with pytest.raises(ValueError):
        choose_backtrack_step([])


def test_success_gain_over_restarting():
    # success from the beginning 0.125, from step 2: 0.5 -> gain 0.375
    assert success_gain([0.125, 0.25, 0.5], 2) == 0.375


def test_plans_for_each_variant():
    # first attempt "5", "2", "3" failed at step 2; the resampled continuation from step 2 is "7"
    first, cont = ("5", "2", "3"), ("7",)
    shared = plan_trace("backtrack_shared_prefix", first, 2, cont, "^", "0123")
    assert shared.actions() == ("5", "2", "3", "^", "2", "7")
    assert plan_trace("backtrack_no_repeat", first, 2, cont, "^", "0123") == BacktrackPlan(first, ("^", "2"), cont)
    # restart writes the kept steps again and has no backtrack episode
    assert plan_trace("restart", first, 2, cont, "^", "0123").actions() == ("5", "2", "3", "5", "2", "7")
    with pytest.raises(ValueError, match="variant"):
        plan_trace("sideways", first, 2, cont, "^", "0123")
    with pytest.raises(ValueError, match="outside"):
        plan_trace("restart", first, 5, cont, "^", "0123")

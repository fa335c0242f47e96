"""The ledger's arithmetic and the matching rule, on numbers worked out by hand."""

import pytest

from mrt_core.compute import Ledger, match_ratio, needs_more_steps


def test_ledger_sums_by_kind_and_counts_tokens_once():
    a, b = Ledger(10, 20, 5), Ledger(1, 2, 3)
    assert a + b == Ledger(11, 22, 8)
    assert (a + b).tokens == 41  # 11 + 22 + 8


def test_flops_weigh_a_trained_token_three_forwards():
    # 2 * 100 params * (10 generated + 20 teacher-forced + 3 * 5 trained) = 200 * 45
    assert Ledger(10, 20, 5).flops(100) == 9000.0
    assert Ledger(10, 20, 5).amount("flops", 100) == 9000.0
    assert Ledger(10, 20, 5).amount("tokens", 100) == 35.0
    assert Ledger(10, 20, 5).as_dict(100) == {"generated": 10, "teacher_forced": 20, "trained": 5,
                                              "tokens": 35, "flops": 9000.0}


def test_unit_must_be_known():
    with pytest.raises(ValueError, match="'tokens' or 'flops'"):
        Ledger(1, 1, 1).amount("seconds", 10)


def test_a_matched_arm_runs_its_own_steps_then_until_the_target():
    assert needs_more_steps(spent=500.0, target=100.0, steps_done=10, min_steps=20)  # its own steps first
    assert needs_more_steps(spent=99.9, target=100.0, steps_done=25, min_steps=20)
    assert not needs_more_steps(spent=100.0, target=100.0, steps_done=25, min_steps=20)
    assert not needs_more_steps(spent=100.0, target=40.0, steps_done=20, min_steps=20)  # over already: no extra


def test_stopping_at_the_first_step_past_the_target_overshoots_less_than_a_step():
    # steps of cost 7 against a target of 100 after 10 own steps: 10*7=70, then 11..15 -> 105 >= 100
    spent, steps = 0.0, 0
    while needs_more_steps(spent, 100.0, steps, 10):
        spent, steps = spent + 7.0, steps + 1
    assert (steps, spent) == (15, 105.0)
    assert match_ratio(spent, 100.0) == pytest.approx(1.05)


def test_negative_or_empty_targets_are_refused():
    with pytest.raises(ValueError, match="negative"):
        needs_more_steps(-1.0, 10.0, 0, 1)
    with pytest.raises(ValueError, match="positive"):
        match_ratio(10.0, 0.0)

"""Progress and regret (METHOD.md (4)-(7)): hand-worked values and properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrt_core.regret import (
    _max_const_linear_area,
    area_under_curve,
    cumulative_regret,
    normalized_regret,
    progress,
    regret_curve,
    votes_envelope_area,
    votes_normalized_regret,
    zero_progress_share,
)

J = np.array([0.125, 0.25, 0.25, 1.0])  # J(c_0..c_3): one useless episode, then the solve


def test_progress_is_the_gain_of_each_episode():
    # 0.25 - 0.125, 0.25 - 0.25, 1.0 - 0.25
    assert progress(J).tolist() == [0.125, 0.0, 0.75]
    assert zero_progress_share(progress(J), threshold=1e-3) == pytest.approx(1 / 3)


def test_cumulative_regret_oracle_and_comparator():
    # oracle: 1 - [0.25, 0.25, 1.0] = [0.75, 0.75, 0] -> running sums [0.75, 1.5, 1.5]
    assert cumulative_regret(J).tolist() == [0.75, 1.5, 1.5]
    # comparator [0.5, 1, 1]: [0.25, 0.75, 0] -> [0.25, 1.0, 1.0]
    assert cumulative_regret(J, np.array([0.5, 1.0, 1.0])).tolist() == [0.25, 1.0, 1.0]


def test_normalized_regret_hand_values():
    tokens, j = np.array([0, 4, 8]), np.array([0.0, 0.5, 1.0])
    # C=8: area = (0+0.5)/2*4 + (0.5+1)/2*4 = 1 + 3 = 4 -> 1 - 4/8 = 0.5
    assert normalized_regret(tokens, j, 8) == pytest.approx(0.5)
    # C=6: p(6) = 0.75, area = 1 + (0.5+0.75)/2*2 = 2.25 -> 1 - 2.25/6 = 0.625
    assert normalized_regret(tokens, j, 6) == pytest.approx(0.625)
    # C=12: held at 1 after the trace: area = 4 + 4 -> 1 - 8/12 = 1/3
    assert normalized_regret(tokens, j, 12) == pytest.approx(1 / 3)


def test_regret_curve_shape_after_the_solve_is_deficit_over_budget():
    # Once p(t) = 1 for t >= T_k, regret(C) = D / C with D = integral of (1 - p) up to T_k:
    # here D = 8 - 4 = 4, so regret(C) * C == 4 for every C >= 8 (a hyperbola).
    tokens, j = np.array([0, 4, 8]), np.array([0.0, 0.5, 1.0])
    budgets = np.array([8, 10, 16, 32, 64])
    assert (regret_curve(tokens, j, budgets) * budgets) == pytest.approx(np.full(5, 4.0))


def test_max_of_constant_and_line_with_a_crossing():
    # c = 0.4 and the line 0.2 -> 0.6 on [0, 2] cross at x = 1:
    # [0,1]: 0.4 * 1 = 0.4;  [1,2]: (0.4 + 0.6)/2 * 1 = 0.5  -> 0.9
    assert _max_const_linear_area(0.4, 0, 2, 0.2, 0.6) == pytest.approx(0.9)
    assert _max_const_linear_area(0.1, 0, 2, 0.2, 0.6) == pytest.approx(0.8)  # line above: its area
    assert _max_const_linear_area(0.9, 0, 2, 0.2, 0.6) == pytest.approx(1.8)  # constant above


def test_votes_envelope_regret_hand_values():
    # One episode: T = [0, 4], J = [0.2, 0.6]; one vote costs 1 token.
    # maj@(1,2,4,8) at c_0 = (0.2, 0.5, 0.7, 0.9); at c_1 all 0.6 then 0.8 for 4+ votes.
    tokens, j = np.array([0, 4]), np.array([0.2, 0.6])
    maj = np.array([[0.2, 0.5, 0.7, 0.9], [0.6, 0.6, 0.8, 0.8]])
    # C=4: [0,1] votes 0.2 < line 0.2->0.3: 0.25; [1,3] votes 0.5 >= line 0.3->0.5: 1.0;
    #      [3,4] votes 0.7 >= line 0.5->0.6: 0.7  => e = 1.95; own = (0.2+0.6)/2*4 = 1.6
    assert votes_envelope_area(tokens, j, maj, 1.0, 4) == pytest.approx(1.95)
    assert votes_normalized_regret(tokens, j, maj, 1.0, 4) == pytest.approx(0.35 / 1.95)
    # C=6 adds [4,6] after the trace: votes at c_1 (0.6 for 1-2 votes) vs held 0.6: 1.2
    # e = 3.15, own = 2.8 -> 0.35 / 3.15
    assert votes_normalized_regret(tokens, j, maj, 1.0, 6) == pytest.approx(0.35 / 3.15)


def test_an_episode_with_no_counted_tokens_is_a_jump():
    # T = [0, 10, 10, 20], J = [0, 0.2, 0.6, 0.6]: the second episode counts no tokens, so p rises
    # 0 -> 0.2 over [0, 10], jumps to 0.6 at 10 and stays. Area to 20: 10 * 0.1 + 10 * 0.6 = 7.
    # (np.interp takes 0.6 at t = 10 for the first segment too: area 9, regret 0.55.)
    tokens, j = np.array([0, 10, 10, 20]), np.array([0, 0.2, 0.6, 0.6])
    assert area_under_curve(tokens, j, 20) == pytest.approx(7.0)
    assert normalized_regret(tokens, j, 20) == pytest.approx(0.65)
    assert normalized_regret(tokens, j, 10) == pytest.approx(1 - 1.0 / 10)  # the budget ends at the jump
    assert normalized_regret(tokens, j, 30) == pytest.approx(1 - 13.0 / 30)  # held at 0.6 after the trace
    # votes that never help: the envelope is the trace's own curve, 0.6 + 1.6 = 2.2 over [0, 4]
    t2, j2 = np.array([0, 2, 2, 4]), np.array([0.2, 0.4, 0.8, 0.8])
    assert votes_envelope_area(t2, j2, np.zeros((4, 4)), 1.0, 4) == pytest.approx(2.2)
    assert votes_normalized_regret(t2, j2, np.zeros((4, 4)), 1.0, 4) == pytest.approx(0.0)


def test_votes_regret_is_zero_when_votes_never_help():
    tokens, j = np.array([0, 4]), np.array([0.2, 0.6])
    maj = np.array([[0.2, 0.2, 0.2, 0.2], [0.6, 0.6, 0.6, 0.6]])
    assert votes_normalized_regret(tokens, j, maj, 1.0, 6) == pytest.approx(0.0)


curves = st.integers(1, 6).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(1, 20), min_size=k, max_size=k),
        st.lists(st.floats(0, 1), min_size=k + 1, max_size=k + 1),
    )
)


@settings(max_examples=150, deadline=None)
@given(curves, st.floats(1, 200))
def test_regret_against_oracle_is_never_negative_and_zero_for_the_oracle(curve, budget):
    lengths, j = curve
    tokens = np.concatenate([[0], np.cumsum(lengths)])
    j = np.array(j)
    assert -1e-12 <= normalized_regret(tokens, j, budget) <= 1 + 1e-12
    assert (cumulative_regret(j) >= -1e-12).all()
    assert normalized_regret(tokens, np.ones_like(j), budget) == pytest.approx(0.0, abs=1e-12)
    assert (cumulative_regret(np.ones_like(j)) == 0).all()
    assert area_under_curve(tokens, j, budget) <= budget + 1e-9


@settings(max_examples=100, deadline=None)
@given(curves, st.floats(1, 200), st.floats(0.5, 5))
def test_votes_envelope_never_below_the_trace(curve, budget, vote_tokens):
    lengths, j = curve
    tokens = np.concatenate([[0], np.cumsum(lengths)])
    j = np.sort(np.array(j))  # a trace that never loses accuracy ...
    maj = np.tile(j[:, None], (1, 4))  # ... and votes that add nothing: the envelope is the trace
    assert votes_normalized_regret(tokens, j, maj, vote_tokens, budget) == pytest.approx(0.0, abs=1e-9)
    better = np.clip(maj + 0.1, 0, 1)
    assert votes_normalized_regret(tokens, j, better, vote_tokens, budget) >= -1e-12

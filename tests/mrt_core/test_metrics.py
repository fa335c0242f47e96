import itertools
from collections import Counter
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrt_core.metrics import (
    EfficiencyAtLevel,
    accuracy,
    accuracy_vs_budget,
    bootstrap_ci,
    gain_ratio,
    maj_at_k,
    maj_at_k_batch,
    pass_at_k,
    seed_interval,
    t_quantile,
    token_efficiency,
    tokens_to_reach,
)


def test_accuracy_is_mean_over_samples_then_problems():
    # problem 0: 2/4 right, problem 1: 4/4 right -> (0.5 + 1.0) / 2 = 0.75
    assert accuracy(np.array([[1, 0, 1, 0], [1, 1, 1, 1]])) == 0.75


def test_bootstrap_ci_brackets_mean_and_degenerates_for_constant():
    x = np.array([0.0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.75, 0.5])
    lo, hi = bootstrap_ci(x, 2000, seed=0)
    assert lo < x.mean() < hi and 0 <= lo and hi <= 1
    assert bootstrap_ci(np.full(5, 0.4), 100, seed=0) == pytest.approx((0.4, 0.4))


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="problems, samples"):
        accuracy(np.array([1, 0]))


# --- accuracy_vs_budget ------------------------------------------------------------------------


def test_accuracy_vs_budget_is_accuracy_per_budget():
    # budget 0: (1/2 + 0/2) / 2 = 0.25; budget 1: (2/2 + 1/2) / 2 = 0.75
    correct = np.array([[[1, 0], [0, 0]], [[1, 1], [1, 0]]])
    np.testing.assert_allclose(accuracy_vs_budget(correct), [0.25, 0.75])
    with pytest.raises(ValueError, match="budgets, problems, samples"):
        accuracy_vs_budget(np.array([[1, 0]]))


# --- pass@k, METHOD.md (15) ----------------------------------------------------------------------


def test_pass_at_k_hand_values():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # k=1 is the fraction correct: 3/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # fewer wrong samples (2) than k (3): every 3-subset holds a correct one
    assert pass_at_k(4, 2, 3) == 1.0
    # no correct samples -> 0; all correct -> 1
    assert pass_at_k(8, 0, 4) == 0.0 and pass_at_k(8, 8, 4) == 1.0


def test_pass_at_k_is_stable_for_large_n():
    # n=10000, c=2, k=5000: C(n-2,k)/C(n,k) = (n-k)(n-k-1) / (n(n-1)) = 5000*4999 / (10000*9999),
    # so pass@k = 1 - 24995000/99990000; the binomials themselves have ~3000 digits
    assert pass_at_k(10000, 2, 5000) == pytest.approx(1 - 24995000 / 99990000, rel=1e-10)


def test_pass_at_k_broadcasts_arrays():
    n = np.array([4, 5, 10])
    out = pass_at_k(n, np.array([1, 2, 3]), 2)
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    # per element: 0.5 (above), 0.7 (above), 1 - C(7,2)/C(10,2) = 1 - 21/45 = 24/45
    np.testing.assert_allclose(out, [0.5, 0.7, 24 / 45])
    # scalar c broadcast against array n: c=0 -> all zeros
    np.testing.assert_array_equal(pass_at_k(n, 0, 2), [0.0, 0.0, 0.0])
    assert isinstance(pass_at_k(4, 1, 2), float)


@pytest.mark.parametrize(
    ("n", "c", "k", "match"),
    [
        (3, 1, 4, "exceeds n"),
        (4, 5, 2, "at most n"),
        (4, -1, 2, "non-negative"),
        (-4, 0, 2, "non-negative"),
        (4, 1, 0, "positive integer"),
        (4, 1, -1, "positive integer"),
        (4.5, 1, 2, "integer counts"),
    ],
)
def test_pass_at_k_rejects_bad_counts(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def _pass_at_k_brute(n: int, c: int, k: int) -> float:
    # samples 0..c-1 are the correct ones; count k-subsets that contain at least one of them
    subsets = list(itertools.combinations(range(n), k))
    return sum(min(s) < c for s in subsets) / len(subsets)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_pass_at_k_matches_enumeration(data):
    n = data.draw(st.integers(1, 8))
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_brute(n, c, k), abs=1e-12)


# --- maj@k, METHOD.md (16) -------------------------------------------------------------------------


def test_maj_at_k_tie_of_two_scores_half():
    # k=4 takes all four: a has 2 votes, b has 2 -> tie of 2 including the reference -> 1/2
    assert maj_at_k(["a", "b", "a", "b"], "a", 4) == 0.5


def test_maj_at_k_two_of_four_enumerated_by_hand():
    # the 6 subsets of ["a","b","a","b"] (indices): 01 a,b tie 1/2; 02 a,a 1; 03 a,b 1/2;
    # 12 b,a 1/2; 13 b,b 0; 23 a,b 1/2 -> (0.5 + 1 + 0.5 + 0.5 + 0 + 0.5) / 6 = 3/6 = 0.5
    assert maj_at_k(["a", "b", "a", "b"], "a", 2) == pytest.approx(0.5)
    # ["a","a","b",None], k=2: 01 a,a 1; 02 a,b 1/2; 03 a 1; 12 a,b 1/2; 13 a 1; 23 b 0 -> 4/6
    assert maj_at_k(["a", "a", "b", None], "a", 2) == pytest.approx(2 / 3)


def test_maj_at_k_missing_answers_do_not_vote():
    # ["a","a","b",None], k=3: 012 a,a,b 1; 013 a,a 1; 023 a,b tie 1/2; 123 a,b tie 1/2 -> 3/4
    assert maj_at_k(["a", "a", "b", None], "a", 3) == pytest.approx(0.75)
    # [None,None,"a"], k=2: 01 no votes 0; 02 a 1; 12 a 1 -> 2/3
    assert maj_at_k([None, None, "a"], "a", 2) == pytest.approx(2 / 3)
    # nobody answered, or nobody gave the reference -> 0
    assert maj_at_k([None, None], "a", 2) == 0.0
    assert maj_at_k(["b", "c", None], "a", 2) == 0.0


def test_maj_at_k_three_way_tie_and_single_sample():
    # one vote each for a, b, c -> tie of 3 that includes the reference -> 1/3
    assert maj_at_k(["a", "b", "c"], "a", 3) == pytest.approx(1 / 3)
    # k=1: each sample is its own majority -> fraction correct, missing counted wrong: 2/5
    assert maj_at_k(["a", "b", "a", None, "c"], "a", 1) == pytest.approx(0.4)


def test_maj_at_k_monte_carlo_agrees_with_exact():
    # 20 samples: 8 "a", 7 "b", 3 "c", 2 missing; C(20,10) = 184756 subsets
    answers = ["a"] * 8 + ["b"] * 7 + ["c"] * 3 + [None] * 2
    exact = maj_at_k(answers, "a", 10, max_subsets=200_000)
    estimate = maj_at_k(answers, "a", 10, max_subsets=20_000, seed=1)
    # Monte Carlo standard error <= 0.5 / sqrt(20000) ~ 0.0035; allow ~4 of them
    assert estimate == pytest.approx(exact, abs=0.015)
    assert estimate != exact  # the estimate path really ran (a seeded, deterministic draw)
    assert maj_at_k(answers, "a", 10, seed=1) == estimate  # same seed, same estimate


def _maj_at_k_reference(answers, reference, k):
    # plain-loop restatement of METHOD.md (16) over every k-subset
    scores = []
    for subset in itertools.combinations(answers, k):
        votes = Counter(a for a in subset if a is not None)
        if not votes:
            scores.append(0.0)
            continue
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        scores.append(1 / len(winners) if reference in winners else 0.0)
    return sum(scores) / len(scores)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_maj_at_k_matches_plain_loop(data):
    answers = data.draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=8))
    k = data.draw(st.integers(1, len(answers)))
    assert maj_at_k(answers, "a", k) == pytest.approx(_maj_at_k_reference(answers, "a", k), abs=1e-12)


def test_maj_at_k_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be an integer in"):
        maj_at_k(["a", "b"], "a", 3)
    with pytest.raises(ValueError, match="k must be an integer in"):
        maj_at_k(["a", "b"], "a", 0)


def test_maj_at_k_batch_is_mean_over_problems():
    # k=4. problem 0: ["a","b","a","b"] tie of 2 -> 0.5; problem 1: ["x","x","y","z"] x wins -> 1
    # mean (0.5 + 1) / 2 = 0.75
    assert maj_at_k_batch([["a", "b", "a", "b"], ["x", "x", "y", "z"]], ["a", "x"], 4) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="one reference per problem"):
        maj_at_k_batch([["a"]], ["a", "b"], 1)


# --- tokens_to_reach and token_efficiency, METHOD.md (17) ---------------------------------------------

BUDGETS_A = [100, 200, 400]
ACC_A = [0.2, 0.5, 0.9]
BUDGETS_B = [100, 200, 400, 800]
ACC_B = [0.1, 0.3, 0.7, 0.8]


def test_tokens_to_reach_interpolates():
    # level 0.7 lies on segment (200, 0.5)-(400, 0.9): 200 + (0.7-0.5)/(0.9-0.5) * 200 = 300
    assert tokens_to_reach(BUDGETS_A, ACC_A, 0.7) == pytest.approx(300)
    # level 0.5 is hit exactly at the point (200, 0.5)
    assert tokens_to_reach(BUDGETS_A, ACC_A, 0.5) == pytest.approx(200)
    # already reached at the first point -> first budget
    assert tokens_to_reach(BUDGETS_A, ACC_A, 0.1) == 100
    # first crossing of a non-monotone curve: (0, 0.2)-(100, 0.6): 0 + (0.5-0.2)/(0.6-0.2) * 100 = 75
    assert tokens_to_reach([0, 100, 200, 300], [0.2, 0.6, 0.4, 0.8], 0.5) == pytest.approx(75)


def test_tokens_to_reach_never_reached_is_none():
    assert tokens_to_reach(BUDGETS_A, ACC_A, 0.95) is None


def test_tokens_to_reach_rejects_unordered_budgets():
    with pytest.raises(ValueError, match="strictly increasing"):
        tokens_to_reach([100, 100, 200], [0.1, 0.2, 0.3], 0.2)
    with pytest.raises(ValueError, match="one length"):
        tokens_to_reach([100, 200], [0.1], 0.2)


def test_token_efficiency_ratios_and_notes():
    eff = token_efficiency(BUDGETS_A, ACC_A, BUDGETS_B, ACC_B, [0.5, 0.8, 0.85, 0.95])
    # 0.5: A at 200 (a point); B on (200, 0.3)-(400, 0.7): 200 + 0.2/0.4 * 200 = 300 -> 300/200 = 1.5
    assert eff[0] == EfficiencyAtLevel(0.5, pytest.approx(200), pytest.approx(300), pytest.approx(1.5), "")
    # 0.8: A 200 + 0.3/0.4 * 200 = 350; B at the point 800 -> 800/350
    assert eff[1].tokens_a == pytest.approx(350) and eff[1].ratio == pytest.approx(800 / 350)
    # 0.85: A 200 + 0.35/0.4 * 200 = 375; B tops out at 0.8
    assert eff[2].tokens_a == pytest.approx(375) and eff[2].tokens_b is None
    assert eff[2].ratio is None and eff[2].note == "B never reaches 0.85"
    assert (eff[3].ratio, eff[3].note) == (None, "neither A nor B reaches 0.95")


def test_token_efficiency_note_when_a_never_reaches():
    (eff,) = token_efficiency(BUDGETS_B, ACC_B, BUDGETS_A, ACC_A, [0.85])
    assert eff.tokens_a is None and eff.ratio is None and eff.note == "A never reaches 0.85"
    with pytest.raises(FrozenInstanceError):
        eff.ratio = 1.0


# --- intervals over seeds, METHOD.md (19) --------------------------------------------------------

@pytest.mark.parametrize("df, expected", [
    (1, 12.706205),  # Cauchy: tan(pi * 0.475)
    (2, 4.302653),   # closed form (2p - 1) / sqrt(2p(1 - p)) at p = 0.975
    (4, 2.776445),   # tables
    (30, 2.042272),
])
def test_t_quantile_matches_closed_forms_and_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-5)


def test_seed_interval_hand_value():
    # seeds 0.5, 0.6, 0.7: mean 0.6, s = 0.1, half width 4.302653 * 0.1 / sqrt(3) = 0.248414
    mean, lo, hi = seed_interval(np.array([0.5, 0.6, 0.7]))
    assert mean == pytest.approx(0.6)
    assert (lo, hi) == pytest.approx((0.6 - 0.248414, 0.6 + 0.248414), abs=1e-5)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_interval(np.array([0.5]))


def test_gain_ratio_only_over_a_positive_baseline_gain():
    assert gain_ratio(0.06, 0.02) == pytest.approx(3.0)
    assert gain_ratio(0.06, 0.0) is None and gain_ratio(0.06, -0.01) is None
    assert gain_ratio(-0.02, 0.04) == pytest.approx(-0.5)  # a loss against a real gain is a ratio
    assert gain_ratio(float("nan"), 0.04) is None

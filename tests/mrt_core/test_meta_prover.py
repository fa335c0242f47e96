"""Meta-prover requests and the two J estimators (METHOD.md (1)-(3))."""

import math

import numpy as np
import pytest

from mrt_core.meta_prover import (
    j_exact,
    j_sampled,
    probe_requests,
    probe_text,
    zero_progress_threshold,
)


def test_requests_cover_every_prefix_and_share_the_longest():
    # output "4>\n6<\nA:" with episodes ending at chars 3 and 6 (one token per char)
    group = probe_requests("r0", [(3, 3), (6, 6)], n_samples=8)
    assert [(r.context, r.char_end, r.n_samples) for r in group.requests] == [(0, 0, 8), (1, 3, 8), (2, 6, 8)]
    assert group.shared_tokens == 6
    assert probe_text("Q3:", "4>\n6<\n5=", group.requests[1], "A:") == "Q3:4>\nA:"
    without = probe_requests("r0", [(3, 3)], n_samples=2, include_prompt=False)
    assert [r.context for r in without.requests] == [1]


def test_requests_reject_shrinking_prefixes_and_zero_samples():
    with pytest.raises(ValueError, match="non-decreasing"):
        probe_requests("r", [(5, 5), (3, 3)], 4)
    with pytest.raises(ValueError, match="n_samples"):
        probe_requests("r", [(1, 1)], 0)


def test_j_sampled_is_the_mean_grade():
    # prefix 0: 3 of 4 answers right -> 0.75; prefix 1: none -> 0
    assert j_sampled(np.array([[1, 0, 1, 1], [0, 0, 0, 0]])).tolist() == [0.75, 0.0]


def test_j_exact_is_the_product_of_answer_token_probabilities():
    # P(answer) = 0.5 * 0.25 = 0.125; with the second token masked out: 0.5
    lp = np.log([[0.5, 0.25]])
    assert j_exact(lp) == pytest.approx([0.125])
    assert j_exact(lp, np.array([[True, False]])) == pytest.approx([0.5])
    with pytest.raises(ValueError, match="log-probabilities"):
        j_exact(np.array([[0.3]]))


def test_zero_progress_thresholds_follow_estimator_noise():
    assert zero_progress_threshold("sampled", 8) == pytest.approx(0.25)  # 1/sqrt(16)
    assert zero_progress_threshold("sampled", 32) == pytest.approx(0.125)  # 1/sqrt(64)
    assert zero_progress_threshold("exact") == 1e-3
    with pytest.raises(ValueError):
        zero_progress_threshold("bogus")


def test_exact_and_sampled_estimators_agree_within_sampling_error():
    # A forced-answer distribution over 2-token answers from the alphabet {a, b, c}:
    # position 0: P(a)=0.6, position 1 given a: P(b)=0.5 -> J(reference "ab") = 0.3 exactly.
    rng = np.random.default_rng(0)
    p0, p1 = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.3])
    exact = j_exact(np.log([[p0[0], p1[1]]]))[0]
    k = 4000
    first, second = rng.choice(3, size=k, p=p0), rng.choice(3, size=k, p=p1)
    grades = ((first == 0) & (second == 1)).astype(float)[None, :]
    sampled = j_sampled(grades)[0]
    assert exact == pytest.approx(0.3)
    assert abs(sampled - exact) < 4 * math.sqrt(exact * (1 - exact) / k)


# variance control (z = 2 keeps the hand arithmetic short)

def test_agresti_coull_standard_error_by_hand():
    from mrt_core.meta_prover import j_standard_error
    # s=0, k=4: p~ = (0 + 2) / (4 + 4) = 0.25, se = sqrt(0.25 * 0.75 / 8); all right gives the same
    # s=8, k=16: p~ = 10 / 20 = 0.5, se = sqrt(0.25 / 20)
    se = j_standard_error(np.array([0, 4, 8]), np.array([4, 4, 16]), z=2.0)
    assert se == pytest.approx([np.sqrt(0.0234375), np.sqrt(0.0234375), np.sqrt(0.0125)])
    with pytest.raises(ValueError, match="successes"):
        j_standard_error(np.array([5]), np.array([4]))


def test_adaptive_k_samples_until_narrow_or_k_max():
    from mrt_core.meta_prover import needs_more_samples
    # half-widths z*se: 0.306 (0 of 4), 0.224 (8 of 16); target 0.25
    assert needs_more_samples(np.array([0, 8]), np.array([4, 16]), 0.25, k_max=32, z=2.0).tolist() == [True, False]
    assert needs_more_samples(np.array([0]), np.array([4]), 0.25, k_max=4, z=2.0).tolist() == [False]


def test_progress_error_adds_the_ends_in_quadrature():
    from mrt_core.meta_prover import progress_standard_error
    assert progress_standard_error(np.array([0.3, 0.4, 0.0])) == pytest.approx([0.5, 0.4])


def test_shrinkage_rules_by_hand():
    from mrt_core.meta_prover import shrink_progress
    prog, se = np.array([0.5, 0.1, -0.6, 0.3]), np.array([0.25, 0.1, 0.25, 0.0])
    assert shrink_progress(prog, se, "none", z=2.0).tolist() == prog.tolist()
    # interval: |0.5| is not beyond 2*0.25, |0.1| not beyond 0.2, |-0.6| is; se = 0 is exact
    assert shrink_progress(prog, se, "interval", z=2.0).tolist() == [0.0, 0.0, -0.6, 0.3]
    # snr 2 -> 4/5; snr 1 -> 1/2; snr 2.4 -> 5.76/6.76; exact unchanged
    assert shrink_progress(prog, se, "snr", z=2.0) == pytest.approx([0.4, 0.05, -0.6 * 5.76 / 6.76, 0.3])
    with pytest.raises(ValueError, match="shrink"):
        shrink_progress(prog, se, "half")

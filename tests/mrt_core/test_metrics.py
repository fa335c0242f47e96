import numpy as np
import pytest

from mrt_core.metrics import accuracy, bootstrap_ci


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

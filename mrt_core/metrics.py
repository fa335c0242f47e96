"""Metrics on plain arrays.

Notation: ``correct[p, s]`` is 1 when sample s of problem p was right (0/1). Accuracy is the
mean over samples, then over problems (pass@1 averaged over n samples).
"""

from __future__ import annotations

import numpy as np


def accuracy(correct: np.ndarray) -> float:
    """Mean pass@1: ``mean_p mean_s correct[p, s]``. Shape (P, S) -> scalar."""
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(f"correct must be a non-empty (problems, samples) array, got shape {correct.shape}")
    return float(correct.mean())


def bootstrap_ci(per_problem: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over problems.

    Resamples problems (not samples) with replacement ``n_boot`` times; returns the
    ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled means. Shape (P,) -> pair.
    """
    x = np.asarray(per_problem, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"per_problem must be a non-empty 1-d array, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)

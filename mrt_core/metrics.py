"""Metrics on plain arrays.

Notation: ``correct[p, s]`` is 1 when sample s of problem p was right (0/1). Accuracy is the
mean over samples, then over problems (pass@1 averaged over n samples).

    (15) pass@k = 1 - C(n - c, k) / C(n, k)                       n samples, c correct
    (16) maj@k  = E_{S: |S| = k} [ majority answer of S is correct ]   ties split 1/m
    (17) tokens_to_reach(level) = min { t : p(t) >= level },  p piecewise linear in the budget
         token_efficiency(level) = tokens_to_reach_B(level) / tokens_to_reach_A(level)

Equation numbers refer to docs/METHOD.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def accuracy(correct: np.ndarray) -> float:
    """Mean pass@1 (METHOD.md (15) with k = 1): ``mean_p mean_s correct[p, s]``. Shape (P, S) -> scalar."""
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError(f"correct must be a non-empty (problems, samples) array, got shape {correct.shape}")
    return float(correct.mean())


def bootstrap_ci(per_problem: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over problems (of an accuracy, METHOD.md (15)).

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


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (for the interval
    over seeds in METHOD.md (19)). The CDF is 1/2 plus the integral of the density from 0
    (Simpson's rule, 4,000 panels), inverted by bisection: within 1e-8 of the exact quantile for
    the two-sided 95% level at any df, within about 1e-3 far in the tails of df = 1."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 4001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
        return 0.5 + (t / 12000) * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def seed_interval(per_seed: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds and its Student-t interval, METHOD.md (19): ``mean +- t_{(1+level)/2,
    n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation of the n seed values (each
    seed a full training run, so the seeds are the independent units). Shape (n >= 2,) ->
    (mean, low, high)."""
    x = np.asarray(per_seed, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"an interval over seeds needs at least 2 seeds, got shape {x.shape}")
    mean = float(x.mean())
    half = t_quantile((1 + level) / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def accuracy_vs_budget(correct: np.ndarray) -> np.ndarray:
    """Accuracy curve over token budgets: the points of the curve p(t) in METHOD.md (17).

    ``correct[b, p, s]`` is 1 when sample s of problem p was right under budget b. Each point is
    ``accuracy(correct[b])`` (mean pass@1, METHOD.md (15) with k = 1).
    Shape (n_budgets, P, S) -> (n_budgets,).
    """
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 3 or correct.size == 0:
        raise ValueError(f"correct must be a non-empty (budgets, problems, samples) array, got shape {correct.shape}")
    return np.array([accuracy(per_budget) for per_budget in correct])


# ---------------------------------------------------------------------------------------------
# pass@k, METHOD.md (15)


def _as_counts(name: str, x: np.ndarray | int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.any(arr != np.floor(arr)):
        raise ValueError(f"{name} must hold integer counts, got {x!r}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, got {x!r}")
    return arr.astype(np.int64)


def pass_at_k(n: np.ndarray | int, c: np.ndarray | int, k: int) -> float | np.ndarray:
    """Unbiased pass@k, METHOD.md (15): ``1 - C(n - c, k) / C(n, k)``.

    The chance that at least one of k samples drawn without replacement from n samples, c of
    them correct, is correct. ``n`` and ``c`` are ints or integer arrays (broadcast together);
    ``k`` is an int with ``1 <= k <= n``. Scalar inputs -> float; otherwise an array of the
    broadcast shape.

    Computed as the product ``C(n-c, k) / C(n, k) = prod_{j<k} (n - c - j) / (n - j)``: each
    factor lies in [0, 1], so no huge binomial is ever formed.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n_arr, c_arr = np.broadcast_arrays(_as_counts("n", n), _as_counts("c", c))
    if np.any(k > n_arr):
        raise ValueError(f"k={k} exceeds n={n_arr.min()}: pass@k needs at least k samples per problem")
    if np.any(c_arr > n_arr):
        raise ValueError(f"c must be at most n (correct samples among n), got c={c!r}, n={n!r}")
    all_wrong = np.ones(n_arr.shape)
    for j in range(k):
        # once n - c - j reaches 0 (fewer than k wrong samples) every k-subset holds a correct one
        all_wrong *= np.maximum(n_arr - c_arr - j, 0) / (n_arr - j)
    result = 1.0 - all_wrong
    return float(result) if result.ndim == 0 else result


# ---------------------------------------------------------------------------------------------
# maj@k, METHOD.md (16)

_MISSING = -1  # label of a missing answer: matches no other label, so it never votes
_CHUNK = 4096  # subsets scored at once; bounds memory at _CHUNK * max(n, distinct answers)


def _labels(answers: Sequence[str | None]) -> tuple[np.ndarray, int]:
    """Integer label per answer (``_MISSING`` for None) and the number of distinct answers."""
    ids: dict[str, int] = {}
    labels = [_MISSING if a is None else ids.setdefault(a, len(ids)) for a in answers]
    return np.array(labels, dtype=np.int64), len(ids)


def _subset_scores(subset_labels: np.ndarray, n_distinct: int, correct_label: int) -> np.ndarray:
    """Score of each subset: 1/m when the correct answer is among the m most voted, else 0.

    Shape (S, k) labels -> (S,) scores. A subset with no votes (all missing) scores 0.
    """
    votes = (subset_labels[:, :, None] == np.arange(n_distinct)).sum(axis=1)  # (S, n_distinct)
    top = votes.max(axis=1, keepdims=True)
    winners = (votes == top) & (top > 0)
    n_winners = np.maximum(winners.sum(axis=1), 1)  # 1 avoids 0/0 where no one voted
    return winners[:, correct_label] / n_winners


def _exact_subsets(n: int, k: int):
    """Every k-subset of range(n) (rows of index arrays), in chunks."""
    combos = itertools.combinations(range(n), k)
    while chunk := list(itertools.islice(combos, _CHUNK)):
        yield np.array(chunk)


def _random_subsets(n: int, k: int, count: int, rng: np.random.Generator):
    """``count`` k-subsets drawn uniformly (rows of index arrays), in chunks."""
    for start in range(0, count, _CHUNK):
        size = min(_CHUNK, count - start)
        # the first k of a uniform random permutation are a uniform k-subset
        yield np.argsort(rng.random((size, n)), axis=1)[:, :k]


def maj_at_k(
    answers: Sequence[str | None],
    reference: str,
    k: int,
    max_subsets: int = 20000,
    seed: int | Sequence[int] = 0,
) -> float:
    """maj@k of one problem, METHOD.md (16).

    ``answers``: the n sampled final answers (str, or None when missing; a missing answer does
    not vote). ``reference``: the correct answer (compared by string equality; normalise first).
    Returns the mean over k-subsets S of the n samples of the score of S: the answer with the
    most votes in S wins; a tie among m answers that includes the reference scores 1/m; a subset
    with no votes scores 0. Shape (n,) answers -> scalar in [0, 1].

    Exact (every k-subset enumerated) when ``C(n, k) <= max_subsets``; otherwise a Monte Carlo
    estimate over ``max_subsets`` uniform random k-subsets drawn with ``np.random.default_rng(seed)``,
    with standard error at most ``0.5 / sqrt(max_subsets)`` (scores lie in [0, 1]).
    """
    n = len(answers)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n={n}] (number of answers), got {k!r}")
    if max_subsets < 1:
        raise ValueError(f"max_subsets must be >= 1, got {max_subsets}")
    labels, n_distinct = _labels(answers)
    if reference not in answers:
        return 0.0  # the reference never wins a vote it is not in
    correct_label = int(labels[list(answers).index(reference)])
    n_subsets = math.comb(n, k)
    if n_subsets <= max_subsets:
        chunks = _exact_subsets(n, k)
        count = n_subsets
    else:
        chunks = _random_subsets(n, k, max_subsets, np.random.default_rng(seed))
        count = max_subsets
    total = sum(_subset_scores(labels[idx], n_distinct, correct_label).sum() for idx in chunks)
    return float(total / count)


def maj_at_k_batch(
    answers_per_problem: Sequence[Sequence[str | None]],
    references: Sequence[str],
    k: int,
    max_subsets: int = 20000,
    seed: int = 0,
) -> float:
    """Mean maj@k over problems, METHOD.md (16).

    ``answers_per_problem[p]``: the answers of problem p (lengths may differ, each >= k);
    ``references[p]``: its correct answer. Shape (P, n_p) -> scalar. Problem p's Monte Carlo
    draws (if any; see ``maj_at_k``) use the seed ``(seed, p)``, so problems draw independently.
    """
    if len(answers_per_problem) != len(references) or len(references) == 0:
        raise ValueError(
            f"need one reference per problem and at least one problem, got {len(answers_per_problem)} "
            f"answer lists and {len(references)} references"
        )
    scores = [
        maj_at_k(answers, ref, k, max_subsets=max_subsets, seed=(seed, p))
        for p, (answers, ref) in enumerate(zip(answers_per_problem, references))
    ]
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# tokens to reach an accuracy level and token efficiency, METHOD.md (17)


def _check_curve(budgets: np.ndarray, accuracies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(budgets, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    if b.ndim != 1 or b.shape != a.shape or b.size == 0:
        raise ValueError(f"budgets and accuracies must be non-empty 1-d arrays of one length, got {b.shape}, {a.shape}")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(a))):
        raise ValueError("budgets and accuracies must be finite")
    if np.any(np.diff(b) <= 0):
        raise ValueError(f"budgets must be strictly increasing, got {b.tolist()}")
    return b, a


def tokens_to_reach(budgets: np.ndarray, accuracies: np.ndarray, level: float) -> float | None:
    """Tokens to reach an accuracy level, METHOD.md (17).

    The accuracy curve is piecewise linear through the points ``(budgets[i], accuracies[i])``
    (budgets strictly increasing). Returns the smallest budget t with ``p(t) >= level``: the first
    point if it already reaches the level, else the interpolated crossing on the first segment
    that ends at or above it. None when no point reaches the level (the curve never does).
    Shapes (B,), (B,), scalar -> float or None.
    """
    b, a = _check_curve(budgets, accuracies)
    reached = np.flatnonzero(a >= level)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(b[0])
    # every earlier point is below the level, so the crossing lies on segment (i-1, i), where
    # a[i-1] < level <= a[i]: solve a[i-1] + slope * (t - b[i-1]) = level
    frac = (level - a[i - 1]) / (a[i] - a[i - 1])
    return float(b[i - 1] + frac * (b[i] - b[i - 1]))


@dataclass(frozen=True)
class EfficiencyAtLevel:
    """Token efficiency of curve A over curve B at one accuracy level, METHOD.md (17).

    ``tokens_a``/``tokens_b``: ``tokens_to_reach`` of each curve (None: never reaches the level).
    ``ratio``: ``tokens_b / tokens_a``, how many times more tokens B needs than A; None when
    undefined, with ``note`` saying why ("" when the ratio is defined).
    """

    level: float
    tokens_a: float | None
    tokens_b: float | None
    ratio: float | None
    note: str = ""


def _efficiency_note(level: float, tokens_a: float | None, tokens_b: float | None) -> str:
    shown = f"{level:.2f}" if round(level, 2) == level else f"{level:g}"
    if tokens_a is None and tokens_b is None:
        return f"neither A nor B reaches {shown}"
    if tokens_a is None:
        return f"A never reaches {shown}"
    if tokens_b is None:
        return f"B never reaches {shown}"
    if tokens_a == 0:
        return f"A reaches {shown} at 0 tokens"
    return ""


def token_efficiency(
    budgets_a: np.ndarray,
    acc_a: np.ndarray,
    budgets_b: np.ndarray,
    acc_b: np.ndarray,
    levels: Sequence[float],
) -> list[EfficiencyAtLevel]:
    """Token efficiency of A over B per accuracy level, METHOD.md (17).

    ``token_efficiency(level) = tokens_to_reach_B(level) / tokens_to_reach_A(level)``: above 1,
    A reaches the level with fewer tokens. Curves: shapes (B_a,), (B_a,), (B_b,), (B_b,);
    ``levels`` shape (L,) -> list of L ``EfficiencyAtLevel``.
    """
    results = []
    for level in levels:
        level = float(level)
        tokens_a = tokens_to_reach(budgets_a, acc_a, level)
        tokens_b = tokens_to_reach(budgets_b, acc_b, level)
        defined = tokens_a is not None and tokens_b is not None and tokens_a > 0
        ratio = tokens_b / tokens_a if defined else None
        results.append(EfficiencyAtLevel(level, tokens_a, tokens_b, ratio, _efficiency_note(level, tokens_a, tokens_b)))
    return results


# ---------------------------------------------------------------------------------------------
# gains over a starting model and their ratio, METHOD.md (20)


def gain_ratio(gain: float, baseline_gain: float) -> float | None:
    """``gain / baseline_gain`` (e.g. MRT's accuracy gain over the warm-start divided by
    GRPO's), METHOD.md (20); None unless the baseline's gain is positive: a ratio over a zero or
    negative gain says nothing (report both gains instead)."""
    if not np.isfinite(gain) or not np.isfinite(baseline_gain) or baseline_gain <= 0:
        return None
    return float(gain / baseline_gain)

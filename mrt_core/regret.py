"""Progress, cumulative regret and normalised regret over a token budget: METHOD.md (4)-(7).

Notation for one rollout with k episodes:
    J[j]  = J(mu | c_j), j = 0..k        (J[0]: prompt only; J[k]: the whole trace)
    T[j]  = counted tokens before episode j, T[0] = 0, T[k] = trace length
    p(t)  = piecewise linear through (T[j], J[j]), held at J[k] for t > T[k]
An episode with no counted tokens (T[j] == T[j+1]) is a jump: p runs into T[j] along the segment
before it and leaves it along the one after (np.interp picks one value at a repeated point, and
the area would take it for a whole segment).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

VOTE_COUNTS = (1, 2, 4, 8)


def progress(j_values: np.ndarray) -> np.ndarray:
    """Progress of each episode, METHOD.md (4): ``J[j+1] - J[j]``. Shape (..., k+1) -> (..., k)."""
    j_values = np.asarray(j_values, dtype=float)
    if j_values.shape[-1] < 1:
        raise ValueError("need J for at least the prompt-only prefix")
    return np.diff(j_values, axis=-1)


def zero_progress_share(prog: np.ndarray, threshold: float) -> float:
    """Share of episodes with ``progress <= threshold`` (METHOD.md (4)); NaN for no episodes."""
    prog = np.asarray(prog, dtype=float).ravel()
    return float(np.mean(prog <= threshold)) if prog.size else float("nan")


def cumulative_regret(j_values: np.ndarray, comparator: float | np.ndarray = 1.0) -> np.ndarray:
    """Cumulative regret ``Delta_m`` for m = 1..k, METHOD.md (5).

    ``Delta_m = sum_{j<m} (J*_j - J[j+1])``: after each episode, what the comparator would have
    reached minus what the meta-prover reaches. comparator: scalar (1.0 = oracle) or (k,).
    Shape (k+1,) -> (k,)."""
    after = np.asarray(j_values, dtype=float)[1:]
    star = np.broadcast_to(np.asarray(comparator, dtype=float), after.shape)
    return np.cumsum(star - after)


def _check_curve(tokens: np.ndarray, j_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, j = np.asarray(tokens, dtype=float), np.asarray(j_values, dtype=float)
    if t.shape != j.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"tokens and J must be 1-d of equal length, got {t.shape} and {j.shape}")
    if t[0] != 0 or np.any(np.diff(t) < 0):
        raise ValueError("tokens must start at 0 and be non-decreasing")
    return t, j


def _line_value(t: np.ndarray, j: np.ndarray, i: int, x: float) -> float:
    """p(x) on segment i, the line from (T[i], J[i]) to (T[i+1], J[i+1]); J[k] past the end."""
    if i >= t.size - 1 or t[i + 1] <= t[i]:
        return float(j[min(i, t.size - 1)])
    return float(j[i] + (j[i + 1] - j[i]) * (x - t[i]) / (t[i + 1] - t[i]))


def area_under_curve(tokens: np.ndarray, j_values: np.ndarray, budget: float) -> float:
    """``integral_0^C p(t) dt`` (the area in METHOD.md (6)): p piecewise linear through (T[j], J[j]),
    held after T[k]; a zero-token episode is a jump, not a segment. Shapes (k+1,), (k+1,) -> scalar."""
    t, j = _check_curve(tokens, j_values)
    inside = t < budget
    last = int(np.count_nonzero(inside)) - 1  # the last knot before the budget (T[0] = 0 < C)
    grid = np.append(t[inside], budget)
    values = np.append(j[inside], _line_value(t, j, last, budget))  # C approached from the left
    return float(np.trapezoid(values, grid))  # repeated knots add zero-width trapezoids


def normalized_regret(tokens: np.ndarray, j_values: np.ndarray, budget: float) -> float:
    """Normalised regret against the oracle over budget C, METHOD.md (6):
    ``1 - (1/C) * integral_0^C p(t) dt``. Shapes (k+1,), (k+1,) -> scalar in [0, 1]."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    return 1.0 - area_under_curve(tokens, j_values, budget) / budget


def regret_curve(tokens: np.ndarray, j_values: np.ndarray, budgets: Sequence[float]) -> np.ndarray:
    """``normalized_regret`` at each budget, METHOD.md (6). Shape -> (len(budgets),)."""
    return np.array([normalized_regret(tokens, j_values, c) for c in budgets])


def _max_const_linear_area(c: float, x0: float, x1: float, y0: float, y1: float) -> float:
    """``integral_{x0}^{x1} max(c, line)`` where the line runs from (x0, y0) to (x1, y1)."""
    if x1 <= x0:
        return 0.0
    if (y0 - c) * (y1 - c) >= 0:  # no crossing inside: one side dominates throughout
        return (x1 - x0) * max(c, (y0 + y1) / 2)
    xc = x0 + (c - y0) / (y1 - y0) * (x1 - x0)  # the line crosses c at xc
    left = _max_const_linear_area(c, x0, xc, y0, c)
    right = _max_const_linear_area(c, xc, x1, c, y1)
    return left + right


def votes_envelope_area(tokens: np.ndarray, j_values: np.ndarray, maj: np.ndarray, vote_tokens: float,
                        budget: float) -> float:
    """``integral_0^C e(t) dt`` for the votes-vs-episode envelope, METHOD.md (7).

    maj: (k+1, 4) with ``maj[j, i] = maj@m(c_j)`` for m in (1, 2, 4, 8); vote_tokens: tokens one
    forced answer costs. On [T[j], T[j+1]] (or [T[k], C] after the trace) the envelope is the
    better of m(t) votes at c_j and the trace's own line."""
    t, j = _check_curve(tokens, j_values)
    maj = np.asarray(maj, dtype=float)
    if maj.shape != (t.size, len(VOTE_COUNTS)):
        raise ValueError(f"maj must have shape ({t.size}, {len(VOTE_COUNTS)}), got {maj.shape}")
    ends = np.append(t[1:], max(budget, t[-1]))
    area = 0.0
    for i in range(t.size):
        a, b = t[i], min(ends[i], budget)
        if b <= a:
            continue
        # vote count changes at T_j + (m-1) * vote_tokens; inside each piece it is constant
        cuts = sorted({a, b} | {a + (m - 1) * vote_tokens for m in VOTE_COUNTS if a < a + (m - 1) * vote_tokens < b})
        for x0, x1 in zip(cuts, cuts[1:]):
            votes = max(v for k, v in enumerate(maj[i]) if a + (VOTE_COUNTS[k] - 1) * vote_tokens <= x0)
            y0, y1 = _line_value(t, j, i, x0), _line_value(t, j, i, x1)
            area += _max_const_linear_area(votes, x0, x1, float(y0), float(y1))
    return area


def votes_normalized_regret(tokens: np.ndarray, j_values: np.ndarray, maj: np.ndarray, vote_tokens: float,
                            budget: float) -> float:
    """Regret against the votes-vs-episode comparator, METHOD.md (7):
    ``(area(e) - area(p)) / area(e)`` over [0, C]; 0 when the envelope has no area."""
    env = votes_envelope_area(tokens, j_values, maj, vote_tokens, budget)
    own = area_under_curve(tokens, j_values, budget)
    if env <= 1e-12 * budget:  # no area to speak of (subnormal J values made the ratio meaningless)
        return 0.0
    return min(1.0, max(0.0, (env - own) / env))  # the envelope dominates the trace: clip float error

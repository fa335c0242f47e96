"""Backtrack construction for the warm-start (MRT-B): METHOD.md, "Warm-start".

For a failed first attempt z_0 of a problem, the success rate of resampling the attempt from
each of its step prefixes is estimated (``success[j]``: prefix keeps the first j steps); the
backtrack step is the prefix with the highest estimate, and the warm-start trace is
z_0 + a backtrack episode naming that step + a successful new attempt from the shared prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

Variant = Literal["restart", "backtrack_shared_prefix", "backtrack_no_repeat"]
VARIANTS: tuple[str, ...] = ("restart", "backtrack_shared_prefix", "backtrack_no_repeat")


def choose_backtrack_step(success: Sequence[float]) -> int:
    """``argmax_j success[j]`` over step prefixes j = 0..i, METHOD.md (18); ties go to the
    later step (it keeps more confirmed work, so the new attempt is shorter)."""
    if not success:
        raise ValueError("need the estimated success of at least one step prefix")
    best = max(success)
    return max(j for j, s in enumerate(success) if s == best)


def success_gain(success: Sequence[float], step: int) -> float:
    """Estimated success gain of backtracking to ``step`` over restarting (step 0),
    METHOD.md (18): ``success[step] - success[0]``."""
    return float(success[step]) - float(success[0])


@dataclass(frozen=True)
class BacktrackPlan:
    """The actions of a warm-start trace (METHOD.md (18)): the failed first attempt, the
    backtrack (None for the restart variant) and the new attempt's actions."""

    first_attempt: tuple[str, ...]
    backtrack: tuple[str, ...] | None
    new_attempt: tuple[str, ...]

    def actions(self) -> tuple[str, ...]:
        return self.first_attempt + (self.backtrack or ()) + self.new_attempt


def plan_trace(variant: Variant, first_attempt: Sequence[str], step: int, continuation: Sequence[str],
               marker: str, step_names: str) -> BacktrackPlan:
    """Actions of a warm-start trace, METHOD.md (18).

    ``continuation``: the successful resampled actions from step ``step`` on (the guesses of
    steps ``step..``); ``marker`` + ``step_names[step]`` names the backtrack. The restart variant
    writes the kept steps again (from ``first_attempt``) and has no backtrack episode."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not 0 <= step <= len(first_attempt):
        raise ValueError(f"step {step} outside the first attempt's {len(first_attempt)} steps")
    first = tuple(first_attempt)
    if variant == "restart":
        return BacktrackPlan(first, None, first[:step] + tuple(continuation))
    return BacktrackPlan(first, (marker, step_names[step]), tuple(continuation))

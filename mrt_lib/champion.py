"""The champion gate of scheduled retraining: does a challenger replace the champion?

Both are evaluated on the same problems at the same budget; the gate compares them problem by
problem (paired), so the problems' own difficulty cancels. The challenger is promoted only when
its mean gain is at least ``margin`` *and* the Student-t interval of the paired gains excludes
zero (``mrt_core.metrics.seed_interval`` over the problems, the independent units here).
Lower is better for regret, higher for accuracy. The first candidate becomes the champion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from mrt_core.metrics import seed_interval

LOWER_IS_BETTER = {"regret": True, "accuracy": False}


@dataclass(frozen=True)
class Verdict:
    """``promote``: move ``@champion`` to the challenger; ``reason``: one line for the log;
    ``compared``: the numbers behind it (written to MLflow and the decision file)."""

    promote: bool
    reason: str
    compared: dict

    def as_dict(self) -> dict:
        return asdict(self)


def decide(metric: str, margin: float, champion: Sequence[float] | None, challenger: Sequence[float] | None,
           level: float = 0.95) -> Verdict:
    """The gate on per-problem values of ``metric`` (same problems, same order); ``None`` or
    empty when a model has no such metric. Raises ValueError on values of different problems."""
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"unknown gate metric {metric!r}: one of {sorted(LOWER_IS_BETTER)}")
    if challenger is None or len(challenger) == 0:
        return Verdict(False, f"the challenger has no {metric}: not promoted", {"metric": metric})
    chall = np.asarray(challenger, dtype=float)
    if champion is None:
        return Verdict(True, "first candidate: it becomes the champion",
                       {"metric": metric, "challenger": float(chall.mean())})
    if len(champion) == 0:
        return Verdict(False, f"the champion has no {metric} on these problems: evaluate it before gating",
                       {"metric": metric, "challenger": float(chall.mean())})
    champ = np.asarray(champion, dtype=float)
    if champ.shape != chall.shape:
        raise ValueError(f"champion and challenger were evaluated on different problems ({champ.size} and "
                         f"{chall.size} values)")
    gain = champ - chall if LOWER_IS_BETTER[metric] else chall - champ  # > 0: the challenger is better
    mean, low, high = seed_interval(gain, level)
    compared = {"metric": metric, "champion": float(champ.mean()), "challenger": float(chall.mean()),
                "gain": mean, "gain_low": low, "gain_high": high, "margin": margin, "n_problems": int(gain.size)}
    interval = f"[{low:+.4f}, {high:+.4f}]"
    if mean >= margin and low > 0:
        return Verdict(True, f"{metric} better by {mean:.4f} (>= margin {margin:g}; {level:.0%} interval {interval} "
                             f"excludes 0)", compared)
    if mean <= -margin and high < 0:
        why = f"{metric} worse by {-mean:.4f} ({level:.0%} interval {interval})"
    elif mean < margin:
        why = f"{metric} gain {mean:+.4f} is within the margin {margin:g}"
    else:
        why = f"{metric} gain {mean:+.4f} but its {level:.0%} interval {interval} includes 0"
    return Verdict(False, why + ": the champion stays", compared)

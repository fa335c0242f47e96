"""What a round computed, in tokens and in FLOPs-equivalents, and the rule that matches compute.

A round's ledger counts every token each kind of pass touched, whatever it was for (an arm's
advantages or only its logged metrics):

    generated       sampled by the policy, one forward each (with a KV cache): prefix rollouts,
                    continuations and their answers
    teacher_forced  one forward, no gradient: the meta-prover's probes (the rollout's shared
                    prefix once, then every termination-and-answer branch) and the update's
                    old-policy and reference log-probs
    trained         forward and backward: every sequence token in every PPO epoch

FLOPs-equivalent (the usual 2N FLOPs per token forward, 4N backward, N = parameters):

    flops = 2 N (generated + teacher_forced + 3 trained)

Attention's share (quadratic in length) is left out, as in the usual 6ND estimate; at the
lengths of these rounds it is small and it is the same kind of work for every arm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Unit = Literal["tokens", "flops"]
TRAIN_COST = 3  # forward + backward of a token, in forwards
TOLERANCE = 0.10  # a matched arm lands within +10% of its target


@dataclass(frozen=True)
class Ledger:
    """Tokens a round (or a step) pushed through the model, by kind of pass."""

    generated: int = 0
    teacher_forced: int = 0
    trained: int = 0

    def __add__(self, other: "Ledger") -> "Ledger":
        return Ledger(self.generated + other.generated, self.teacher_forced + other.teacher_forced,
                      self.trained + other.trained)

    @property
    def tokens(self) -> int:
        """Every token counted once, whatever pass it went through (METHOD.md (23): g + f + t)."""
        return self.generated + self.teacher_forced + self.trained

    def flops(self, n_params: int) -> float:
        """``2 N (generated + teacher_forced + 3 trained)``, METHOD.md (23)."""
        return 2.0 * n_params * (self.generated + self.teacher_forced + TRAIN_COST * self.trained)

    def amount(self, unit: Unit, n_params: int) -> float:
        """The ledger in ``unit``: ``tokens`` or ``flops`` (METHOD.md (23))."""
        if unit == "tokens":
            return float(self.tokens)
        if unit == "flops":
            return self.flops(n_params)
        raise ValueError(f"compute unit must be 'tokens' or 'flops', got {unit!r}")

    def as_dict(self, n_params: int) -> dict:
        return asdict(self) | {"tokens": self.tokens, "flops": self.flops(n_params)}


def needs_more_steps(spent: float, target: float, steps_done: int, min_steps: int) -> bool:
    """The matching rule, METHOD.md (24): a matched arm keeps updating (on fresh prompts) past its own
    ``min_steps`` until what it spent reaches the target; it stops at the first step that
    reaches it, so it overshoots by less than one step's cost."""
    if target < 0 or spent < 0:
        raise ValueError(f"compute cannot be negative: spent {spent}, target {target}")
    return steps_done < min_steps or spent < target


def match_ratio(spent: float, target: float) -> float:
    """What a matched arm spent over its target (METHOD.md (24)) (1.0 = exact; within ``1 + TOLERANCE`` is matched)."""
    if target <= 0:
        raise ValueError(f"the target's compute must be positive, got {target}")
    return spent / target

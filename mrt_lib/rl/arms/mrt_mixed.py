"""``mrt_mixed``: the first ``rl.answer_now`` samples of each group answer at once (the
meta-prover's samples); answer-now and continue rewards are normalised together (METHOD.md (13))."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrt_core.advantages import GroupedRollouts, broadcast_to_tokens, group_advantages
from mrt_lib.rl.arms.base import register


@dataclass(frozen=True)
class MrtMixed:
    name: str = "mrt_mixed"
    settings: tuple[str, ...] = ("answer_now",)
    answer_now: bool = True
    probes: str = "none"  # the answer-now samples are rollouts: their tokens count as generated
    prover: str | None = None

    def advantages(self, batch: GroupedRollouts, cfg) -> torch.Tensor:
        if not (batch.answer_now.any(-1) & (~batch.answer_now).any(-1)).all():
            raise ValueError("mrt_mixed needs answer-now and continue samples in every group")
        return broadcast_to_tokens(group_advantages(batch.rewards), batch.mask)


register(MrtMixed())

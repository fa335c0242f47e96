"""``grpo``: outcome reward only, normalised within each group (METHOD.md (8))."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrt_core.advantages import GroupedRollouts, broadcast_to_tokens, group_advantages
from mrt_lib.rl.arms.base import register


@dataclass(frozen=True)
class Grpo:
    name: str = "grpo"
    settings: tuple[str, ...] = ()
    answer_now: bool = False
    probes: str = "none"
    prover: str | None = None

    def advantages(self, batch: GroupedRollouts, cfg) -> torch.Tensor:
        return broadcast_to_tokens(group_advantages(batch.rewards), batch.mask)


register(Grpo())

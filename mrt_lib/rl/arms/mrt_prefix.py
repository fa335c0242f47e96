"""``mrt_prefix``: the termination baseline, ``(1 + alpha)(r - J(mu | c))`` (METHOD.md (11)).

No std normalisation: ``J(mu | c)`` is constant in the group, so normalising would cancel the
bonus (the trap after METHOD.md (11)). Needs ``J`` of each prefix once."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrt_core.advantages import GroupedRollouts, broadcast_to_tokens, termination_baseline_advantages
from mrt_lib.rl.arms.base import register


@dataclass(frozen=True)
class MrtPrefix:
    name: str = "mrt_prefix"
    settings: tuple[str, ...] = ("alpha",)
    answer_now: bool = False
    probes: str = "prefix"
    prover: str | None = None

    def advantages(self, batch: GroupedRollouts, cfg) -> torch.Tensor:
        per_sample = termination_baseline_advantages(batch.rewards, batch.j_prefix.float()[:, None], cfg.alpha)
        return broadcast_to_tokens(per_sample, batch.mask)


register(MrtPrefix())

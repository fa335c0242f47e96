"""``length_penalty``: outcome RL whose reward pays for length, ``r - lambda * n / C_0``, then
group-normalised like GRPO (METHOD.md (21); the paper's Table 1 compares MRT with it).
``lambda`` is ``rl.length_penalty``; ``n`` the trace's generated tokens, prefix included."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrt_core.advantages import GroupedRollouts, broadcast_to_tokens, group_advantages, length_penalized_rewards
from mrt_lib.rl.arms.base import register


@dataclass(frozen=True)
class LengthPenalty:
    name: str = "length_penalty"
    settings: tuple[str, ...] = ("length_penalty",)
    answer_now: bool = False
    probes: str = "none"
    prover: str | None = None

    def advantages(self, batch: GroupedRollouts, cfg) -> torch.Tensor:
        if batch.gen_tokens is None:
            raise ValueError("length_penalty needs the generated tokens of every trace (GroupedRollouts.gen_tokens)")
        rewards = length_penalized_rewards(batch.rewards, batch.gen_tokens, cfg.length_penalty, cfg.train_budget)
        return broadcast_to_tokens(group_advantages(rewards), batch.mask)


register(LengthPenalty())

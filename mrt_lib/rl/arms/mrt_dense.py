"""``mrt_dense``: the GRPO advantage plus ``alpha * progress`` of each token's own episode
(METHOD.md (12)). Needs ``J`` after every episode of every continuation. ``mrt_dense_live`` is
the same arm with the live policy as its meta-prover at every step (the online form), whatever
``meta_prover.policy`` says: one run can compare it with the offline default."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrt_core.advantages import GroupedRollouts, dense_token_advantages, group_advantages
from mrt_lib.rl.arms.base import register


@dataclass(frozen=True)
class MrtDense:
    name: str = "mrt_dense"
    settings: tuple[str, ...] = ("alpha",)
    answer_now: bool = False
    probes: str = "episodes"
    prover: str | None = None

    def advantages(self, batch: GroupedRollouts, cfg) -> torch.Tensor:
        P, G, T = batch.mask.shape
        padded = torch.cat([batch.progress.float(), torch.zeros(P, G, 1)], dim=-1)  # column k: no bonus
        dense = dense_token_advantages(group_advantages(batch.rewards).flatten(), padded.flatten(0, 1),
                                       batch.token_episode.flatten(0, 1), batch.mask.flatten(0, 1), cfg.alpha)
        return dense.reshape(P, G, T)


register(MrtDense())
register(MrtDense(name="mrt_dense_live", prover="live"))

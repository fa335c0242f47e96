"""``mrt_star``: filtered imitation, advantage 1 on the traces the MRT-STaR filter keeps
(correct, enough total progress, few zero-progress episodes; METHOD.md after (13)), 0 elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrt_core.advantages import GroupedRollouts, broadcast_to_tokens, star_filter
from mrt_lib.rl.arms.base import register


@dataclass(frozen=True)
class MrtStar:
    name: str = "mrt_star"
    settings: tuple[str, ...] = ("star_min_total_progress", "star_max_zero_share", "zero_threshold")
    answer_now: bool = False
    probes: str = "episodes"
    prover: str | None = None

    def advantages(self, batch: GroupedRollouts, cfg) -> torch.Tensor:
        r = batch.rewards.float()
        rows = [p[:n] for p, n in zip(batch.progress.flatten(0, 1).tolist(), batch.n_episodes.flatten().tolist())]
        keep = star_filter(r.flatten().tolist(), rows, cfg.star_min_total_progress, cfg.star_max_zero_share,
                           cfg.zero_threshold)
        return broadcast_to_tokens(torch.tensor(keep, dtype=torch.float32).reshape(r.shape), batch.mask)


register(MrtStar())

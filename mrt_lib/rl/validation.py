"""Validation of a round's policy on held-out problems (the same draws for every arm)."""

from __future__ import annotations

import numpy as np
import torch

from mrt_core.envs.base import Role
from mrt_core.loss import kl_k3
from mrt_core.regret import normalized_regret, progress, zero_progress_share
from mrt_lib.common import derive_seed
from mrt_lib.distributed import gather
from mrt_lib.generation.rollouts import RolloutEngine, Start
from mrt_lib.rl.sampling import sample_shard
from mrt_lib.sequences import micro_batches, pad_right, token_logp


@torch.no_grad()
def validate(engine: RolloutEngine, model, ref_model, problems, cfg, round_n: int, pad_id: int,
             meta_prover) -> dict:
    """From the prompt at the training budget, the same draws for every arm: accuracy,
    normalised regret against the oracle at C_0 (METHOD.md (6)), progress, KL to the reference."""
    starts = [Start(p, k) for p in problems for k in range(cfg.val_samples)]
    rolls, curves, _ = sample_shard(engine, starts, cfg.train_budget, derive_seed("val", round_n),
                                    derive_seed("val-j", round_n), meta_prover, cfg.batch_size)  # this process's draws
    kl_sums = _kl_sums(model, ref_model, rolls, cfg, pad_id)
    rolls, curves, kl_sums = gather(rolls), gather(curves), gather(kl_sums)
    prog = np.concatenate([progress(np.array(c.j)) for c in curves])
    n_counted = sum(r.role_count(Role.GENERATED) - (r.roles[0] == Role.GENERATED) for r in rolls)
    return {
        "val_accuracy": float(np.mean([r.correct for r in rolls])),
        "val_regret": float(np.mean([normalized_regret(np.array(c.tokens), np.array(c.j), cfg.train_budget)
                                     for c in curves])),
        "val_mean_progress": float(prog.mean()) if prog.size else float("nan"),
        "val_zero_progress_share": zero_progress_share(prog, cfg.zero_threshold),
        "val_episodes_per_trace": float(np.mean([len(c.j) - 1 for c in curves])),
        "val_tokens_per_trace": float(np.mean([r.budget_tokens for r in rolls])),
        "val_wasted_share": sum(getattr(r.state, "wasted", 0) for r in rolls)
        / max(sum(getattr(r.state, "steps", 0) for r in rolls), 1),
        "kl_to_reference": float(torch.tensor(kl_sums, dtype=torch.float32).sum() / n_counted),
    }


def _kl_sums(model, ref_model, rolls, cfg, pad_id: int) -> list[float]:
    """Per rollout: the summed k3 KL to the reference over its generated tokens."""
    if not rolls:
        return []
    ids, attn = pad_right([r.token_ids for r in rolls], pad_id)
    mask = torch.tensor([[x == Role.GENERATED for x in r.roles[1:]] + [False] * (ids.shape[1] - len(r.roles))
                         for r in rolls])
    kl = torch.cat([kl_k3(token_logp(model, ids[c], attn[c], cfg.temperature),
                          token_logp(ref_model, ids[c], attn[c], cfg.temperature))
                    for c in micro_batches(len(rolls), cfg.micro_batch)])
    return torch.where(mask, kl, torch.zeros(())).sum(-1).tolist()

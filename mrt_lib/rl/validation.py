"""Validation of a round's policy on held-out problems (the same draws for every arm)."""

from __future__ import annotations

import numpy as np
import torch

from mrt_core.envs.base import Role
from mrt_core.loss import kl_k3
from mrt_core.regret import normalized_regret, progress, zero_progress_share
from mrt_lib.common import derive_seed
from mrt_lib.generation.curves import episode_curves
from mrt_lib.generation.rollouts import RolloutEngine
from mrt_lib.sequences import micro_batches, pad_right, token_logp


@torch.no_grad()
def validate(engine: RolloutEngine, model, ref_model, problems, cfg, round_n: int, pad_id: int,
             meta_prover) -> dict:
    """From the prompt at the training budget, the same draws for every arm: accuracy,
    normalised regret against the oracle at C_0 (METHOD.md (6)), progress, KL to the reference."""
    rolls = engine.run(problems, cfg.val_samples, cfg.train_budget, derive_seed("val", round_n), cfg.batch_size)
    curves = episode_curves(engine, rolls, meta_prover.estimator, meta_prover.samples, derive_seed("val-j", round_n))
    prog = np.concatenate([progress(np.array(c.j)) for c in curves])
    ids, attn = pad_right([r.token_ids for r in rolls], pad_id)
    mask = torch.tensor([[x == Role.GENERATED for x in r.roles[1:]] + [False] * (ids.shape[1] - len(r.roles))
                         for r in rolls])
    kl = torch.cat([kl_k3(token_logp(model, ids[c], attn[c], cfg.temperature),
                          token_logp(ref_model, ids[c], attn[c], cfg.temperature))
                    for c in micro_batches(len(rolls), cfg.micro_batch)])
    kl = torch.where(mask, kl, torch.zeros(()))
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
        "kl_to_reference": float(kl.sum() / mask.sum()),
    }

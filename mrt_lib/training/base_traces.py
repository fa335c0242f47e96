"""The base model's training data: traces of the deliberately wasteful data policy, drawn
deterministically from (seed, step) so a resumed run needs no data-loader state."""

from __future__ import annotations

import random

import torch

from mrt_core.envs.base import Problem
from mrt_core.envs.code_search import CodeSearchEnv, TraceConfig, base_guess_fn, synthesize_trace
from mrt_lib.common import derive_seed
from mrt_lib.distributed import shard
from mrt_lib.modeling import collate, encode_segments


class TraceSampler:
    """Base traces for one batch, deterministic in (seed, step): resuming needs no data state
    (``cfg``: the ``train_base`` section)."""

    def __init__(self, env: CodeSearchEnv, problems: list[Problem], cfg, tokenizer):
        self.env, self.problems, self.tokenizer = env, problems, tokenizer
        self.guess = base_guess_fn(env.spec.n_values, cfg.p_informed)
        self.trace_cfg = TraceConfig(p_give_up=cfg.p_give_up, p_cut=cfg.p_cut, max_steps=cfg.max_steps)
        self.seed = cfg.seed

    def batch(self, step: int, size: int, stream: str = "train") -> dict[str, torch.Tensor]:
        rng = random.Random(derive_seed(self.seed, stream, step))
        traces = [synthesize_trace(self.env, rng.choice(self.problems), self.guess, self.trace_cfg, rng)
                  for _ in range(size)]
        encoded = [encode_segments(self.tokenizer, segments) for segments in traces]
        return collate(encoded, self.tokenizer.pad_token_id)


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    device = next(model.parameters()).device  # the batch is built on the CPU
    return model(**{k: v.to(device) for k, v in batch.items()}).loss


def shard_loss(model, batch: dict[str, torch.Tensor], rank: int, world: int) -> torch.Tensor:
    """The step's loss on this process's rows. On one process: the batch's token mean. Under N:
    this shard's token sum over the whole batch's token count, times N (the gradient all-reduce
    averages over the processes), so the update is the one-process update on the whole batch."""
    if world == 1:
        return lm_loss(model, batch)
    rows = shard(batch["input_ids"].shape[0], rank, world)
    counted = (batch["labels"][:, 1:] != -100).sum(-1)  # the tokens the shifted loss averages over
    mine = {k: v[rows.start : rows.stop] for k, v in batch.items()}
    return lm_loss(model, mine) * (counted[rows.start : rows.stop].sum() / counted.sum() * world)


@torch.no_grad()
def validation_loss(model, batches: list[dict[str, torch.Tensor]]) -> float:
    model.eval()
    losses = [lm_loss(model, b).item() for b in batches]
    model.train()
    return sum(losses) / len(losses)

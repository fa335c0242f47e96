"""Sequence math in one place: padding token lists into tensors, teacher-forced log-probs,
micro-batches. One mask convention for the project: True (or 1) = the position counts."""

from __future__ import annotations

from typing import Sequence

import torch


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) ids, each sequence from column 0, then ``pad_id``; (B, W) attention, 1 = real."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, : len(s)], attn[i, : len(s)] = torch.tensor(list(s)), 1
    return ids, attn


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) ids ending in the last column (padding first, so every row's next token is
    predicted at the same position); (B, W) attention, 1 = real."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):], attn[i, width - len(s):] = torch.tensor(list(s)), 1
    return ids, attn


def token_logp(model, ids: torch.Tensor, attn: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token t | tokens < t) for t = 1..W-1 under ``temperature`` (the policy the
    rollouts were sampled from): (B, W-1), on the CPU. The chosen logit minus the logsumexp,
    so no (B, W, vocab) log-softmax is kept."""
    device = next(model.parameters()).device
    ids, attn = ids.to(device), attn.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    chosen = logits.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (chosen - torch.logsumexp(logits, -1)).cpu()


def micro_batches(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    return [slice(b, b + size) for b in range(0, n, size)]


def labels_from_mask(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Language-model labels: the token where ``mask`` is True, -100 (ignored) elsewhere."""
    return torch.where(mask, ids, torch.full_like(ids, -100))

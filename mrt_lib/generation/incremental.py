"""Incremental decoding for interactive rollouts on the ``hf`` backend: one KV cache per batch.

An interactive rollout grows by *ragged* appends: after each sampled token the environment adds
0-4 observation tokens, different for every row. Re-encoding every sequence at every step costs
O(length^2) per rollout; here each step feeds only the new tokens through the cache.

How ragged appends fit one cache: every step appends a block of width W (the longest append of
the step) to every row; a row's tokens sit at the *right* of its block and the pad slots on the
left are masked out of attention forever (a 2-d key mask over the whole cache). Each real token
gets the position id it would have in the plain sequence (the count of real tokens before it),
so the logits equal a plain forward of the row's tokens (test: ``test_incremental``). The last
slot of a block is always real, so its logits predict the row's next token. Rows that append
nothing (finished, or a dropped stop token) get an all-pad block and keep their last logits.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mrt_lib.sequences import pad_left


class StepSession:
    """A batch of growing sequences decoded over one KV cache (``hf`` models)."""

    def __init__(self, model, seqs: Sequence[Sequence[int]], pad_id: int):
        if not seqs or any(len(s) == 0 for s in seqs):
            raise ValueError("every sequence needs at least one token")
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        ids, keep = pad_left(seqs, pad_id)  # the last slot of every row is real
        self.cache = None
        self.keys = torch.zeros((len(seqs), 0), dtype=torch.long, device=self.device)  # 1 = a real cached token
        self.length = torch.zeros(len(seqs), dtype=torch.long, device=self.device)  # real tokens per row so far
        self.logits = self._forward(ids, keep)

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        ids, keep = ids.to(self.device), keep.to(self.device)
        positions = self.length[:, None] + (keep.cumsum(-1) - 1).clamp(min=0)
        self.keys = torch.cat([self.keys, keep], dim=-1)
        out = self.model(input_ids=ids, attention_mask=self.keys, position_ids=positions,
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.length = self.length + keep.sum(-1)
        return out.logits[:, -1].float()

    def append(self, blocks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append ``blocks[i]`` to row i (possibly empty); returns next-token logits (B, V).
        A row with an empty block keeps its previous logits."""
        if len(blocks) != self.logits.shape[0]:
            raise ValueError(f"need one block per row ({self.logits.shape[0]}), got {len(blocks)}")
        width = max(map(len, blocks))
        if width == 0:
            return self.logits
        ids, keep = pad_left(blocks, self.pad_id)
        new = self._forward(ids, keep)
        grew = keep[:, -1].bool().to(self.device)
        self.logits = torch.where(grew[:, None], new, self.logits)
        return self.logits

"""Advantages for the RL arms and the MRT-STaR filter: METHOD.md (8)-(13).

Shapes: G = rollouts in a group, B = rollouts in a batch, T = tokens, k = episodes.
All functions take and return torch tensors (float32 unless given otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

EPS = 1e-6

def group_advantages(rewards: torch.Tensor, normalize_std: bool = True, eps: float = EPS) -> torch.Tensor:
    """Outcome advantages within groups: GRPO, METHOD.md (8) (``normalize_std``), or the
    unnormalised variant (9). rewards: (..., G) -> (..., G). A group of equal rewards gets 0
    (finite: the std is floored by ``eps``)."""
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    if not normalize_std:
        return centred
    std = rewards.std(dim=-1, unbiased=False, keepdim=True)  # population std, as in GRPO
    return centred / (std + eps)


def progress_reward(rewards: torch.Tensor, j_prefix: torch.Tensor | float, alpha: float) -> torch.Tensor:
    """MRT's progress-augmented reward, METHOD.md (10): ``R = r + alpha * (r - J(mu|c))``.
    rewards: (..., G); j_prefix broadcastable (one J per prefix) -> (..., G)."""
    return rewards.float() + alpha * (rewards.float() - torch.as_tensor(j_prefix, dtype=torch.float32))


def termination_baseline_advantages(rewards: torch.Tensor, j_prefix: torch.Tensor | float,
                                    alpha: float) -> torch.Tensor:
    """Termination-baseline advantage, METHOD.md (11): ``A = R - J(mu|c) = (1+alpha)(r - J)``.

    The continuation is judged against answering now. No std normalisation: with J constant
    in the group, normalising would cancel the bonus (the trap, METHOD.md after (11))."""
    return progress_reward(rewards, j_prefix, alpha) - torch.as_tensor(j_prefix, dtype=torch.float32)


def dense_token_advantages(outcome: torch.Tensor, episode_progress: torch.Tensor, token_episode: torch.Tensor,
                           mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-episode progress bonus on each episode's own tokens, METHOD.md (12):
    ``A[i, t] = outcome[i] + alpha * progress[i, episode(t)]`` on counted tokens, 0 elsewhere.

    outcome: (B,); episode_progress: (B, k) (pad with 0); token_episode: (B, T) long, the
    episode index of each token (any value where ``mask`` is False); mask: (B, T) bool,
    True = counts (METHOD.md, Objects) -> (B, T)."""
    if episode_progress.dim() != 2 or episode_progress.shape[1] == 0:
        raise ValueError(f"episode_progress must be (B, k>0), got {tuple(episode_progress.shape)}")
    idx = token_episode.clamp(0, episode_progress.shape[1] - 1).long()  # masked-out slots read any episode
    bonus = torch.gather(episode_progress.float(), 1, idx)
    return torch.where(mask, outcome.float()[:, None] + alpha * bonus, torch.zeros((), dtype=torch.float32))


def mixed_group_advantages(answer_rewards: torch.Tensor, continue_rewards: torch.Tensor,
                           eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed-group advantages, METHOD.md (13): samples that answer at once (the meta-prover)
    and samples that continue, from one prefix, normalised together. (G0,), (G1,) ->
    ((G0,), (G1,)). A continuation that beats answering now gets a positive advantage."""
    both = group_advantages(torch.cat([answer_rewards.float(), continue_rewards.float()]), True, eps)
    return both[: answer_rewards.numel()], both[answer_rewards.numel():]


def length_penalized_rewards(rewards: torch.Tensor, gen_tokens: torch.Tensor, lam: float,
                             train_budget: int) -> torch.Tensor:
    """Outcome reward minus a length cost, METHOD.md (21): ``R = r - lambda * n / C_0``.
    rewards, gen_tokens: (..., G) -> (..., G); ``n / C_0`` is the share of the training budget
    the trace spent (prefix included), so ``lambda`` is the reward a full-budget trace gives up."""
    return rewards.float() - lam * gen_tokens.float() / train_budget


def broadcast_to_tokens(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A per-sample advantage (..., G) on every counted token of its sample, 0 elsewhere
    (METHOD.md (8)-(13): outcome advantages are constant over a rollout's tokens). mask:
    (..., G, T) bool, True = counts -> (..., G, T)."""
    return torch.where(mask, per_sample[..., None].float(), torch.zeros((), dtype=torch.float32))


def star_filter(rewards: Sequence[float], episode_progress: Sequence[Sequence[float]], min_total_progress: float,
                max_zero_share: float, zero_threshold: float) -> list[bool]:
    """MRT-STaR selection (METHOD.md, after (13)): keep a trace when it is correct (r = 1), its
    total progress is at least ``min_total_progress`` and at most ``max_zero_share`` of its
    episodes make progress <= ``zero_threshold``. (B,), B x (k_i,) -> B booleans."""
    keep = []
    for r, prog in zip(rewards, episode_progress, strict=True):
        prog = [float(p) for p in prog]
        zero_share = sum(p <= zero_threshold for p in prog) / len(prog) if prog else 1.0
        keep.append(r == 1 and sum(prog) >= min_total_progress and zero_share <= max_zero_share)
    return keep


@dataclass(frozen=True)
class GroupedRollouts:
    """The rollouts of one RL step, grouped by start prefix: P prefixes x G samples each.

    rewards: (P, G) outcome 0/1. j_prefix: (P,) ``J(mu | c)`` of each prefix. answer_now: (P, G)
    bool, True for a sample forced to answer right after its prefix (the mixed arm's meta-prover
    samples). progress: (P, G, k) progress of each episode after the prefix (METHOD.md (4)),
    0-padded; n_episodes: (P, G) how many of those columns are real. token_episode: (P, G, T)
    episode index of each token; index k (one past the last column) marks tokens after the last
    episode (the termination text and the answer: no bonus). mask: (P, G, T) True where a token
    counts (generated after the prefix)."""

    rewards: torch.Tensor
    j_prefix: torch.Tensor
    answer_now: torch.Tensor
    progress: torch.Tensor
    n_episodes: torch.Tensor
    token_episode: torch.Tensor
    mask: torch.Tensor
    gen_tokens: torch.Tensor | None = None  # (P, G) generated tokens of each trace, prefix included


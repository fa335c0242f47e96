"""Advantages for the RL arms and the MRT-STaR filter: METHOD.md (8)-(13).

Shapes: G = rollouts in a group, B = rollouts in a batch, T = tokens, k = episodes.
All functions take and return torch tensors (float32 unless given otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import torch

EPS = 1e-6

Arm = Literal["grpo", "mrt_prefix", "mrt_mixed", "mrt_dense", "mrt_star"]
ARMS: tuple[str, ...] = get_args(Arm)


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


@dataclass(frozen=True)
class StarRule:
    """The MRT-STaR filter's thresholds (METHOD.md, after (13))."""

    min_total_progress: float
    max_zero_share: float
    zero_threshold: float


def arm_advantages(arm: Arm, batch: GroupedRollouts, alpha: float, star: StarRule | None = None) -> torch.Tensor:
    """Per-token advantages (P, G, T) of one RL arm, zero off the mask; every arm sees the same
    rollouts and differs only here (METHOD.md (8)-(13)):

    - ``grpo``: outcome only, group-normalised (8), broadcast over the sample's tokens;
    - ``mrt_prefix``: termination baseline (11), ``(1 + alpha)(r - J(mu | c))``, no std
      normalisation (normalising would cancel the bonus: the trap);
    - ``mrt_mixed``: answer-now and continue samples of one prefix normalised together (13);
    - ``mrt_dense``: the GRPO advantage plus ``alpha * progress`` of each token's episode (12);
    - ``mrt_star``: 1 on traces the MRT-STaR filter keeps, 0 elsewhere (filtered imitation)."""
    r = batch.rewards.float()
    if arm in ("grpo", "mrt_mixed"):
        if arm == "mrt_mixed" and not (batch.answer_now.any(-1) & (~batch.answer_now).any(-1)).all():
            raise ValueError("mrt_mixed needs answer-now and continue samples in every group")
        per_sample = group_advantages(r)
    elif arm == "mrt_prefix":
        per_sample = termination_baseline_advantages(r, batch.j_prefix.float()[:, None], alpha)
    elif arm == "mrt_star":
        if star is None:
            raise ValueError("mrt_star needs a StarRule")
        rows = [p[:n] for p, n in zip(batch.progress.flatten(0, 1).tolist(), batch.n_episodes.flatten().tolist())]
        keep = star_filter(r.flatten().tolist(), rows, star.min_total_progress, star.max_zero_share,
                           star.zero_threshold)
        per_sample = torch.tensor(keep, dtype=torch.float32).reshape(r.shape)
    elif arm == "mrt_dense":
        P, G, T = batch.mask.shape
        padded = torch.cat([batch.progress.float(), torch.zeros(P, G, 1)], dim=-1)  # column k: no bonus
        dense = dense_token_advantages(group_advantages(r).flatten(), padded.flatten(0, 1),
                                       batch.token_episode.flatten(0, 1), batch.mask.flatten(0, 1), alpha)
        return dense.reshape(P, G, T)
    else:
        raise ValueError(f"unknown arm {arm!r}: one of {ARMS}")
    return torch.where(batch.mask, per_sample[..., None], torch.zeros(()))

"""Meta-prover curves of rollouts: J after every episode, read with shared-prefix probes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mrt_core.envs.base import Role
from mrt_core.episodes import Episode, build_episodes, segment_attempts
from tasks.generation.prefix_tree import ProbeJob


@dataclass(frozen=True)
class EpisodeCurve:
    """One rollout's episodes (the environment's attempts), the counted tokens ``T[j]`` at the
    end of each (``T[0] = 0``), and ``J(mu | c_j)`` for j = 0..k (METHOD.md (1), (6))."""

    episodes: tuple[Episode, ...]
    tokens: tuple[int, ...]
    j: tuple[float, ...]
    cut_offsets: tuple[int, ...]  # output tokens before each prefix c_0..c_k (for more probes)


def search_end(engine, r) -> int:
    """Index in ``r.token_ids`` where the search ends: before the termination text when the
    rollout answered, else its last token (a rollout stopped by a condition, e.g. a prefix)."""
    return r.answer_start - len(engine.term_ids) if r.answer_start >= 0 else len(r.token_ids)


def _episodes_and_cuts(engine, r) -> tuple[tuple[Episode, ...], tuple[int, ...], int]:
    """The rollout's attempts as episodes, the probe cuts (start, then every episode end) in
    ``r.token_ids`` and the end of the search."""
    spec = engine.env.spec
    end = search_end(engine, r)
    pieces = [engine.id_text[t] for t in r.token_ids[r.start_len:end]]
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    text = "".join(pieces)
    episodes = build_episodes(text, offsets, segment_attempts(text, (spec.obs_attempt_end, spec.obs_solved)))
    ends = [e.tok_end for e in episodes if e.tok_end > 0]
    cuts = tuple(sorted({r.start_len} | {r.start_len + e for e in ends}))
    return tuple(episodes), cuts, end


def episode_curves(engine, rolls: list) -> list[EpisodeCurve]:
    """Split each rollout's search into attempts and read the meta-prover's exact J after each
    (METHOD.md (3)); all rollouts' probes go through the backend in batches."""
    if not rolls:
        return []
    shapes = [_episodes_and_cuts(engine, r) for r in rolls]
    jobs = [ProbeJob(tuple(r.token_ids[:end]), cuts) for r, (_, cuts, end) in zip(rolls, shapes)]
    logps = engine.backend.probe_logprobs_batch(jobs, engine.term_ids, [engine.encode(r.problem.answer) for r in rolls])
    curves = []
    for r, (episodes, cuts, end), logp in zip(rolls, shapes, logps):
        counted = [0]
        for role in r.roles[r.start_len:end]:
            counted.append(counted[-1] + (role == Role.GENERATED))
        tokens = tuple(counted[c - r.start_len] for c in cuts)
        j_values = tuple(math.exp(float(row.sum())) for row in logp)
        curves.append(EpisodeCurve(episodes, tokens, j_values, tuple(c - r.start_len for c in cuts)))
    return curves


def episode_curve(engine, r) -> EpisodeCurve:
    """``episode_curves`` of one rollout."""
    return episode_curves(engine, [r])[0]

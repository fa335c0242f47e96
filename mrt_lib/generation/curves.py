"""Meta-prover curves of rollouts: J after every episode, read with shared-prefix probes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mrt_core.envs.base import Role
from mrt_core.episodes import Episode
from mrt_core.meta_prover import j_sampled
from mrt_lib.generation.prefix_tree import ProbeJob
from mrt_lib.generation.rollouts import sample_generators


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
    return r.search_end if r.search_end >= 0 else len(r.token_ids)


def _episodes_and_cuts(engine, r) -> tuple[tuple[Episode, ...], tuple[int, ...], int]:
    """The rollout's attempts as episodes, the probe cuts (start, then every episode end) in
    ``r.token_ids`` and the end of the search."""
    end = search_end(engine, r)
    pieces = [engine.id_text[t] for t in r.token_ids[r.start_len:end]]
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    text = "".join(pieces)
    episodes = engine.env.episodes(text, offsets)
    ends = [e.tok_end for e in episodes if e.tok_end > 0]
    cuts = tuple(sorted({r.start_len} | {r.start_len + e for e in ends}))
    return tuple(episodes), cuts, end


def episode_curves(engine, rolls: list, estimator: str = "exact", samples: int = 8,
                   seed: int = 0, first: int = 0) -> list[EpisodeCurve]:
    """Split each rollout's search into episodes and read the meta-prover's J after each:
    ``exact`` (METHOD.md (3), finite answer sets: teacher-forced probability of the reference,
    all rollouts' probes in batched trees) or ``sampled`` (METHOD.md (2): ``samples`` forced
    answers per prefix, decoded over the shared prefix and graded; ``first``: the index of
    ``rolls[0]`` in the whole run when ``rolls`` is one process's shard)."""
    if not rolls:
        return []
    shapes = [_episodes_and_cuts(engine, r) for r in rolls]
    jobs = [ProbeJob(tuple(r.token_ids[:end]), cuts) for r, (_, cuts, end) in zip(rolls, shapes)]
    if estimator == "exact":
        answers = [engine.encode(r.problem.answer) for r in rolls]
        j_rows = [[math.exp(float(row.sum())) for row in logp]
                  for logp in engine.backend.probe_logprobs_batch(jobs, engine.term_ids, answers)]
    elif estimator == "sampled":
        j_rows = []  # rollout first + i draws its probes from its own generator (as in run_from)
        for gen, r, job in zip(sample_generators(seed, len(rolls), first), rolls, jobs):
            drawn = engine.backend.probe_sampled(job, engine.term_ids, engine.env.answer_length(r.problem), samples,
                                                 engine.temperature, gen)  # (n_cuts, K, L)
            flat = engine.forced_correct(r.problem, [a for cut in drawn.tolist() for a in cut])
            j_rows.append(j_sampled(np.array(flat, dtype=float).reshape(len(job.cuts), samples)).tolist())
    else:
        raise ValueError(f"estimator must be 'exact' or 'sampled', got {estimator!r}")
    curves = []
    for r, (episodes, cuts, end), j_values in zip(rolls, shapes, j_rows):
        counted = [0]
        for role in r.roles[r.start_len:end]:
            counted.append(counted[-1] + (role == Role.GENERATED))
        tokens = tuple(counted[c - r.start_len] for c in cuts)
        curves.append(EpisodeCurve(episodes, tokens, tuple(j_values), tuple(c - r.start_len for c in cuts)))
    return curves


def episode_curve(engine, r) -> EpisodeCurve:
    """``episode_curves`` of one rollout."""
    return episode_curves(engine, [r])[0]

"""Meta-prover curves of rollouts: J after every episode, read with shared-prefix probes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mrt_core.envs.base import Role
from mrt_core.episodes import Episode
from mrt_core.meta_prover import j_standard_error, needs_more_samples
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
    j_se: tuple[float, ...] = ()  # J's standard error at each cut (0: exact); NaN where not probed
    probe_tokens: int = 0  # tokens the probes pushed through the prover (for the compute ledger)
    j_samples: tuple[int, ...] = ()  # sampled: answers drawn at each cut (adaptive K)


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


def episode_curves(engine, rolls: list, estimator: str = "exact", samples: int = 8, seed: int = 0,
                   first: int = 0, *, max_samples: int | None = None, half_width: float = 0.1, z: float = 1.96,
                   prover=None, probed: list[bool] | None = None) -> list[EpisodeCurve]:
    """Split each rollout's search into episodes and read the meta-prover's J after each:
    ``exact`` (METHOD.md (3), finite answer sets: teacher-forced probability of the reference,
    all rollouts' probes in batched trees) or ``sampled`` (METHOD.md (2): ``samples`` forced
    answers per prefix, decoded over the shared prefix and graded; with ``max_samples``,
    ``samples`` more at a time where J's interval is wider than ``+-half_width``).

    ``first``: the index of ``rolls[0]`` in the whole run when ``rolls`` is one process's shard;
    ``prover``: the engine whose model reads J (default ``engine``); ``probed``: which rollouts
    to read at all (the others get NaN for J and cost nothing)."""
    if not rolls:
        return []
    prover = prover or engine
    probed = probed or [True] * len(rolls)
    shapes = [_episodes_and_cuts(engine, r) for r in rolls]
    jobs = [ProbeJob(tuple(r.token_ids[:end]), cuts) for r, (_, cuts, end) in zip(rolls, shapes)]
    read = [i for i, keep in enumerate(probed) if keep]
    read_j = [((math.nan,) * len(job.cuts), (math.nan,) * len(job.cuts), 0, ()) for job in jobs]
    if estimator == "exact":
        answers = [engine.encode(rolls[i].problem.answer) for i in read]
        logps = prover.backend.probe_logprobs_batch([jobs[i] for i in read], engine.term_ids, answers)
        for i, logp, ans in zip(read, logps, answers):
            cost = len(jobs[i].token_ids) + len(jobs[i].cuts) * (len(engine.term_ids) + len(ans))
            read_j[i] = (tuple(math.exp(float(row.sum())) for row in logp), (0.0,) * len(jobs[i].cuts), cost, ())
    elif estimator == "sampled":
        gens = sample_generators(seed, len(rolls), first)  # rollout first + i draws from its own generator
        for i in read:
            read_j[i] = _sampled_j(prover, engine, rolls[i], jobs[i], samples, max_samples or samples, half_width, z,
                                gens[i])
    else:
        raise ValueError(f"estimator must be 'exact' or 'sampled', got {estimator!r}")
    curves = []
    for r, (episodes, cuts, end), (j_values, j_se, cost, drawn) in zip(rolls, shapes, read_j):
        counted = [0]
        for role in r.roles[r.start_len:end]:
            counted.append(counted[-1] + (role == Role.GENERATED))
        tokens = tuple(counted[c - r.start_len] for c in cuts)
        curves.append(EpisodeCurve(episodes, tokens, j_values, tuple(c - r.start_len for c in cuts), j_se, cost,
                                   drawn))
    return curves


def _sampled_j(prover, engine, r, job: ProbeJob, k0: int, k_max: int, half_width: float, z: float, gen):
    """J, its standard error and the probe tokens of one rollout, sampled ``k0`` answers at a
    time per cut until every cut's interval is narrow enough or has ``k_max`` answers."""
    length = engine.env.answer_length(r.problem)
    hits, drawn = np.zeros(len(job.cuts)), np.zeros(len(job.cuts), dtype=int)
    wanted, cost = list(range(len(job.cuts))), len(job.token_ids)
    while wanted:
        sub = ProbeJob(job.token_ids, tuple(job.cuts[c] for c in wanted))
        k = min(k0, k_max - int(drawn[wanted].max()))
        answers = prover.backend.probe_sampled(sub, engine.term_ids, length, k, engine.temperature, gen)
        grades = np.array(engine.forced_correct(r.problem, [a for cut in answers.tolist() for a in cut]), dtype=float)
        hits[wanted] += grades.reshape(len(wanted), k).sum(axis=1)
        drawn[wanted] += k
        cost += len(wanted) * (len(engine.term_ids) + k * length)
        more = needs_more_samples(hits[wanted], drawn[wanted], half_width, k_max, z)
        wanted = [c for c, m in zip(wanted, more) if m]
    return (tuple((hits / drawn).tolist()), tuple(j_standard_error(hits, drawn, z).tolist()), cost,
            tuple(int(k) for k in drawn))


def curves_for(engine, rolls: list, meta_prover, seed: int, first: int = 0, prover=None,
               probed: list[bool] | None = None) -> list[EpisodeCurve]:
    """``episode_curves`` with the ``meta_prover`` section's estimator and variance control."""
    return episode_curves(engine, rolls, meta_prover.estimator, meta_prover.samples, seed, first,
                          max_samples=meta_prover.max_samples, half_width=meta_prover.half_width, z=meta_prover.z,
                          prover=prover, probed=probed)


def episode_curve(engine, r) -> EpisodeCurve:
    """``episode_curves`` of one rollout."""
    return episode_curves(engine, [r])[0]

"""Prefixes of a round: where continuations start (METHOD.md (8)-(13)).

The round's start policy samples rollouts on training problems; each is cut after k of its
episodes (k uniform in 0..``max_prefix_episodes``, unsolved, budget left) and the meta-prover's
``J(mu | c)`` is read at every cut. The pool is made once per round (its start policy cannot be
re-sampled after updates), so it is saved with the round's resume state.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from mrt_core.envs.base import Role
from mrt_lib.common import derive_seed
from mrt_lib.distributed import gather
from mrt_lib.generation.curves import EpisodeCurve
from mrt_lib.generation.rollouts import Rollout, RolloutEngine, Start
from mrt_lib.rl.sampling import sample_shard


@dataclass
class Prefix:
    """A start for continuations: the first ``episodes`` episodes of a rollout of the round's
    start policy, with ``J(mu | c)`` there and the generated tokens it already spent."""

    start: Start
    j: float
    gen_tokens: int
    episodes: int


def prefix_cuts(engine: RolloutEngine, r: Rollout, curve: EpisodeCurve, cfg) -> list[int]:
    """Episode counts k at which ``r`` may be cut: at most ``max_prefix_episodes``, unsolved,
    and leaving at least one token of the training budget."""
    ks = []
    for k in range(min(len(curve.j), cfg.max_prefix_episodes + 1)):
        if curve.tokens[k] >= cfg.train_budget:
            break
        if k and getattr(engine.prefix_of(r, r.start_len + curve.cut_offsets[k]).state, "solved", False):
            break
        ks.append(k)
    return ks


def sample_prefixes(engine: RolloutEngine, problems, cfg, seed: int, round_n: int, n: int, meta_prover,
                    prover=None, probe_share: float = 1.0, chunk: int = 0) -> tuple[list[Prefix], dict]:
    """``n`` prefixes from rollouts of the engine's current policy (the round's start), J at
    each read by ``prover`` (on ``probe_share`` of them: the arms that do not read J(mu | c) only
    log it), and their cost: the tokens those rollouts generated (their whole cost, not only the
    kept prefixes) and the probes'. Under N processes each samples 1/N of the rollouts; all get
    the same pool. ``chunk`` > 0 draws another pool (fresh prompts for extra updates)."""
    part = (round_n,) + ((chunk,) if chunk else ())  # chunk 0: the round's own pool
    rng = random.Random(derive_seed(seed, "prefixes", *part))
    drawn = [rng.choice(problems) for _ in range(n)]
    # each process samples and probes its shard; every process then cuts the whole pool
    starts = [Start(p, i) for i, p in enumerate(drawn)]
    rolls, curves, _ = sample_shard(engine, starts, cfg.train_budget, derive_seed(seed, "prefix-rollouts", *part),
                                    derive_seed(seed, "prefix-j", *part), meta_prover, cfg.batch_size,
                                    desc="prefix rollouts", prover=prover, probe_share=probe_share)
    rolls, curves = gather(rolls), gather(curves)
    pool = []
    for i, (r, curve) in enumerate(zip(rolls, curves)):
        k = rng.choice(prefix_cuts(engine, r, curve, cfg))
        start = engine.prefix_of(r, r.start_len + curve.cut_offsets[k], sample=i)
        pool.append(Prefix(start, curve.j[k], curve.tokens[k], k))
    return pool, {"generated": sum(r.budget_tokens + len(r.answer_ids) for r in rolls),
                  "teacher_forced": sum(c.probe_tokens for c in curves)}


def prefix_record(p: Prefix) -> dict:
    j = None if math.isnan(p.j) else p.j  # not read (rl.log_probe_share): null, as JSON has no NaN
    return {"problem_id": p.start.problem.id, "token_ids": list(p.start.token_ids),
            "roles": [x.value for x in p.start.roles], "j": j, "gen_tokens": p.gen_tokens, "episodes": p.episodes}


def prefix_from_record(engine: RolloutEngine, rec: dict, problems: dict, i: int) -> Prefix:
    roles = [Role(x) for x in rec["roles"]]
    probe = Rollout(problems[rec["problem_id"]], i, list(rec["token_ids"]), roles, None)
    j = math.nan if rec["j"] is None else rec["j"]
    return Prefix(engine.prefix_of(probe, len(roles), sample=i), j, rec["gen_tokens"], rec["episodes"])


def continuation_starts(prefixes: list[Prefix], answer_now: bool, cfg) -> list[Start]:
    """G starts per prefix with the budget the prefix left; with ``answer_now`` (the mixed arm)
    the first ``cfg.answer_now`` of each group answer at once (the meta-prover's samples,
    METHOD.md (13))."""
    starts = []
    for p in prefixes:
        for g in range(cfg.group_size):
            now = answer_now and g < cfg.answer_now
            s = p.start
            starts.append(Start(s.problem, g, s.token_ids, s.roles, s.state, cfg.train_budget - p.gen_tokens, now))
    return starts

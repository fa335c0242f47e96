"""MRT-B: warm-start traces with an explicit backtrack, built from the base model's searches
in the code-search environment (METHOD.md (18)).

The base model searches until its first attempt that fails *after* confirming at least one step
(z_0); resampling z_0 from each of its step prefixes is scored (sampled, or exactly from one
teacher-forced pass), the best step is chosen and the trace written as the search so far, the
failed attempt, a backtrack to that step, a successful new attempt, the answer. Every trace is
replayed through the environment, so its feedback is exactly the environment's.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mrt_core.backtrack import choose_backtrack_step, plan_trace, success_gain
from mrt_core.envs.base import Problem, Role, Segment
from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.generation.rollouts import RolloutEngine, Start

SEARCH_REJECTS = ("malformed_search", "no_failure_after_a_step")


class SynthesisError(RuntimeError):
    """Too many malformed base searches: dropping them would silently bias the data."""


def attempt_over(state) -> bool:
    return state.solved or state.digit == 0


def replay(env: CodeSearchEnv, problem: Problem, actions) -> tuple[list[Segment], object]:
    """Segments of prompt + actions with the environment's answers, and the final state."""
    state, segments = env.initial_state(problem), [Segment(problem.prompt, Role.PROMPT)]
    for a in actions:
        result = env.step(state, a)
        state = result.state
        segments.append(Segment(a, Role.GENERATED))
        if result.observation:
            segments.append(Segment(result.observation, Role.ENV))
    return segments, state


@dataclass
class Candidate:
    """A failed attempt z_0 (after the ``earlier`` actions) and what resampling it from each of
    its step prefixes gave."""

    problem: Problem
    first: list[str]
    success: list[float] = field(default_factory=list)  # j = 0..fail step
    continuations: list[list[str] | None] = field(default_factory=list)
    earlier: list[str] = field(default_factory=list)


def prefix_start(engine: RolloutEngine, problem: Problem, actions: list[str], k: int) -> Start:
    """A rollout start holding the prompt and the first actions with their feedback."""
    segments, state = replay(engine.env, problem, actions)
    ids, roles = [], []
    for seg in segments:
        piece = engine.encode(seg.text)
        ids += piece
        roles += [seg.role] * len(piece)
    return Start(problem, k, tuple(ids), tuple(roles), state)


def failed_after_a_step(state) -> bool:
    """The attempt just failed at a step > 0 (there is a confirmed step to go back to)."""
    return state.digit == 0 and not state.pending_backtrack and state.last_fail_step >= 1 and not state.solved


def search_until_deep_failure(engine, problems, cfg, seed: int) -> tuple[list[tuple], Counter]:
    """Base rollouts until the first attempt that fails after a confirmed step, the solve, or
    the budget (``cfg``: the ``synthesize_backtracks`` section). Returns (problem, earlier
    actions, failed attempt's actions) and reject counts."""
    rolls = engine.run(problems, cfg.searches_per_problem, cfg.search_budget, seed, cfg.batch_size,
                       stop_when=lambda s: s.solved or failed_after_a_step(s), desc="search to a failed attempt")
    failed, rejects = [], Counter()
    for r in rolls:
        actions = r.generated_texts(engine.id_text, r.start_len)
        if not all(engine.env.is_action(a) for a in actions) or r.state.backtracks:
            rejects["malformed_search"] += 1  # gave up early or wrote something that is not a step
        elif r.state.solved or r.stopped_by != "condition":
            rejects["no_failure_after_a_step"] += 1  # solved first, or never failed past step 0
        else:
            n = r.state.last_fail_step + 1  # the failed attempt: the last n actions (steps 0..fail)
            failed.append((r.problem, actions[:-n], actions[-n:]))
    return failed, rejects


def estimate_prefixes(engine, failed: list[tuple], cfg, seed: int) -> list[Candidate]:
    """Resample each failed attempt K = ``cfg.n_resamples`` times from each step prefix
    (METHOD.md (18)); an attempt is at most the code's ``n_digits`` steps."""
    k_samples = cfg.n_resamples
    starts, index = [], []
    for c, (problem, earlier, first) in enumerate(failed):
        for j in range(len(first)):  # keep j = 0 .. fail-step steps; step `fail` itself is resampled
            starts += [prefix_start(engine, problem, earlier + first[:j], k) for k in range(k_samples)]
            index += [(c, j)] * k_samples
    rolls = engine.run_from(starts, engine.env.spec.n_digits, seed, cfg.batch_size,
                            stop_when=attempt_over, desc="resample step prefixes")
    cands = [Candidate(p, first, [0.0] * len(first), [None] * len(first), earlier) for p, earlier, first in failed]
    for (c, j), r in zip(index, rolls):
        if r.state.solved:
            cands[c].success[j] += 1 / k_samples
            if cands[c].continuations[j] is None:
                cands[c].continuations[j] = r.generated_texts(engine.id_text, r.start_len)
    return cands


def exact_prefixes(engine, failed: list[tuple]) -> list[Candidate]:
    """Exact success of resampling the failed attempt from each step prefix (METHOD.md (18)
    with the exact estimator (3)). The only attempt from step j that succeeds writes the code's
    digits j..D-1 (the digits before the failure were confirmed, so z_0[:j] is the code's
    prefix): ``success_j = prod_{t >= j} p(c_t | search, c_<t)``, all read from one
    teacher-forced pass over the search followed by the correct attempt."""
    cands, seqs, gen_positions = [], [], []
    for problem, earlier, first in failed:
        code = list(problem.answer)
        start = prefix_start(engine, problem, earlier + code, 0)
        seqs.append(start.token_ids)
        gen_positions.append([i for i, r in enumerate(start.roles) if r == Role.GENERATED][-len(code):])
        cands.append(Candidate(problem, first, [], [code[j:] for j in range(len(first))], earlier))
    for cand, logp, positions in zip(cands, engine.backend.token_logprobs(seqs), gen_positions):
        digit_lp = [logp[p - 1] for p in positions]  # log p(c_t | everything before it)
        cand.success = [math.exp(sum(digit_lp[j:])) for j in range(len(cand.first))]
    return cands


def build_row(env: CodeSearchEnv, cand: Candidate, variant: str, provenance: dict) -> tuple[dict | None, str]:
    """The warm-start trace of one candidate (``variant``: how the backtrack is written), or
    None and the reason it was rejected."""
    step = choose_backtrack_step(cand.success)
    cont = cand.continuations[step]
    if cont is None:
        return None, "no_successful_resample"
    plan = plan_trace(variant, cand.first, step, cont, env.spec.backtrack_text, env.spec.symbols)
    segments, state = replay(env, cand.problem, cand.earlier + list(plan.actions()))
    if not state.solved:
        return None, "malformed_replay"
    segments += [Segment(env.spec.termination_text, Role.GENERATED), Segment(cand.problem.answer, Role.GENERATED)]
    first_len = len("".join(s.text for s in replay(env, cand.problem, cand.earlier + cand.first)[0]))
    row = {
        "problem_id": cand.problem.id, "prompt": cand.problem.prompt, "variant": variant,
        "text": "".join(s.text for s in segments), "segments": [[s.text, s.role.value] for s in segments],
        "suffix_start": first_len,  # characters through the failed attempt (for loss on the suffix only)
        "fail_step": len(cand.first) - 1, "chosen_step": step, "success_by_step": cand.success,
        **provenance,
    }
    return row, ""


def synthesis_stats(problems, failed, cands, rows, rejects) -> dict:
    chosen = [r["chosen_step"] for r in rows]
    gains = [success_gain(c.success, choose_backtrack_step(c.success)) for c in cands]
    return {
        "n_problems": len(problems), "n_searches": len(failed) + sum(rejects[k] for k in SEARCH_REJECTS),
        "n_failed_attempts": len(failed), "n_rows": len(rows),
        "yield": len(rows) / max(len(failed), 1), "rejects": dict(sorted(rejects.items())),
        "mean_backtrack_step": float(np.mean(chosen)) if chosen else float("nan"),
        "mean_fail_step": float(np.mean([len(c.first) - 1 for c in cands])) if cands else float("nan"),
        "mean_success_chosen": float(np.mean([max(c.success) for c in cands])) if cands else float("nan"),
        "mean_success_restart": float(np.mean([c.success[0] for c in cands])) if cands else float("nan"),
        "mean_success_gain_over_restart": float(np.mean(gains)) if gains else float("nan"),
    }

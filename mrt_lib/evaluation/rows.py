"""One model's numbers at one budget, a simulated reference policy's, the records of every
rollout, and an RL arm aggregated over its seeds (METHOD.md (19))."""

from __future__ import annotations

import random

import numpy as np

from mrt_core.envs.base import Role
from mrt_core.envs.code_search import play
from mrt_core.metrics import accuracy, bootstrap_ci, seed_interval
from mrt_lib.generation.rollouts import ROLE_CHAR, Rollout


def state_count(r: Rollout, name: str) -> float:
    """A counter of the environment's state (steps, wasted, attempts, ...); 0 where the
    environment keeps none (text problems have no wasted steps or attempts)."""
    return float(getattr(r.state, name, 0))


def model_row(rolls: list[Rollout], n_samples: int, n_boot: int, seed: int, events: list) -> dict:
    """Accuracy with a bootstrap CI over problems, and how the budget was spent."""
    correct = np.array([r.correct for r in rolls], dtype=float).reshape(-1, n_samples)
    lo, hi = bootstrap_ci(correct.mean(axis=1), n_boot, seed)
    steps = sum(state_count(r, "steps") for r in rolls)
    failed_first = [ev[0][1] for ev in events if ev]
    deep = [b for ev in events for step, b in ev if step >= 1]  # failures with a confirmed step to keep
    return {
        "accuracy": accuracy(correct),
        "ci_low": lo,
        "ci_high": hi,
        "j_exact": float(np.mean([r.j_exact for r in rolls])),
        "wasted_share": sum(state_count(r, "wasted") for r in rolls) / max(steps, 1),
        "attempts": float(np.mean([state_count(r, "attempts") for r in rolls])),
        "solved_share": float(np.mean([state_count(r, "solved") for r in rolls])),
        "stopped_by_policy": float(np.mean([r.stopped_by == "policy" for r in rolls])),
        "generated_tokens": float(np.mean([r.budget_tokens for r in rolls])),
        "forced_tokens": float(np.mean([r.role_count(Role.FORCED) for r in rolls])),
        "forced_continuations": float(np.mean([r.forced_continuations for r in rolls])),
        "backtracks_per_rollout": float(np.mean([state_count(r, "backtracks") for r in rolls])),
        "backtrack_after_failed_first": float(np.mean(failed_first)) if failed_first else float("nan"),
        "n_failed_first": len(failed_first),
        "backtrack_after_deep_failure": float(np.mean(deep)) if deep else float("nan"),
        "n_deep_failures": len(deep),
    }


def reference_row(env, problems, guess, budget: int, n: int, seed: int) -> dict:
    """Expected accuracy of a simulated policy with Bayes-optimal forced answers (mean J*)."""
    rng = random.Random(seed)
    states = [play(env, p, guess, budget, rng) for p in problems for _ in range(n)]
    steps = sum(s.steps for s in states)
    return {
        "accuracy": float(np.mean([s.oracle_j() for s in states])),
        "wasted_share": sum(s.wasted for s in states) / max(steps, 1),
        "attempts": float(np.mean([s.attempts for s in states])),
    }


def rollout_record(r: Rollout, budget: int, tokenizer) -> dict:
    return {
        "problem_id": r.problem.id,
        "sample": r.sample,
        "budget": budget,
        "text": tokenizer.decode(r.token_ids),
        "roles": "".join(ROLE_CHAR[x.value] for x in r.roles),
        "answer": r.answer,
        "correct": r.correct,
        "j_exact": r.j_exact,
        "stopped_by": r.stopped_by,
        "steps": state_count(r, "steps"),
        "wasted": state_count(r, "wasted"),
        "attempts": state_count(r, "attempts"),
    }


def aggregate_seeds(rows: list[dict], details: list[dict]) -> tuple[dict, dict]:
    """One arm over its seeds: per budget, the mean of every number and, for accuracy and
    regret, the Student-t interval over seeds (METHOD.md (19)); with one seed, that seed's own
    bootstrap interval over problems. Details: pass@k / maj@k and progress averaged over seeds,
    the progress histograms summed, extrapolation like the rows."""
    def combine(per_seed: list[dict]) -> dict:
        out = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
        for key in ("accuracy", "regret", "regret_votes"):
            if key in per_seed[0] and len(per_seed) > 1:
                low, high = ("ci_low", "ci_high") if key == "accuracy" else (f"{key}_ci_low", f"{key}_ci_high")
                _, out[low], out[high] = seed_interval(np.array([r[key] for r in per_seed]))
        return out | {"n_seeds": len(per_seed), "ci_over": "seeds" if len(per_seed) > 1 else "problems"}

    budgets = list(rows[0])
    merged = {b: combine([r[b] for r in rows]) for b in budgets}
    progress_rows = [d["progress"] for d in details]
    agg = {
        "pass_maj": {b: [row | {k: float(np.mean([d["pass_maj"][b][i][k] for d in details])) for k in row if k != "k"}
                         for i, row in enumerate(details[0]["pass_maj"][b])] for b in details[0]["pass_maj"]},
        "progress": {k: float(np.mean([p[k] for p in progress_rows])) for k in progress_rows[0]
                     if k != "progress_histogram"}
        | {"progress_histogram": np.sum([p["progress_histogram"] for p in progress_rows], axis=0).tolist()},
        "extrapolation": {b: combine([d["extrapolation"][b] for d in details]) for b in details[0]["extrapolation"]},
    }
    return merged, agg


def flat_metrics(results: dict) -> dict:
    """Every number of every row as one MLflow metric ``<model>.B<budget>.<name>``."""
    return {f"{name}.B{b}.{k}": v for name, rows in results.items() for b, row in rows.items() for k, v in row.items()
            if isinstance(v, (int, float))}


DETAILS_SCHEMA = {
    "<model>.pass_maj.<budget>": "list of {k, pass_at_k, maj_at_k, total_tokens}",
    "<model>.extrapolation.<budget>": "accuracy row with budget forcing past the evaluated budgets "
                                      "(forced_tokens, forced_continuations counted)",
    "<model>.progress": "{mean_progress, zero_progress_share, episodes_per_rollout, "
                        "progress_histogram (20 bins on [-1, 1])}",
    "token_efficiency": "list of {a, b, level, tokens_a, tokens_b, ratio_b_over_a "
                        "(null if a model never reaches it), note}",
    "compute": "{<arm>: {per_seed: list of {rollouts, steps, prefix_generated_tokens, generated_tokens, "
               "probe_tokens, total_tokens} summed over rounds, mean: the same averaged over seeds}}",
}

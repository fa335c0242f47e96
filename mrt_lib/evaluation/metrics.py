"""Evaluation metrics over rollouts (edges of ``evaluate``): meta-prover curves and regret,
pass@k / maj@k against tokens, token efficiency between models. The math is ``mrt_core``'s;
this module only gathers what the rollouts hold and asks the meta-prover for the rest."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from mrt_core.metrics import bootstrap_ci, maj_at_k_batch, pass_at_k, token_efficiency
from mrt_core.regret import VOTE_COUNTS, progress, regret_curve, votes_normalized_regret, zero_progress_share
from mrt_lib.generation.curves import EpisodeCurve, curves_for, search_end
from mrt_lib.generation.rollouts import Rollout, RolloutEngine

PROGRESS_BINS = np.linspace(-1.0, 1.0, 21)


def vote_accuracy(engine: RolloutEngine, r: Rollout, curve: EpisodeCurve, k: int, seed: int) -> np.ndarray:
    """``maj@m(c_j)`` for m in VOTE_COUNTS at every episode end of one rollout, from ``k``
    sampled forced answers per prefix (shared-prefix probes). Shape (k_episodes + 1, 4)."""
    import torch

    from mrt_lib.generation.prefix_tree import ProbeJob

    end = search_end(engine, r)
    cuts = tuple(r.start_len + int(c) for c in curve.cut_offsets)
    gen = torch.Generator().manual_seed(seed)
    answers = engine.backend.probe_sampled(ProbeJob(tuple(r.token_ids[:end]), cuts), engine.term_ids,
                                           engine.env.answer_length(r.problem), k, engine.temperature, gen)
    out = np.zeros((len(cuts), len(VOTE_COUNTS)))
    for j, per_cut in enumerate(answers.tolist()):
        texts = engine.forced_answers(r.problem, per_cut)
        for i, m in enumerate(VOTE_COUNTS):
            out[j, i] = maj_at_k_batch([texts], [r.problem.answer], min(m, k))
    return out


def curve_rows(engine: RolloutEngine, rolls: list[Rollout], budgets: list[int], n_samples: int, n_boot: int,
               seed: int, vote_samples: int, zero_threshold: float, meta_prover) -> dict:
    """Normalised regret (oracle, METHOD.md (6); votes vs episode, (7)) per budget with a
    bootstrap CI over problems, and the progress distribution (METHOD.md (4)), from the
    meta-prover curve of every rollout."""
    curves = curves_for(engine, rolls, meta_prover, seed)
    oracle = np.array([regret_curve(np.array(c.tokens), np.array(c.j), budgets) for c in curves])
    answer_tokens = engine.env.answer_length(rolls[0].problem) + len(engine.term_ids)
    votes = []
    for r, c in zip(rolls, curves):  # one set of sampled votes per rollout serves every budget
        maj = vote_accuracy(engine, r, c, vote_samples, seed)
        votes.append([votes_normalized_regret(np.array(c.tokens), np.array(c.j), maj, answer_tokens, b)
                      for b in budgets])
    votes = np.array(votes)
    prog = np.concatenate([progress(np.array(c.j)) for c in curves])
    rows = {}
    for i, b in enumerate(budgets):
        row = {}
        for name, values in (("regret", oracle), ("regret_votes", votes)):
            per_problem = values[:, i].reshape(-1, n_samples).mean(axis=1)
            lo, hi = bootstrap_ci(per_problem, n_boot, seed + i)
            row |= {name: float(per_problem.mean()), f"{name}_ci_low": lo, f"{name}_ci_high": hi}
        rows[b] = row
    summary = {
        "mean_progress": float(prog.mean()) if prog.size else float("nan"),
        "zero_progress_share": zero_progress_share(prog, zero_threshold),
        "episodes_per_rollout": float(np.mean([len(c.j) - 1 for c in curves])),
        "progress_histogram": np.histogram(np.clip(prog, -1, 1), PROGRESS_BINS)[0].tolist(),
    }
    return {"by_budget": rows, "progress": summary, "curves": curves}


def pass_maj_rows(rolls: list[Rollout], n_samples: int) -> list[dict]:
    """pass@k (unbiased, METHOD.md (15)) and maj@k (METHOD.md (16)) for k = 1, 2, 4, ... <= n,
    with the total tokens k samples spend (generated + answer tokens)."""
    by_problem = defaultdict(list)
    for r in rolls:
        by_problem[r.problem.id].append(r)
    per = list(by_problem.values())
    tokens_per_sample = float(np.mean([r.budget_tokens + len(r.answer_ids) for r in rolls]))
    out, k = [], 1
    while k <= n_samples:
        passk = float(np.mean([pass_at_k(len(g), sum(r.correct for r in g), k) for g in per]))
        majk = maj_at_k_batch([[r.answer or None for r in g] for g in per], [g[0].problem.answer for g in per], k)
        out.append({"k": k, "pass_at_k": passk, "maj_at_k": majk, "total_tokens": k * tokens_per_sample})
        k *= 2
    return out


def efficiency_rows(results: dict, models: list[str], budgets: list[int], levels: list[float]) -> list[dict]:
    """Tokens each model needs to reach each accuracy level, and their ratio (METHOD.md (17));
    a level a model never reaches is said so, with no ratio."""
    rows = []
    for a in models:
        for b in models:
            if a >= b:
                continue
            acc_a = [results[a][x]["accuracy"] for x in budgets]
            acc_b = [results[b][x]["accuracy"] for x in budgets]
            for e in token_efficiency(budgets, acc_a, budgets, acc_b, levels):
                note = re.sub(r"\bB\b", b, re.sub(r"\bA\b", a, e.note))  # name the models
                rows.append({"a": a, "b": b, "level": e.level, "tokens_a": e.tokens_a, "tokens_b": e.tokens_b,
                             "ratio_b_over_a": e.ratio, "note": note})
    return rows

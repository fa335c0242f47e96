"""One step's rollouts as tensors for the arms, what the step did, and its stored records."""

from __future__ import annotations

import math

import numpy as np
import torch

from mrt_core.advantages import GroupedRollouts
from mrt_core.compute import Ledger
from mrt_core.envs.base import Role
from mrt_core.meta_prover import progress_standard_error, shrink_progress
from mrt_core.regret import progress, zero_progress_share
from mrt_lib.generation.curves import EpisodeCurve
from mrt_lib.generation.rollouts import ROLE_CHAR, Rollout, RolloutEngine, Start
from mrt_lib.rl.prefixes import Prefix


def token_episodes(r: Rollout, curve: EpisodeCurve) -> list[int]:
    """Episode index of every token of ``r`` from its start on (METHOD.md (12)); tokens after
    the last episode (termination text, answer) get the index k = number of episodes."""
    k = len(curve.j) - 1
    index = [k] * (len(r.token_ids) - r.start_len)
    for e, ep in enumerate(curve.episodes):
        for t in range(ep.tok_start, ep.tok_end):
            index[t] = e
    return index


def group(rolls: list[Rollout], curves: list[EpisodeCurve], prefixes: list[Prefix], starts: list[Start],
          G: int, shrink: str = "none", z: float = 1.96) -> GroupedRollouts:
    """The step's rollouts as (P, G, ...) tensors for the arms' ``advantages``; progress shrunk
    toward zero by its standard error (``meta_prover.shrink``; exact J has none)."""
    P, T = len(prefixes), max(len(r.token_ids) for r in rolls)
    k = max(1, max(len(c.j) - 1 for c in curves))
    progress_t = torch.zeros(P * G, k)
    episode_t = torch.zeros(P * G, T, dtype=torch.long)
    mask = torch.zeros(P * G, T, dtype=torch.bool)
    for i, (r, c) in enumerate(zip(rolls, curves)):
        se = progress_standard_error(np.array(c.j_se)) if c.j_se else np.zeros(len(c.j) - 1)
        prog = shrink_progress(progress(np.array(c.j)), se, shrink, z)
        progress_t[i, : len(prog)] = torch.tensor(prog, dtype=torch.float32)
        episode_t[i, r.start_len : len(r.token_ids)] = torch.tensor(token_episodes(r, c))
        mask[i, r.start_len : len(r.token_ids)] = torch.tensor([x == Role.GENERATED for x in r.roles[r.start_len:]])
    return GroupedRollouts(
        rewards=torch.tensor([float(r.correct) for r in rolls]).reshape(P, G),
        j_prefix=torch.tensor([p.j for p in prefixes], dtype=torch.float32),
        answer_now=torch.tensor([s.answer_now for s in starts]).reshape(P, G),
        progress=progress_t.reshape(P, G, k), n_episodes=torch.tensor([len(c.j) - 1 for c in curves]).reshape(P, G),
        token_episode=episode_t.reshape(P, G, T), mask=mask.reshape(P, G, T),
        gen_tokens=torch.tensor([prefixes[i // G].gen_tokens + r.budget_tokens for i, r in enumerate(rolls)]
                                ).reshape(P, G),
    )


def step_metrics(arm, rolls: list[Rollout], curves: list[EpisodeCurve], starts: list[Start], cfg) -> dict:
    """What one step's rollouts did (progress over the rollouts the meta-prover read), and what
    they cost: generated tokens, the probes' tokens (whatever they were for), and the update's
    tokens (``trained``: forward and backward in every PPO epoch; ``update_forward``: the
    old-policy and reference log-probs, no gradient)."""
    cont = [(r, c) for r, c, s in zip(rolls, curves, starts) if not s.answer_now]
    prog = np.concatenate([progress(np.array(c.j)) for _, c in cont]) if cont else np.zeros(0)
    prog = prog[~np.isnan(prog)]  # rollouts the meta-prover did not read (rl.log_probe_share)
    sequence_tokens = sum(len(r.token_ids) for r in rolls)
    return {
        "reward": float(np.mean([r.correct for r in rolls])),
        "continue_reward": float(np.mean([r.correct for r, _ in cont])) if cont else float("nan"),
        "mean_progress": float(prog.mean()) if prog.size else float("nan"),
        "zero_progress_share": zero_progress_share(prog, cfg.zero_threshold),
        "episodes_per_trace": float(np.mean([len(c.j) - 1 for _, c in cont])) if cont else float("nan"),
        "tokens_per_trace": float(np.mean([r.budget_tokens for r, _ in cont])) if cont else float("nan"),
        "generated_tokens": sum(r.budget_tokens + len(r.answer_ids) for r in rolls),
        "probe_tokens": sum(c.probe_tokens for c in curves),
        "trained_tokens": sequence_tokens * cfg.ppo_epochs,
        "update_forward_tokens": 2 * sequence_tokens,
    }


def rollout_record(r: Rollout, c: EpisodeCurve, engine: RolloutEngine, step: int, p: Prefix, now: bool,
                   adv: float) -> dict:
    out = r.token_ids[r.start_len:]
    return {
        "problem_id": r.problem.id, "step": step, "sample": r.sample, "prefix_episodes": p.episodes,
        "prefix_j": None if math.isnan(p.j) else p.j, "prefix_text": engine.tok.decode(r.token_ids[: r.start_len]),
        "text": engine.tok.decode(out), "roles": "".join(ROLE_CHAR[x.value] for x in r.roles[r.start_len:]),
        "episodes": [[e.char_start, e.char_end] for e in c.episodes], "episode_tokens": list(c.tokens),
        "episode_j": [None if math.isnan(j) else j for j in c.j], "reward": float(r.correct), "answer_now": now,
        "generated_tokens": r.budget_tokens, "mean_advantage": adv,
    }


def round_compute(run) -> dict:
    """The round's tokens so far by where they went: its prefix pool(s), its steps' rollouts, the
    probes (the pool's and the steps'), and the updates."""
    total = lambda key: sum(row[key] for row in run.history)  # noqa: E731
    return {
        "prefix_generated_tokens": run.prefix_cost["generated"], "generated_tokens": total("generated_tokens"),
        "probe_tokens": run.prefix_cost["teacher_forced"] + total("probe_tokens"),
        "trained_tokens": total("trained_tokens"), "update_forward_tokens": total("update_forward_tokens"),
    }


def ledger_of(c: dict) -> Ledger:
    """Tokens by where they went (``round_compute``, a round summary) as tokens by kind of pass."""
    return Ledger(generated=c["prefix_generated_tokens"] + c["generated_tokens"],
                  teacher_forced=c["probe_tokens"] + c["update_forward_tokens"], trained=c["trained_tokens"])


def round_ledger(run) -> Ledger:
    """``round_compute`` by kind of pass (``mrt_core.compute.Ledger``)."""
    return ledger_of(round_compute(run))


def round_summary(arm, seed: int, round_n: int, cfg, run, n_params: int) -> dict:
    """The round's metrics: training means, validation of the last policy (and which snapshot
    validated best), and its compute ledger (``mrt_core.compute``: every token the prefix
    rollouts, the steps' rollouts, the probes and the updates pushed through the model, whatever
    for; validation is not counted: it is the same for every arm)."""
    h, val = run.history, run.validations[-1]
    best = max(run.validations, key=lambda v: (v["val_accuracy"], -v["step"]))
    compute, ledger = round_compute(run), round_ledger(run)
    mean = lambda key: float(np.nanmean([row[key] for row in h]))  # noqa: E731
    return {
        "arm": arm.name, "seed": seed, "round": round_n, "steps": len(h),
        "rollouts": len(h) * cfg.prompts_per_step * cfg.group_size,
        **{key: mean(key) for key in ("reward", "mean_progress", "zero_progress_share", "episodes_per_trace",
                                      "tokens_per_trace", "kl")},
        **{k: v for k, v in val.items() if k != "step"}, "best_step": best["step"],
        "best_val_accuracy": best["val_accuracy"], **compute, "total_tokens": ledger.tokens,
        "n_params": n_params, "flops": ledger.flops(n_params),
    }

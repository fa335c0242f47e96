"""Stage ``rl_round``: one round of on-policy RL for one arm and seed (METHOD.md (8)-(14)).

A round, the same for every arm (they differ only in ``mrt_core.advantages.arm_advantages``):
1. Prefixes: the round's start policy samples rollouts on training problems; each is cut after
   k of its episodes (k uniform in 0..``max_prefix_episodes``, unsolved, budget left) and the
   meta-prover's exact ``J(mu | c)`` is read at every cut with batched tree probes.
2. ``steps_per_round`` policy updates: the current policy samples G continuations from each of
   ``prompts_per_step`` prefixes (total budget ``train_budget`` per trace; ``mrt_mixed``: the
   first ``answer_now`` of a group answer at once); the meta-prover scores every episode end of
   every continuation; the arm's advantages and the clipped loss (``mrt_core.loss``, with KL to
   the reference ``rl.start``) update the policy through Accelerate.
3. Validation every ``save_every`` steps and at the end, on held-out problems from the prompt at
   the training budget (same draws for every arm): accuracy, normalised regret, progress, KL to
   the reference.
4. Outputs under ``rl/<arm>/s<seed>/r<n>/``: ``model/`` (safetensors), ``rollouts.jsonl`` (every
   training rollout: episode spans, J per episode, role marks), ``metrics.json``.

Every ``save_every`` steps the policy is validated; the prefix pool and the training state are
saved under ``checkpoints/rl/<arm>/s<seed>/r<n>/`` (a re-run continues from the last saved step)
and, with ``rl.keep: last_and_best``, the best-validating snapshot is kept and written as
``best/`` beside the last policy when it is not the last.

    python -m tasks.rl_round --arm mrt_dense --seed 0 --round 1      # what dvc.yaml runs
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from mrt_core.advantages import GroupedRollouts, StarRule, arm_advantages
from mrt_core.envs.base import Role
from mrt_core.loss import kl_k3, policy_loss
from mrt_core.regret import normalized_regret, progress, zero_progress_share
from tasks.build_dataset import load_problems
from tasks.common import (
    Paths,
    atomic_path,
    derive_seed,
    jsonl_text,
    model_hash,
    read_json,
    setup_process,
    sha256_text,
    write_json_atomic,
)
from tasks.config import Params, RlConfig, load_params_or_exit
from tasks.environments import environment, make_engine
from tasks.generation import make_backend
from tasks.generation.curves import EpisodeCurve, episode_curves
from tasks.generation.hf import HFBackend
from tasks.generation.rollouts import Rollout, RolloutEngine, Start
from tasks.modeling import check_tokenizer, load_policy
from tasks.tracking import stage_run

ROLE_CHAR = {"prompt": "p", "gen": "g", "env": "e", "forced": "f"}


# --- where a round starts -------------------------------------------------------------------------

def round_model(paths: Paths, params: Params, arm: str, seed: int, n: int) -> Path:
    """The policy a round ``n + 1`` starts from: round ``n``'s model, or ``rl.start`` for n = 0
    (``rl/<arm>/s<seed>/r0/start.json``, written by the ``rl_start`` stage, names it)."""
    folder = paths.rl_round(arm, seed, n)
    if n == 0:
        pointer = read_json(folder / "start.json")
        return paths.model(pointer["model"])
    if not (folder / "model" / "config.json").exists():
        raise FileNotFoundError(f"{folder}/model is missing: run round {n} of {arm} (seed {seed}) first (dvc repro)")
    return folder / "model"


# --- prefixes -------------------------------------------------------------------------------------

@dataclass
class Prefix:
    """A start for continuations: the first ``episodes`` episodes of a rollout of the round's
    start policy, with ``J(mu | c)`` there and the generated tokens it already spent."""

    start: Start
    j: float
    gen_tokens: int
    episodes: int


def prefix_cuts(engine: RolloutEngine, r: Rollout, curve: EpisodeCurve, cfg: RlConfig) -> list[int]:
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


def sample_prefixes(engine: RolloutEngine, problems, cfg: RlConfig, seed: int, round_n: int, n: int,
                    meta_prover) -> tuple[list[Prefix], int]:
    """``n`` prefixes from rollouts of the engine's current policy (the round's start), and the
    tokens those rollouts generated (their whole cost, not only the kept prefixes)."""
    rng = random.Random(derive_seed(seed, "prefixes", round_n))
    drawn = [rng.choice(problems) for _ in range(n)]
    rolls = engine.run_from([Start(p, i) for i, p in enumerate(drawn)], cfg.train_budget,
                            derive_seed(seed, "prefix-rollouts", round_n), cfg.batch_size, desc="prefix rollouts")
    pool = []
    curves = episode_curves(engine, rolls, meta_prover.estimator, meta_prover.samples,
                            derive_seed(seed, "prefix-j", round_n))
    for i, (r, curve) in enumerate(zip(rolls, curves)):
        k = rng.choice(prefix_cuts(engine, r, curve, cfg))
        start = engine.prefix_of(r, r.start_len + curve.cut_offsets[k], sample=i)
        pool.append(Prefix(start, curve.j[k], curve.tokens[k], k))
    return pool, sum(r.budget_tokens + len(r.answer_ids) for r in rolls)


def prefix_record(p: Prefix) -> dict:
    return {"problem_id": p.start.problem.id, "token_ids": list(p.start.token_ids),
            "roles": [x.value for x in p.start.roles], "j": p.j, "gen_tokens": p.gen_tokens, "episodes": p.episodes}


def prefix_from_record(engine: RolloutEngine, rec: dict, problems: dict, i: int) -> Prefix:
    roles = [Role(x) for x in rec["roles"]]
    probe = Rollout(problems[rec["problem_id"]], i, list(rec["token_ids"]), roles, None)
    return Prefix(engine.prefix_of(probe, len(roles), sample=i), rec["j"], rec["gen_tokens"], rec["episodes"])


# --- one step -------------------------------------------------------------------------------------

def continuation_starts(prefixes: list[Prefix], arm: str, cfg: RlConfig) -> list[Start]:
    """G starts per prefix with the budget the prefix left; mixed arm: the first
    ``answer_now`` of each group answer at once (the meta-prover's samples, METHOD.md (13))."""
    starts = []
    for p in prefixes:
        for g in range(cfg.group_size):
            now = arm == "mrt_mixed" and g < cfg.answer_now
            s = p.start
            starts.append(Start(s.problem, g, s.token_ids, s.roles, s.state, cfg.train_budget - p.gen_tokens, now))
    return starts


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
          G: int) -> GroupedRollouts:
    """The step's rollouts as (P, G, ...) tensors for ``arm_advantages``."""
    P, T = len(prefixes), max(len(r.token_ids) for r in rolls)
    k = max(1, max(len(c.j) - 1 for c in curves))
    progress_t = torch.zeros(P * G, k)
    episode_t = torch.zeros(P * G, T, dtype=torch.long)
    mask = torch.zeros(P * G, T, dtype=torch.bool)
    for i, (r, c) in enumerate(zip(rolls, curves)):
        prog = progress(np.array(c.j))
        progress_t[i, : len(prog)] = torch.tensor(prog, dtype=torch.float32)
        episode_t[i, r.start_len : len(r.token_ids)] = torch.tensor(token_episodes(r, c))
        mask[i, r.start_len : len(r.token_ids)] = torch.tensor([x == Role.GENERATED for x in r.roles[r.start_len:]])
    return GroupedRollouts(
        rewards=torch.tensor([float(r.correct) for r in rolls]).reshape(P, G),
        j_prefix=torch.tensor([p.j for p in prefixes], dtype=torch.float32),
        answer_now=torch.tensor([s.answer_now for s in starts]).reshape(P, G),
        progress=progress_t.reshape(P, G, k), n_episodes=torch.tensor([len(c.j) - 1 for c in curves]).reshape(P, G),
        token_episode=episode_t.reshape(P, G, T), mask=mask.reshape(P, G, T),
    )


def _padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], attn[i, : len(s)] = torch.tensor(s), 1
    return ids, attn


def token_logp(model, ids: torch.Tensor, attn: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token t | tokens < t) for t = 1..T-1 under the sampling temperature (the policy
    the rollouts came from): (B, T-1), on the CPU. The chosen logit minus the logsumexp, so
    no (B, T, vocab) log-softmax is kept."""
    device = next(model.parameters()).device
    ids, attn = ids.to(device), attn.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float() / temperature
    chosen = logits.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (chosen - torch.logsumexp(logits, -1)).cpu()


def policy_update(accelerator, model, ref_model, optimizer, rolls: list[Rollout], adv: torch.Tensor,
                  mask: torch.Tensor, cfg: RlConfig, pad_id: int) -> dict:
    """``ppo_epochs`` passes of the clipped loss (METHOD.md (14)) over one step's rollouts, in
    micro-batches whose losses are weighted by their share of counted tokens."""
    ids, attn = _padded([r.token_ids for r in rolls], pad_id)
    adv, mask = adv[:, 1:], mask[:, 1:]  # token t is predicted at t-1
    total = int(mask.sum())
    if total == 0:
        return {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "n_tokens": 0}
    chunks = micro_batches(len(rolls), cfg.micro_batch)
    T = cfg.temperature
    with torch.no_grad():
        old = [token_logp(model, ids[c], attn[c], T) for c in chunks]
        ref = [token_logp(ref_model, ids[c], attn[c], T) for c in chunks]
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    for _ in range(cfg.ppo_epochs):  # one optimizer step per epoch, gradients accumulated over the chunks
        for c, old_c, ref_c in zip(chunks, old, ref):
            with accelerator.accumulate(model):
                logp = token_logp(model, ids[c], attn[c], T)
                n = int(mask[c].sum())
                if n:
                    loss, stats = policy_loss(logp, old_c, adv[c], mask[c], ref_c, cfg.beta, cfg.clip, cfg.clip)
                    for key, value in (("loss", loss.item()), ("kl", stats.kl), ("clip_fraction", stats.clip_fraction)):
                        sums[key] += value * n / total / cfg.ppo_epochs
                else:  # nothing counted here, but every chunk takes part (DeepSpeed counts micro-steps)
                    loss = logp.sum() * 0.0
                # Accelerate divides by the accumulation steps; the weights n / total already average
                accelerator.backward(loss * (n / total) * accelerator.gradient_accumulation_steps)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return sums | {"n_tokens": total}


def micro_batches(n: int, size: int) -> list[slice]:
    return [slice(b, b + size) for b in range(0, n, size)]


# --- validation -----------------------------------------------------------------------------------

@torch.no_grad()
def validate(engine: RolloutEngine, model, ref_model, problems, cfg: RlConfig, round_n: int, pad_id: int,
             meta_prover) -> dict:
    """From the prompt at the training budget, the same draws for every arm: accuracy,
    normalised regret against the oracle at C_0 (METHOD.md (6)), progress, KL to the reference."""
    rolls = engine.run(problems, cfg.val_samples, cfg.train_budget, derive_seed("val", round_n), cfg.batch_size)
    curves = episode_curves(engine, rolls, meta_prover.estimator, meta_prover.samples, derive_seed("val-j", round_n))
    prog = np.concatenate([progress(np.array(c.j)) for c in curves])
    ids, attn = _padded([r.token_ids for r in rolls], pad_id)
    mask = torch.tensor([[x == Role.GENERATED for x in r.roles[1:]] + [False] * (ids.shape[1] - len(r.roles))
                         for r in rolls])
    kl = torch.cat([kl_k3(token_logp(model, ids[c], attn[c], cfg.temperature),
                          token_logp(ref_model, ids[c], attn[c], cfg.temperature))
                    for c in micro_batches(len(rolls), cfg.micro_batch)])
    kl = torch.where(mask, kl, torch.zeros(()))
    return {
        "val_accuracy": float(np.mean([r.correct for r in rolls])),
        "val_regret": float(np.mean([normalized_regret(np.array(c.tokens), np.array(c.j), cfg.train_budget)
                                     for c in curves])),
        "val_mean_progress": float(prog.mean()) if prog.size else float("nan"),
        "val_zero_progress_share": zero_progress_share(prog, cfg.zero_threshold),
        "val_episodes_per_trace": float(np.mean([len(c.j) - 1 for c in curves])),
        "val_tokens_per_trace": float(np.mean([r.budget_tokens for r in rolls])),
        "val_wasted_share": sum(getattr(r.state, "wasted", 0) for r in rolls)
        / max(sum(getattr(r.state, "steps", 0) for r in rolls), 1),
        "kl_to_reference": float(kl.sum() / mask.sum()),
    }


# --- records --------------------------------------------------------------------------------------

def rollout_record(r: Rollout, c: EpisodeCurve, engine: RolloutEngine, step: int, p: Prefix, now: bool,
                   adv: float) -> dict:
    out = r.token_ids[r.start_len:]
    return {
        "problem_id": r.problem.id, "step": step, "sample": r.sample, "prefix_episodes": p.episodes,
        "prefix_j": p.j, "prefix_text": engine.tok.decode(r.token_ids[: r.start_len]),
        "text": engine.tok.decode(out), "roles": "".join(ROLE_CHAR[x.value] for x in r.roles[r.start_len:]),
        "episodes": [[e.char_start, e.char_end] for e in c.episodes], "episode_tokens": list(c.tokens),
        "episode_j": list(c.j), "reward": float(r.correct), "answer_now": now,
        "generated_tokens": r.budget_tokens, "mean_advantage": adv,
    }


def step_metrics(arm: str, rolls: list[Rollout], curves: list[EpisodeCurve], starts: list[Start], cfg: RlConfig,
                 probe_cost: int) -> dict:
    """What one step's rollouts did, and what they cost (generated tokens; teacher-forced probe
    tokens the arm itself needs: every episode end for the dense and STaR arms)."""
    cont = [(r, c) for r, c, s in zip(rolls, curves, starts) if not s.answer_now]
    prog = np.concatenate([progress(np.array(c.j)) for _, c in cont]) if cont else np.zeros(0)
    uses_curves = arm in ("mrt_dense", "mrt_star")
    return {
        "reward": float(np.mean([r.correct for r in rolls])),
        "continue_reward": float(np.mean([r.correct for r, _ in cont])) if cont else float("nan"),
        "mean_progress": float(prog.mean()) if prog.size else float("nan"),
        "zero_progress_share": zero_progress_share(prog, cfg.zero_threshold),
        "episodes_per_trace": float(np.mean([len(c.j) - 1 for _, c in cont])) if cont else float("nan"),
        "tokens_per_trace": float(np.mean([r.budget_tokens for r, _ in cont])) if cont else float("nan"),
        "generated_tokens": sum(r.budget_tokens + len(r.answer_ids) for r in rolls),
        "probe_tokens": sum(len(c.j) for c in curves) * probe_cost if uses_curves else 0,
    }


# --- the round ------------------------------------------------------------------------------------

def rollout_backend(params: Params, cfg: RlConfig, model, tok, start: Path):
    """What generates the round's rollouts: the training model itself on ``hf`` (CPU or its
    GPU), or vLLM (``rl.backend: vllm``) loaded from the round's start weights and synced after
    every update. The vLLM path has not run here (no GPU)."""
    if cfg.backend == "hf":
        return HFBackend(model, tok)
    gen = params.generation
    return make_backend("vllm", str(start), gpu_memory_utilization=gen.vllm_gpu_memory_utilization,
                        dtype=gen.vllm_dtype)


def make_accelerator(cfg: RlConfig) -> Accelerator:
    """Accelerate with one optimizer step per update: gradients accumulate over the update's
    micro-batches. Under DeepSpeed (``accelerate launch --config_file infra/accelerate/...``) its
    ``auto`` micro-batch is set here (no dataloader to infer it from). Multi-GPU: every rank
    trains on the same rollouts (no sharding yet), so more GPUs add memory, not speed."""
    steps = len(micro_batches(cfg.prompts_per_step * cfg.group_size, cfg.micro_batch))
    accelerator = Accelerator(gradient_accumulation_steps=steps)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch
    return accelerator


def full_named_parameters(accelerator, model):
    """(name, full tensor) of every parameter of the unwrapped model; under DeepSpeed ZeRO-3 each
    partitioned parameter is gathered while it is read."""
    unwrapped = accelerator.unwrap_model(model)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        for name, param in unwrapped.named_parameters():
            yield name, param.data
        return
    import deepspeed

    for name, param in unwrapped.named_parameters():
        with deepspeed.zero.GatheredParameters([param]):
            yield name, param.data


def _state_dir(paths: Paths, arm: str, seed: int, n: int) -> Path:
    return paths.checkpoints / "rl" / arm / f"s{seed}" / f"r{n}"


def run_rl_round(params: Params, paths: Paths, arm: str, seed: int, round_n: int, log=None) -> dict:
    """Run round ``round_n`` of ``arm`` with ``seed``; write its outputs; return its metrics."""
    cfg = params.rl.for_arm(arm)
    if arm not in cfg.arms or seed not in cfg.seeds or not 1 <= round_n <= len(cfg.rounds):
        raise ValueError(f"{arm} seed {seed} round {round_n} is not in rl.arms/rl.seeds/rl.rounds")
    with environment(params) as env:
        return _round(params, paths, cfg, env, arm, seed, round_n, log)


def probe_cost(engine: RolloutEngine, problem, meta_prover) -> int:
    """Tokens one read of J costs: the termination text and the answer, teacher-forced once
    (exact) or sampled K times (sampled)."""
    once = len(engine.term_ids) + engine.env.answer_length(problem)
    return once if meta_prover.estimator == "exact" else meta_prover.samples * once


def _round(params: Params, paths: Paths, cfg: RlConfig, env, arm: str, seed: int, round_n: int, log) -> dict:
    t0 = time.time()
    accelerator = make_accelerator(cfg)
    model, tok = load_policy(round_model(paths, params, arm, seed, round_n - 1))
    ref_model, _ = load_policy(paths.model(cfg.start))
    check_tokenizer(tok, params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    ref_model = ref_model.to(accelerator.device)
    backend = rollout_backend(params, cfg, accelerator.unwrap_model(model), tok,
                              round_model(paths, params, arm, seed, round_n - 1))
    engine = make_engine(backend, env, cfg.temperature, params)
    mp = params.meta_prover
    problems = load_problems(paths, "train")
    val_problems = load_problems(paths, "val")[: cfg.val_problems]
    cost = probe_cost(engine, problems[0], mp)

    state_dir = _state_dir(paths, arm, seed, round_n)
    start_hash = model_hash(round_model(paths, params, arm, seed, round_n - 1))
    fingerprint = sha256_text(json.dumps([cfg.model_dump(), params.env.model_dump(), mp.model_dump(), arm, seed,
                                          round_n, start_hash]))
    run = _resume(accelerator, state_dir, engine, {p.id: p for p in problems}, fingerprint)
    if run is None:  # (1) prefixes and J(mu|c) from the round's start policy: one batch job
        pool, prefix_cost = sample_prefixes(engine, problems, cfg, seed, round_n,
                                            cfg.steps_per_round * cfg.prompts_per_step, mp)
        run = RoundState(0, pool, prefix_cost, [], [], [], fingerprint)
        _save(accelerator, state_dir, run)
    elif run.step and hasattr(backend, "sync_weights"):  # resumed: the engine still holds the start weights
        backend.sync_weights(full_named_parameters(accelerator, model))
    star = StarRule(cfg.star_min_total_progress, cfg.star_max_zero_share, cfg.zero_threshold)
    for step in tqdm(range(run.step, cfg.steps_per_round), desc=f"rl {arm} s{seed} r{round_n}", initial=run.step,
                     total=cfg.steps_per_round, mininterval=2):  # (2) on-policy updates
        prefixes = run.pool[step * cfg.prompts_per_step : (step + 1) * cfg.prompts_per_step]
        starts = continuation_starts(prefixes, arm, cfg)
        rolls = engine.run_from(starts, cfg.train_budget, derive_seed(seed, "step", round_n, step), cfg.batch_size)
        curves = episode_curves(engine, rolls, mp.estimator, mp.samples, derive_seed(seed, "step-j", round_n, step))
        batch = group(rolls, curves, prefixes, starts, cfg.group_size)
        adv = arm_advantages(arm, batch, cfg.alpha, star).flatten(0, 1)
        mask = batch.mask.flatten(0, 1)
        update = policy_update(accelerator, model, ref_model, optimizer, rolls, adv, mask, cfg, tok.pad_token_id)
        if hasattr(backend, "sync_weights"):  # vLLM generates from its own copy of the weights
            backend.sync_weights(full_named_parameters(accelerator, model))
        row = {"step": step + 1, **step_metrics(arm, rolls, curves, starts, cfg, cost), **update}
        run.history.append(row)
        mean_adv = [float(a[m].mean()) if m.any() else 0.0 for a, m in zip(adv, mask)]
        run.records += [rollout_record(r, c, engine, step + 1, prefixes[i // cfg.group_size], s.answer_now, a)
                        for i, (r, c, s, a) in enumerate(zip(rolls, curves, starts, mean_adv))]
        run.step = step + 1
        if log:
            log({k: v for k, v in row.items() if k != "step"}, (round_n - 1) * cfg.steps_per_round + run.step)
        if run.step % cfg.save_every == 0 or run.step == cfg.steps_per_round:  # (3) snapshot: validate
            val = validate(engine, model, ref_model, val_problems, cfg, round_n, tok.pad_token_id, mp)
            best_so_far = max((v["val_accuracy"] for v in run.validations), default=-1.0)
            run.validations.append({"step": run.step, **val})
            if cfg.keep == "last_and_best" and val["val_accuracy"] > best_so_far:
                _save_model(accelerator, model, tok, state_dir / "best")
            if run.step < cfg.steps_per_round:
                _save(accelerator, state_dir, run)

    summary = round_summary(arm, seed, round_n, cfg, run, cost)
    weights = accelerator.get_state_dict(model)  # collective: gathered on every rank under ZeRO-3
    if accelerator.is_main_process:  # (4) outputs, then the resume state is no longer needed
        best = state_dir / "best" if cfg.keep == "last_and_best" else None
        _write_outputs(paths.rl_round(arm, seed, round_n), accelerator.unwrap_model(model), weights, tok, summary,
                       run, best)
        shutil.rmtree(state_dir, ignore_errors=True)
    return summary | {"wall_seconds": time.time() - t0}  # to MLflow only: outputs stay reproducible


def round_summary(arm: str, seed: int, round_n: int, cfg: RlConfig, run: "RoundState", probe_cost: int) -> dict:
    """The round's metrics: training means, validation of the last policy (and which snapshot
    validated best), and its compute (generated tokens of prefix rollouts and continuations;
    probe tokens the arm itself needs; validation is not counted)."""
    h, val = run.history, run.validations[-1]
    best = max(run.validations, key=lambda v: (v["val_accuracy"], -v["step"]))
    compute = {
        "prefix_generated_tokens": run.prefix_cost,
        "generated_tokens": sum(row["generated_tokens"] for row in h),
        "probe_tokens": sum(row["probe_tokens"] for row in h) + (len(run.pool) * probe_cost if arm == "mrt_prefix"
                                                                else 0),
    }
    mean = lambda key: float(np.nanmean([row[key] for row in h]))  # noqa: E731
    return {
        "arm": arm, "seed": seed, "round": round_n, "steps": len(h),
        "rollouts": len(h) * cfg.prompts_per_step * cfg.group_size,
        **{key: mean(key) for key in ("reward", "mean_progress", "zero_progress_share", "episodes_per_trace",
                                      "tokens_per_trace", "kl")},
        **{k: v for k, v in val.items() if k != "step"}, "best_step": best["step"],
        "best_val_accuracy": best["val_accuracy"], **compute, "total_tokens": sum(compute.values()),
    }


def _write_outputs(out_dir: Path, model, weights: dict, tok, summary: dict, run: "RoundState",
                   best: Path | None) -> None:
    """``model/`` (the last policy: the next round starts here), ``best/`` when a snapshot
    validated better than the last, every training rollout, and the metrics."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        _write_model(model, weights, tok, tmp / "model")
        if best is not None and summary["best_step"] != summary["steps"] and best.exists():
            shutil.copytree(best, tmp / "best")
        (tmp / "rollouts.jsonl").write_text(jsonl_text(run.records))
        write_json_atomic(tmp / "metrics.json", {"summary": summary, "steps": run.history,
                                                 "validations": run.validations}, sort_keys=False)


def _save_model(accelerator, model, tok, folder: Path) -> None:
    """The full weights (gathered on every rank under ZeRO-3) written by the main process."""
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with atomic_path(folder) as tmp:
            _write_model(accelerator.unwrap_model(model), weights, tok, tmp)
    accelerator.wait_for_everyone()


def _write_model(model, weights: dict, tok, folder: Path) -> None:
    """A Hugging Face model folder (safetensors) from ``weights``, the full state dict."""
    model.save_pretrained(folder, state_dict=weights, safe_serialization=True)
    tok.save_pretrained(folder)


# --- resume ---------------------------------------------------------------------------------------

@dataclass
class RoundState:
    """What a killed round needs to go on: steps done, the prefix pool (made by the round's
    start policy, so it cannot be re-sampled after updates), its cost, and what was recorded."""

    step: int
    pool: list[Prefix]
    prefix_cost: int
    history: list[dict]
    records: list[dict]
    validations: list[dict]
    fingerprint: str  # config and start weights it was made with


def _save(accelerator, state_dir: Path, run: RoundState) -> None:
    """Training state (model, optimizer, RNG via Accelerate) after ``run.step`` updates, written
    aside by every rank (collective under DeepSpeed), then moved in with the rest by the main one."""
    staging = state_dir.parent / f"{state_dir.name}.accelerate"
    if run.step:
        accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    with atomic_path(state_dir) as tmp:
        tmp.mkdir()
        if run.step:
            shutil.move(str(staging), str(tmp / "accelerate"))
        (tmp / "pool.jsonl").write_text(jsonl_text(prefix_record(p) for p in run.pool))
        (tmp / "history.jsonl").write_text(jsonl_text(run.history))
        (tmp / "records.jsonl").write_text(jsonl_text(run.records))
        (tmp / "validations.jsonl").write_text(jsonl_text(run.validations))
        if (state_dir / "best").exists():
            shutil.copytree(state_dir / "best", tmp / "best")
        write_json_atomic(tmp / "state.json", {"step": run.step, "prefix_cost": run.prefix_cost,
                                               "fingerprint": run.fingerprint})


def _resume(accelerator, state_dir: Path, engine: RolloutEngine, by_id: dict, fingerprint: str) -> RoundState | None:
    if not (state_dir / "state.json").exists():
        return None
    state = read_json(state_dir / "state.json")
    if state["fingerprint"] != fingerprint:
        print(f"rl_round: dropping the resume state in {state_dir} (made with another config or start model)")
        shutil.rmtree(state_dir, ignore_errors=True)  # nothing of it (its best snapshot too) may reach the outputs
        return None
    if state["step"]:
        accelerator.load_state(str(state_dir / "accelerate"))
    read = lambda name: [json.loads(x) for x in (state_dir / name).read_text().splitlines()]  # noqa: E731
    pool = [prefix_from_record(engine, rec, by_id, i) for i, rec in enumerate(read("pool.jsonl"))]
    print(f"rl_round: resuming at step {state['step']} from {state_dir}")
    return RoundState(state["step"], pool, state["prefix_cost"], read("history.jsonl"), read("records.jsonl"),
                      read("validations.jsonl"), fingerprint)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--round", type=int, required=True)
    args = parser.parse_args(argv)
    params = load_params_or_exit(args.params)
    setup_process(params.runtime.torch_threads, derive_seed(args.seed, args.arm, args.round))
    paths = Paths()
    try:
        if args.arm not in params.rl.arms or args.seed not in params.rl.seeds or args.round > len(params.rl.rounds):
            raise ValueError(f"{args.arm} seed {args.seed} round {args.round} is not in rl.arms/rl.seeds/rl.rounds")
        round_model(paths, params, args.arm, args.seed, args.round - 1)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rl_round: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logged = {"rl": params.rl.model_dump(), "arm": args.arm, "seed": args.seed, "round": args.round}
    tags = {"mrt.arm": args.arm, "mrt.seed": str(args.seed), "mrt.round": str(args.round)}
    with stage_run("rl_round", params.runtime.tracking_uri, params.runtime.experiment, logged,
                   run_name=f"rl_round {args.arm} s{args.seed} r{args.round}", tags=tags) as mlflow:
        summary = run_rl_round(params, paths, args.arm, args.seed, args.round,
                               log=lambda m, step: mlflow.log_metrics(m, step=step))
        mlflow.log_metrics({f"round.{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))},
                           step=args.round)
        out = paths.rl_round(args.arm, args.seed, args.round)
        mlflow.log_artifact(str(out / "metrics.json"))
        sample = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
        sample = sample[-params.rl.sample_rows:] if params.rl.sample_rows else []
        if sample:
            mlflow.log_table({k: [row[k] for row in sample] for k in ("problem_id", "step", "prefix_text", "text",
                                                                      "roles", "reward", "episode_j")},
                             artifact_file=f"rollouts_r{args.round}.json")
    print(f"rl_round: {json.dumps(summary)}")


if __name__ == "__main__":
    main()

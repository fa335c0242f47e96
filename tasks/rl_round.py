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
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from mrt_lib.common import (
    Paths,
    derive_seed,
    entry_environment,
    exit_on,
    kill_point,
    model_hash,
    read_json,
    setup_process,
)
from mrt_lib.config import Params, RlConfig, StageConfig, for_stage, load_params_or_exit
from mrt_lib.data import dataset_hash, load_problems
from mrt_lib.distributed import WorldError, check_world, die_with_launcher, gather, launch_as, launched_world, shard
from mrt_lib.envs import GradingMeter, environment, family
from mrt_lib.grading import GradingError
from mrt_lib.measurements import Phases
from mrt_lib.modeling import load_policy
from mrt_lib.resume import ResumeState, UnsafeStateError, code_version, fingerprint
from mrt_lib.rl.arms import Arm, get_arm
from mrt_lib.rl.batch import group, rollout_record, round_summary, step_metrics
from mrt_lib.rl.models import ProverError, prover_engine, prover_path, rollout_backend
from mrt_lib.rl.prefixes import continuation_starts, sample_prefixes
from mrt_lib.rl.sampling import grading_counts, phase_seconds, sample_shard
from mrt_lib.rl.state import RoundState, load_state, save_model, save_state, write_outputs
from mrt_lib.rl.update import full_named_parameters, make_accelerator, policy_update
from mrt_lib.rl.validation import validate
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "template", "grader", "meta_prover", "generation", "rl", "resources")


def round_model(paths: Paths, arm: str, seed: int, n: int) -> Path:
    """The policy a round ``n + 1`` starts from: round ``n``'s model, or ``rl.start`` for n = 0
    (``rl/<arm>/s<seed>/r0/start.json``, written by the ``rl_start`` stage, names it)."""
    folder = paths.rl_round(arm, seed, n)
    if n == 0:
        pointer = read_json(folder / "start.json")
        return paths.model(pointer["model"])
    if not (folder / "model" / "config.json").exists():
        raise FileNotFoundError(f"{folder}/model is missing: run round {n} of {arm} (seed {seed}) first (dvc repro)")
    return folder / "model"


def run_rl_round(params: Params, paths: Paths, arm: str, seed: int, round_n: int, log=None) -> dict:
    """Run round ``round_n`` of ``arm`` with ``seed``; write its outputs; return its metrics."""
    processes = params.resources.for_stage("rl_round").processes  # the launched group's size
    params = for_stage(params, SECTIONS)
    cfg = params.rl.for_arm(arm)
    if arm not in cfg.arms or seed not in cfg.seeds or not 1 <= round_n <= len(cfg.rounds):
        raise ValueError(f"{arm} seed {seed} round {round_n} is not in rl.arms/rl.seeds/rl.rounds")
    with environment(params) as env:
        return _round(params, paths, cfg, env, get_arm(arm), seed, round_n, log, processes)


def _round(params: StageConfig, paths: Paths, cfg: RlConfig, env, arm: Arm, seed: int, round_n: int, log,
           processes: int = 1) -> dict:
    t0 = time.time()
    mp = params.meta_prover
    # load: the round's start policy (trained), the reference, the engine, the problems
    start_path = round_model(paths, arm.name, seed, round_n - 1)
    accelerator = make_accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    check_world("rl_round", processes, world)
    model, tok = load_policy(start_path)
    ref_model, _ = load_policy(paths.model(cfg.start))
    family(params.env.kind).check_tokenizer(tok, params.env, params.template)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    ref_model = ref_model.to(accelerator.device)
    backend = rollout_backend(params, cfg, accelerator.unwrap_model(model), tok, start_path)
    make_engine = lambda b: family(params.env.kind).engine(b, env, cfg.temperature, params.env)  # noqa: E731
    engine = make_engine(backend)
    prover = prover_engine(mp, paths, start_path, engine, make_engine, tok, accelerator.device)
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    problems = load_problems(paths, "train")
    val_problems = load_problems(paths, "val")[: cfg.val_problems]
    shard(len(val_problems) * cfg.val_samples, rank, world)  # refused now, not after the first steps
    meter = GradingMeter(params, env)  # counts per step and per validation
    # the meta-prover reads every rollout where the arm's advantages need J, else a share (for logs)
    share = lambda needs: 1.0 if arm.probes == needs else cfg.log_probe_share  # noqa: E731

    # resume, or sample the round's prefixes and J(mu|c) from its start policy (one batch job)
    resume = ResumeState(paths.checkpoints / "rl" / arm.name / f"s{seed}" / f"r{round_n}", fingerprint(
        rl=cfg.model_dump(), env=params.env.model_dump(), meta_prover=mp.model_dump(), arm=arm.name, seed=seed,
        round=round_n, start=model_hash(start_path), reference=model_hash(paths.model(cfg.start)),
        dataset=dataset_hash(paths), code=code_version("rl_round"), processes=processes,
        prover=model_hash(prover_path(mp, paths, start_path) or start_path)), "rl_round")
    state_dir = resume.folder
    phases = Phases()
    phases.seconds["setup"] = time.time() - t0
    run = load_state(accelerator, resume, engine, {p.id: p for p in problems})
    if run is None:
        with phases("prefixes"):
            pool, prefix_cost = sample_prefixes(engine, problems, cfg, seed, round_n,
                                                cfg.steps_per_round * cfg.prompts_per_step, mp, prover, share("prefix"))
        run = RoundState(0, pool, prefix_cost, [], [], [])
        save_state(accelerator, resume, run)
    elif run.step and hasattr(backend, "sync_weights"):  # resumed: the engine still holds the start weights
        backend.sync_weights(full_named_parameters(accelerator, model))

    for step in tqdm(range(run.step, cfg.steps_per_round), desc=f"rl {arm.name} s{seed} r{round_n}",
                     initial=run.step, total=cfg.steps_per_round, mininterval=2):
        # sample: G continuations of each of the step's prefixes; score every episode end
        prefixes = run.pool[step * cfg.prompts_per_step : (step + 1) * cfg.prompts_per_step]
        starts = continuation_starts(prefixes, arm.answer_now, cfg)
        # this process's groups (whole groups: advantages are normalised as on one process)
        rolls, curves, own = sample_shard(engine, starts, cfg.train_budget, derive_seed(seed, "step", round_n, step),
                                          derive_seed(seed, "step-j", round_n, step), mp, cfg.batch_size,
                                          unit=cfg.group_size, phases=phases, prover=prover,
                                          probe_share=share("episodes"))
        # update: the arm's advantages, the clipped loss
        with phases("update"):
            mine = slice(own.start // cfg.group_size, own.stop // cfg.group_size)
            batch = group(rolls, curves, prefixes[mine], starts[own.start : own.stop], cfg.group_size, mp.shrink, mp.z)
            adv, mask = arm.advantages(batch, cfg).flatten(0, 1), batch.mask.flatten(0, 1)
            with phases("wait"):  # for the slowest process's rollouts (the update's first collective)
                accelerator.wait_for_everyone()
            update = policy_update(accelerator, model, ref_model, optimizer, rolls, adv, mask, cfg, tok.pad_token_id)
            if hasattr(backend, "sync_weights"):  # vLLM generates from its own copy of the weights
                backend.sync_weights(full_named_parameters(accelerator, model))
        # record: the whole step's rollouts, gathered in order on every process
        with phases("gather"):
            mean_adv = gather([float(a[m].mean()) if m.any() else 0.0 for a, m in zip(adv, mask)])
            sampled_by = gather([len(rolls)])
            rolls, curves = gather(rolls), gather(curves)
        row = {"step": step + 1, **step_metrics(arm, rolls, curves, starts, cfg), **update,
               **grading_counts(meter)}
        if world > 1:  # who sampled what (not a metric: one count per process)
            row["sampled_by_process"] = sampled_by
        run.history.append(row)
        run.records += [rollout_record(r, c, engine, step + 1, prefixes[i // cfg.group_size], s.answer_now, a)
                        for i, (r, c, s, a) in enumerate(zip(rolls, curves, starts, mean_adv))]
        run.step = step + 1
        if log:
            log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"},
                (round_n - 1) * cfg.steps_per_round + run.step)
        # validate and snapshot every save_every steps
        if run.step % cfg.save_every == 0 or run.step == cfg.steps_per_round:
            with phases("validate"):
                val = validate(engine, accelerator.unwrap_model(model), ref_model, val_problems, cfg, round_n,
                               tok.pad_token_id, mp)
            best_so_far = max((v["val_accuracy"] for v in run.validations), default=-1.0)
            run.validations.append({"step": run.step, **val, **grading_counts(meter)})
            if cfg.keep == "last_and_best" and val["val_accuracy"] > best_so_far:
                save_model(accelerator, model, tok, state_dir / "best")
            if run.step < cfg.steps_per_round:
                save_state(accelerator, resume, run)
                kill_point("rl_round.state")

    # save: the outputs, then the resume state is no longer needed
    summary = round_summary(arm, seed, round_n, cfg, run, n_params) | meter.check(run.history + run.validations)
    weights = accelerator.get_state_dict(model)  # collective: gathered on every rank under ZeRO-3
    if accelerator.is_main_process:
        best = state_dir / "best" if cfg.keep == "last_and_best" else None
        write_outputs(paths.rl_round(arm.name, seed, round_n), accelerator.unwrap_model(model), weights, tok, summary,
                      run, best)
        resume.clear()
    accelerator.wait_for_everyone()  # every process may read the outputs once this returns
    # to MLflow only (outputs stay reproducible): the wall time, and where it went on each process
    return summary | phase_seconds(phases) | {"wall_seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--round", type=int, required=True)
    args = parser.parse_args(argv)
    params = load_params_or_exit(args.params)
    launch_as("rl_round", argv, params.resources.for_stage("rl_round").processes, params.rl.prompts_per_step)
    die_with_launcher()
    entry_environment()
    setup_process(params.runtime.torch_threads, derive_seed(args.seed, args.arm, args.round))
    paths = Paths()
    try:
        if args.arm not in params.rl.arms or args.seed not in params.rl.seeds or args.round > len(params.rl.rounds):
            raise ValueError(f"{args.arm} seed {args.seed} round {args.round} is not in rl.arms/rl.seeds/rl.rounds")
        round_model(paths, args.arm, args.seed, args.round - 1)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rl_round: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logged = {"rl": params.rl.model_dump(), "arm": args.arm, "seed": args.seed, "round": args.round}
    tags = {"mrt.arm": args.arm, "mrt.seed": str(args.seed), "mrt.round": str(args.round)}
    with stage_run("rl_round", params.runtime.tracking_uri, params.runtime.experiment, logged,
                   run_name=f"rl_round {args.arm} s{args.seed} r{args.round}", tags=tags) as mlflow:
        with exit_on((GradingError, UnsafeStateError), "rl_round", 1), exit_on((WorldError, ProverError), "rl_round", 2):
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
    if launched_world()[0] == 0:
        print(f"rl_round: {json.dumps(summary)}")


if __name__ == "__main__":
    main()

"""Stage ``rl_round``: one round of on-policy RL for one arm and seed (METHOD.md (8)-(14)).

A round, the same for every arm (they differ only in ``mrt_core.advantages.arm_advantages``):
1. Prefixes: the round's start policy samples rollouts on training problems; each is cut after
   k of its episodes (k uniform in 0..``max_prefix_episodes``, unsolved, budget left) and the
   meta-prover's ``J(mu | c)`` is read at every cut with batched tree probes.
2. ``steps_per_round`` policy updates: the current policy samples G continuations from each of
   ``prompts_per_step`` prefixes (total budget ``train_budget`` per trace; ``mrt_mixed``: the
   first ``answer_now`` of a group answer at once); the meta-prover (``meta_prover.policy``:
   by default the round's start policy, frozen) scores every episode end of the continuations
   (all where the arm's advantages read J, else ``rl.log_probe_share`` of them, for the logs);
   the arm's advantages and the clipped loss (``mrt_core.loss``, with KL to the reference
   ``rl.start``) update the policy through Accelerate. A compute-matched run (``--matched``)
   goes on past its own steps, on fresh prefixes, until its compute ledger reaches
   ``rl.match_target``'s round (METHOD.md (23)-(24)).
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
    python -m tasks.rl_round --arm grpo --seed 0 --round 1 --matched # grpo at mrt_dense's compute
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from tqdm import tqdm

from mrt_core.compute import match_ratio, needs_more_steps
from mrt_lib.common import Paths, derive_seed, entry_environment, exit_on, kill_point, model_hash, setup_process
from mrt_lib.config import Params, RlConfig, StageConfig, for_stage, load_params_or_exit
from mrt_lib.data import dataset_hash, load_problems
from mrt_lib.distributed import WorldError, check_world, die_with_launcher, gather, launch_as, launched_world, shard
from mrt_lib.envs import GradingMeter, environment, family
from mrt_lib.grading import GradingError
from mrt_lib.measurements import Phases
from mrt_lib.modeling import load_policy
from mrt_lib.resume import ResumeState, UnsafeStateError, code_version, fingerprint
from mrt_lib.rl.arms import Arm, get_arm
from mrt_lib.rl.batch import group, rollout_record, round_ledger, round_summary, step_metrics
from mrt_lib.rl.models import ProverError, frozen_engine, match_target, prover_engine, rollout_backend, round_model
from mrt_lib.rl.prefixes import continuation_starts, sample_prefixes
from mrt_lib.rl.sampling import grading_counts, phase_seconds, sample_shard
from mrt_lib.rl.state import RoundState, load_state, log_round, save_model, save_state, write_outputs
from mrt_lib.rl.update import full_named_parameters, make_accelerator, policy_update
from mrt_lib.rl.validation import validate
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "template", "grader", "meta_prover", "generation", "rl", "resources")


def run_rl_round(params: Params, paths: Paths, arm: str, seed: int, round_n: int, log=None,
                 matched: bool = False) -> dict:
    """Run round ``round_n`` of ``arm`` with ``seed`` (``matched``: of its compute-matched run,
    ``rl/<arm>_<rl.match_compute>``); write its outputs; return its metrics."""
    processes = params.resources.for_stage("rl_round").processes  # the launched group's size
    params = for_stage(params, SECTIONS)
    cfg = params.rl.for_arm(arm)
    arms, listed = (cfg.matched_arms, "rl.matched_arms") if matched else (cfg.arms, "rl.arms")
    if arm not in arms or seed not in cfg.seeds or not 1 <= round_n <= len(cfg.rounds):
        raise ValueError(f"{arm} seed {seed} round {round_n} is not in {listed}/rl.seeds/rl.rounds")
    target = match_target(paths, cfg, seed, round_n) if matched else None
    with environment(params) as env:
        return _round(params, paths, cfg, env, get_arm(arm), seed, round_n, log, processes, target)


def _round(params: StageConfig, paths: Paths, cfg: RlConfig, env, arm: Arm, seed: int, round_n: int, log,
           processes: int = 1, target: dict | None = None) -> dict:
    t0 = time.time()
    mp, name = params.meta_prover, cfg.matched_name(arm.name) if target else arm.name
    mp = mp.model_copy(update={"policy": arm.prover}) if arm.prover else mp  # a variant's own prover
    # load: the round's start policy (trained), the reference, the engine, the problems
    start_path = round_model(paths, name, seed, round_n - 1)
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
    prover, prover_id = prover_engine(mp, paths, start_path, engine, make_engine, tok, accelerator.device)
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    problems = load_problems(paths, "train")
    val_problems = load_problems(paths, "val")[: cfg.val_problems]
    shard(len(val_problems) * cfg.val_samples, rank, world)  # refused now, not after the first steps
    meter = GradingMeter(params, env)  # counts per step and per validation
    # the meta-prover reads every rollout where the arm's advantages need J, else a share (for logs)
    share = lambda needs: 1.0 if arm.probes == needs else cfg.log_probe_share  # noqa: E731
    # matched compute: past its own steps, the run updates until it has spent the target's compute
    goal = target["ledger"].amount(target["unit"], n_params) if target else 0.0
    spent = lambda: round_ledger(run).amount(target["unit"], n_params) if target else 0.0  # noqa: E731
    n_pool = cfg.steps_per_round * cfg.prompts_per_step

    # resume, or sample the round's prefixes and J(mu|c) from its start policy (one batch job)
    resume = ResumeState(paths.checkpoints / "rl" / name / f"s{seed}" / f"r{round_n}", fingerprint(
        rl=cfg.model_dump(), env=params.env.model_dump(), meta_prover=mp.model_dump(), arm=name, seed=seed, goal=goal,
        round=round_n, start=model_hash(start_path), reference=model_hash(paths.model(cfg.start)),
        dataset=dataset_hash(paths), code=code_version("rl_round"), processes=processes,
        prover=prover_id), "rl_round")
    state_dir = resume.folder
    phases = Phases()
    phases.seconds["setup"] = time.time() - t0
    run = load_state(accelerator, resume, engine, {p.id: p for p in problems})
    if run is None:
        with phases("prefixes"):
            pool, prefix_cost = sample_prefixes(engine, problems, cfg, seed, round_n, n_pool, mp, prover,
                                                share("prefix"))
        run = RoundState(0, pool, prefix_cost, [], [], [])
        save_state(accelerator, resume, run)
    elif run.step and hasattr(backend, "sync_weights"):  # resumed: the engine still holds the start weights
        backend.sync_weights(full_named_parameters(accelerator, model))

    bar = tqdm(desc=f"rl {name} s{seed} r{round_n}", initial=run.step, total=cfg.steps_per_round, mininterval=2)
    fresh = None  # matched: the round's start policy, frozen, samples fresh prefixes for the extra steps
    while needs_more_steps(spent(), goal, run.step, cfg.steps_per_round):
        step = run.step
        if (step + 1) * cfg.prompts_per_step > len(run.pool):
            fresh = fresh or (prover if mp.policy == "round_start" else
                              frozen_engine(start_path, make_engine, tok, accelerator.device))
            with phases("prefixes"):
                more, cost = sample_prefixes(fresh, problems, cfg, seed, round_n, n_pool, mp, prover,
                                             share("prefix"), chunk=len(run.pool) // n_pool)
            run.pool, run.prefix_cost = run.pool + more, {k: run.prefix_cost[k] + cost[k] for k in cost}
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
        bar.update()
        final = not needs_more_steps(spent(), goal, run.step, cfg.steps_per_round)
        if log:
            log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"},
                (round_n - 1) * cfg.steps_per_round + run.step)
        # validate and snapshot every save_every steps
        if run.step % cfg.save_every == 0 or final:
            with phases("validate"):
                val = validate(engine, accelerator.unwrap_model(model), ref_model, val_problems, cfg, round_n,
                               tok.pad_token_id, mp)
            best_so_far = max((v["val_accuracy"] for v in run.validations), default=-1.0)
            run.validations.append({"step": run.step, **val, **grading_counts(meter)})
            if cfg.keep == "last_and_best" and val["val_accuracy"] > best_so_far:
                save_model(accelerator, model, tok, state_dir / "best")
            if not final:
                save_state(accelerator, resume, run)
                kill_point("rl_round.state")

    # save: the outputs, then the resume state is no longer needed
    bar.close()
    summary = round_summary(arm, seed, round_n, cfg, run, n_params) | meter.check(run.history + run.validations)
    if target:
        summary |= {"matched_to": target["arm"], "match_unit": target["unit"], "match_target": goal,
                    "match_ratio": match_ratio(spent(), goal)}
    weights = accelerator.get_state_dict(model)  # collective: gathered on every rank under ZeRO-3
    if accelerator.is_main_process:
        best = state_dir / "best" if cfg.keep == "last_and_best" else None
        write_outputs(paths.rl_round(name, seed, round_n), accelerator.unwrap_model(model), weights, tok, summary,
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
    parser.add_argument("--matched", action="store_true", help="the arm's compute-matched run (rl_matched stages)")
    args = parser.parse_args(argv)
    params = load_params_or_exit(args.params)
    launch_as("rl_round", argv, params.resources.for_stage("rl_round").processes, params.rl.prompts_per_step)
    die_with_launcher()
    entry_environment()
    setup_process(params.runtime.torch_threads, derive_seed(args.seed, args.arm, args.round))
    paths, rl = Paths(), params.rl
    name = rl.matched_name(args.arm) if args.matched else args.arm
    try:
        arms, listed = (rl.matched_arms, "rl.matched_arms") if args.matched else (rl.arms, "rl.arms")
        if args.arm not in arms or args.seed not in rl.seeds or args.round > len(rl.rounds):
            raise ValueError(f"{args.arm} seed {args.seed} round {args.round} is not in {listed}/rl.seeds/rl.rounds")
        round_model(paths, name, args.seed, args.round - 1)
        if args.matched:
            match_target(paths, rl, args.seed, args.round)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rl_round: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logged = {"rl": rl.model_dump(), "arm": name, "seed": args.seed, "round": args.round}
    tags = {"mrt.arm": name, "mrt.seed": str(args.seed), "mrt.round": str(args.round)}
    with stage_run("rl_round", params.runtime.tracking_uri, params.runtime.experiment, logged,
                   run_name=f"rl_round {name} s{args.seed} r{args.round}", tags=tags) as mlflow:
        with exit_on((GradingError, UnsafeStateError), "rl_round", 1), \
                exit_on((WorldError, ProverError), "rl_round", 2):
            summary = run_rl_round(params, paths, args.arm, args.seed, args.round,
                                   log=lambda m, step: mlflow.log_metrics(m, step=step), matched=args.matched)
        log_round(mlflow, paths.rl_round(name, args.seed, args.round), summary, args.round, rl.sample_rows)
    if launched_world()[0] == 0:
        print(f"rl_round: {json.dumps(summary)}")


if __name__ == "__main__":
    main()

"""Stage ``evaluate``: every model at several token budgets, with the meta-prover's view.

For each model (``evaluate.models``: base, warmstart) and budget B, ``n_samples`` rollouts per
test problem; the answer is forced after B generated tokens. From them: accuracy with a
bootstrap CI over problems, how the budget was spent, backtracking rates, pass@k / maj@k against
tokens; from the longest rollouts, the meta-prover's exact J after every episode, hence regret
curves (oracle and votes-vs-episode comparators) and the progress distribution; then
extrapolation past the largest budget with budget forcing, and token efficiency between
models. Two reference policies are simulated exactly with Bayes-optimal forced answers:
bisection (the known-optimal search without backtracking) and the base data policy.
Writes ``metrics/evaluate.json`` (DVC metrics), ``metrics/evaluate_details.json`` (schema
inside), ``plots/*.json`` (DVC plots), ``plots/accuracy_vs_budget.png`` and every rollout to
``data/eval/rollouts_<model>.jsonl``.

    python -m tasks.evaluate                 # what dvc.yaml runs
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mrt_lib.common import Paths, derive_seed, entry_environment, exit_on, read_json, require_model, setup_process
from mrt_lib.config import Params, StageConfig, for_stage, stage_params
from mrt_lib.data import load_problems
from mrt_lib.envs import GradingMeter, backend_for, environment, family
from mrt_lib.evaluation.comparison import COMPUTE_KEYS
from mrt_lib.evaluation.metrics import curve_rows, efficiency_rows, pass_maj_rows
from mrt_lib.evaluation.outputs import write_outputs
from mrt_lib.evaluation.rows import (
    aggregate_seeds,
    flat_metrics,
    model_row,
    reference_row,
    rollout_record,
)
from mrt_lib.generation import BackendUnavailable, GenerationBackend, require_backend
from mrt_lib.generation.rollouts import RolloutEngine
from mrt_lib.grading import GradingError
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "template", "grader", "meta_prover", "evaluate", "generation", "rl", "train_base")


def evaluate_model(params: StageConfig, paths: Paths, backend: GenerationBackend, problems, env, log=None,
                   name: str = "base") -> tuple[dict, list[dict], dict]:
    """Rows per budget, every rollout's record and the details (curves, pass@k) of one model."""
    cfg = params.evaluate
    engine = family(params.env.kind).engine(backend, env, cfg.temperature, params.env)
    rows, records, details = {}, [], {"pass_maj": {}}
    for budget in cfg.budgets:
        # the same seed for every model: paired comparisons over the same problems and draws
        rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "eval", budget),
                           cfg.batch_size, cfg.budget_forcing, desc=f"evaluate {name} B={budget}")
        events = family(params.env.kind).backtrack_events(engine.env, rolls, engine.id_text)
        rows[budget] = model_row(rolls, cfg.n_samples, cfg.n_bootstrap, derive_seed(cfg.seed, "boot", budget),
                                 events)
        records += [rollout_record(r, budget, backend.tokenizer) for r in rolls]
        details["pass_maj"][budget] = pass_maj_rows(rolls, cfg.n_samples)
    # meta-prover curves of the longest rollouts give regret at every smaller budget too
    curves = curve_rows(engine, rolls, cfg.budgets, cfg.n_samples, cfg.n_bootstrap, derive_seed(cfg.seed, "curves"),
                        cfg.vote_samples, cfg.zero_threshold, params.meta_prover)
    longest = records[-len(rolls):]  # the records of the rollouts the curves were read from
    for record, curve in zip(longest, curves["curves"]):
        record["episode_tokens"], record["episode_j"] = list(curve.tokens), list(curve.j)
    for budget in cfg.budgets:
        rows[budget] |= curves["by_budget"][budget]
        if log:
            log({f"{name}.{k}": rows[budget][k] for k in ("accuracy", "wasted_share", "regret", "regret_votes")},
                budget)
    details["progress"] = curves["progress"]
    details["extrapolation"] = extrapolate(engine, problems, cfg, family(params.env.kind).backtrack_events, log,
                                          name)
    return rows, records, details


def extrapolate(engine: RolloutEngine, problems, cfg, events_of, log=None, name: str = "base") -> dict:
    """Accuracy past the evaluated budgets with budget forcing: an early stop is overridden
    (``env.continuation_text`` appended, FORCED) until the budget is spent; forced tokens are
    counted in the rows."""
    rows = {}
    for budget in cfg.extrapolation_budgets:
        rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "extrapolate", budget),
                           cfg.batch_size, budget_forcing=True, desc=f"extrapolate {name} B={budget}")
        events = events_of(engine.env, rolls, engine.id_text)
        rows[budget] = model_row(rolls, cfg.n_samples, cfg.n_bootstrap, derive_seed(cfg.seed, "boot-x", budget),
                                 events)
        if log:
            log({f"{name}.accuracy_forced": rows[budget]["accuracy"]}, budget)
    return rows


def reference_rows(params: StageConfig, problems, log=None) -> dict:
    """The environment family's reference policies (code search: bisection and the base data
    policy), simulated exactly with Bayes-optimal forced answers; none for text problems."""
    cfg = params.evaluate
    policies = family(params.env.kind).reference_policies(params.env, params.train_base.p_informed)
    out = {name: {} for name, _, _ in policies}
    if not policies:
        return out
    with environment(params) as env:
        for budget in cfg.budgets:
            for name, guess, stochastic in policies:
                n = cfg.reference_samples if stochastic else 1
                out[name][budget] = reference_row(env, problems, guess, budget, n, derive_seed(cfg.seed, name, budget))
                if log:
                    log({f"{name}.accuracy": out[name][budget]["accuracy"]}, budget)
    return out


def evaluated_models(params: StageConfig, paths: Paths) -> dict[str, Path]:
    """Name -> model folder of every model to evaluate: base, warmstart, and each RL arm's rounds
    (every round or the last, ``evaluate.rl_rounds``) for every seed, named ``<arm>/s<seed>/r<n>``."""
    rounds = [r.n for r in params.rl.rounds]
    rounds = rounds[-1:] if params.evaluate.rl_rounds == "last" else rounds
    out = {}
    for m in params.evaluate.models:
        if m in ("base", "warmstart"):
            out[m] = paths.model(m)
            continue
        for seed in params.rl.seeds:
            for n in rounds:
                out[f"{m}/s{seed}/r{n}"] = paths.rl_round(m, seed, n) / "model"
    return out


def display_models(params: StageConfig) -> list[str]:
    """What figures, the headline table and token efficiency compare: base, warmstart and each
    RL arm's last round aggregated over seeds."""
    return list(params.evaluate.models)


def run_evaluate(params: Params, paths: Paths, log=None, backends: dict | None = None) -> dict:
    """Evaluate every model of ``evaluated_models``, aggregate RL arms (and compute-matched runs)
    over seeds, simulate the reference policies; write outputs."""
    params = for_stage(params, SECTIONS)
    problems = load_problems(paths, "test")
    models = evaluated_models(params, paths)
    results, records, details, grading = {}, {}, {}, {}
    with environment(params) as env:
        meter = GradingMeter(params, env)
        for name, path in models.items():
            # one model loaded at a time: several vLLM engines would not share a GPU
            backend = backends[name] if backends else backend_for(params, path)
            results[name], records[name], details[name] = evaluate_model(params, paths, backend, problems, env, log,
                                                                         name)
            grading[name] = meter.take()
            del backend
        meter.check(grading.values())  # before any output is written
    if any(grading.values()):  # a grader that can time out: its counts per model
        details["grading"] = grading
        if log:
            for name, counts in grading.items():
                log({f"{name}.{k}": float(v) for k, v in counts.items()}, 0)
    for arm in (m for m in params.evaluate.models if m in params.rl.arms + params.rl.matched_names):
        names = [f"{arm}/s{seed}/r{params.rl.rounds[-1].n}" for seed in params.rl.seeds]
        results[arm], details[arm] = aggregate_seeds([results[n] for n in names], [details[n] for n in names])
        if log:
            for budget, row in results[arm].items():
                log({f"{arm}.accuracy": row["accuracy"], f"{arm}.regret": row["regret"]}, budget)
    details["compute"] = rl_compute(params, paths)
    shown = display_models(params)
    details["token_efficiency"] = efficiency_rows(results, shown, params.evaluate.budgets,
                                                  params.evaluate.efficiency_levels)
    results.update(reference_rows(params, problems, log))
    write_outputs(paths, results, records, params.evaluate.budgets, details, shown)
    return results


def rl_compute(params: StageConfig, paths: Paths) -> dict:
    """What each evaluated arm's training cost, per seed (summed over its rounds), from the
    rounds' ledgers (``COMPUTE_KEYS``: rollouts, updates, and every token each kind of pass
    touched, whatever for; METHOD.md (23)); compute-matched runs too."""
    keys = COMPUTE_KEYS
    out = {}
    for arm in (m for m in params.evaluate.models if m in params.rl.arms + params.rl.matched_names):
        per_seed = []
        for seed in params.rl.seeds:
            rounds = [read_json(paths.rl_round(arm, seed, r.n) / "metrics.json")["summary"] for r in params.rl.rounds]
            per_seed.append({k: sum(r[k] for r in rounds) for k in keys})
        out[arm] = {"per_seed": per_seed, "mean": {k: float(np.mean([s[k] for s in per_seed])) for k in keys}}
    return out


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    entry_environment()
    setup_process(params.runtime.torch_threads, params.evaluate.seed)
    paths = Paths()
    try:
        require_backend(params.generation.backend)
    except BackendUnavailable as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for path in evaluated_models(for_stage(params, SECTIONS), paths).values():  # all there before any write
        require_model("evaluate", path)
    with stage_run("evaluate", params.runtime.tracking_uri, params.runtime.experiment,
                   {"evaluate": params.evaluate.model_dump(), "generation": params.generation.model_dump()}) as mlflow:
        with exit_on(GradingError, "evaluate", 1):
            results = run_evaluate(params, paths, lambda m, step: mlflow.log_metrics(m, step=step))
        mlflow.log_metrics(flat_metrics(results))
        mlflow.log_artifact(str(paths.plots / "accuracy_vs_budget.png"))
        mlflow.log_artifact(str(paths.metrics / "evaluate.json"))
    for name in display_models(for_stage(params, SECTIONS)):
        for b in params.evaluate.budgets:
            row = results[name][b]
            ref = f" bisection={results['bisection'][b]['accuracy']:.3f}" if "bisection" in results else ""
            print(f"{name:9s} B={b:3d} acc={row['accuracy']:.3f} [{row['ci_low']:.3f},{row['ci_high']:.3f}] "
                  f"wasted={row['wasted_share']:.2f} backtrack|deep-failure={row['backtrack_after_deep_failure']:.2f} "
                  f"regret={row['regret']:.3f}{ref}")


if __name__ == "__main__":
    main()

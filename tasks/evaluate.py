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

import random
import sys
from pathlib import Path

import numpy as np

from mrt_core.envs.base import Role
from mrt_core.envs.code_search import CodeSearchEnv, base_guess_fn, bisection_guess, play
from mrt_core.metrics import accuracy, bootstrap_ci, seed_interval
from tasks.build_dataset import load_problems
from tasks.common import Paths, atomic_path, derive_seed, jsonl_text, read_json, setup_process, write_json_atomic
from tasks.config import Params, stage_params
from tasks.environments import environment, make_engine
from tasks.eval_metrics import curve_rows, efficiency_rows, pass_maj_rows
from tasks.generation import BackendUnavailable, GenerationBackend, build_backend, require_backend
from tasks.generation.rollouts import Rollout, RolloutEngine
from tasks.tracking import stage_run

ROLE_CHAR = {"prompt": "p", "gen": "g", "env": "e", "forced": "f"}


REFERENCES = ("bisection", "data_policy")


def failures(env: CodeSearchEnv, r: Rollout, id_text: dict) -> list[tuple[int, bool]]:
    """(step the attempt failed at, whether the policy backtracked next) for every failed
    attempt of a rollout that something followed."""
    spec = env.spec
    failed_obs = {spec.obs_higher + spec.obs_attempt_end, spec.obs_lower + spec.obs_attempt_end}
    state = env.initial_state(r.problem)
    actions = r.generated_texts(id_text, r.start_len)
    out = []
    for i, a in enumerate(actions[:-1]):
        result = env.step(state, a)
        state = result.state
        if result.observation in failed_obs:  # a guess was wrong: the attempt failed
            out.append((state.last_fail_step, actions[i + 1] == spec.backtrack_text))
    return out


def first_failure_backtracked(env: CodeSearchEnv, r: Rollout, id_text: dict) -> bool | None:
    """Did the policy backtrack right after its first failed attempt? None when the first
    attempt did not fail or nothing followed it."""
    events = failures(env, r, id_text)
    return events[0][1] if events else None


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


def reference_row(env: CodeSearchEnv, problems, guess, budget: int, n: int, seed: int) -> dict:
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


def backtrack_events(engine: RolloutEngine, rolls: list[Rollout]) -> list[list[tuple[int, bool]]]:
    """``failures`` of every rollout in the code-search environment (none elsewhere)."""
    if not isinstance(engine.env, CodeSearchEnv):
        return [[] for _ in rolls]
    return [failures(engine.env, r, engine.id_text) for r in rolls]


def evaluate_model(params: Params, paths: Paths, backend: GenerationBackend, problems, log=None,
                   name: str = "base", env=None) -> tuple[dict, list[dict], dict]:
    """Rows per budget, every rollout's record and the details (curves, pass@k) of one model."""
    cfg = params.evaluate
    env = env or CodeSearchEnv(params.env.spec())
    engine = make_engine(backend, env, cfg.temperature, params)
    rows, records, details = {}, [], {"pass_maj": {}}
    for budget in cfg.budgets:
        # the same seed for every model: paired comparisons over the same problems and draws
        rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "eval", budget),
                           cfg.batch_size, cfg.budget_forcing, desc=f"evaluate {name} B={budget}")
        events = backtrack_events(engine, rolls)
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
    details["extrapolation"] = extrapolate(engine, problems, cfg, log, name)
    return rows, records, details


def extrapolate(engine: RolloutEngine, problems, cfg, log=None, name: str = "base") -> dict:
    """Accuracy past the evaluated budgets with budget forcing: an early stop is overridden
    (``env.continuation_text`` appended, FORCED) until the budget is spent; forced tokens are
    counted in the rows."""
    rows = {}
    for budget in cfg.extrapolation_budgets:
        rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "extrapolate", budget),
                           cfg.batch_size, budget_forcing=True, desc=f"extrapolate {name} B={budget}")
        events = backtrack_events(engine, rolls)
        rows[budget] = model_row(rolls, cfg.n_samples, cfg.n_bootstrap, derive_seed(cfg.seed, "boot-x", budget),
                                 events)
        if log:
            log({f"{name}.accuracy_forced": rows[budget]["accuracy"]}, budget)
    return rows


def reference_rows(params: Params, problems, log=None) -> dict:
    """Bisection and the base data policy, simulated exactly (the code-search environment has a
    known optimal policy; text problems have none: no rows)."""
    cfg = params.evaluate
    if params.env.kind != "code_search":
        return {}
    env = CodeSearchEnv(params.env.spec())
    data_policy = base_guess_fn(env.spec.n_values, params.train_base.p_informed)
    out = {"bisection": {}, "data_policy": {}}
    for budget in cfg.budgets:
        for name, guess in (("bisection", bisection_guess), ("data_policy", data_policy)):
            n = 1 if name == "bisection" else cfg.reference_samples
            out[name][budget] = reference_row(env, problems, guess, budget, n, derive_seed(cfg.seed, name, budget))
            if log:
                log({f"{name}.accuracy": out[name][budget]["accuracy"]}, budget)
    return out


def evaluated_models(params: Params, paths: Paths) -> dict[str, Path]:
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


def display_models(params: Params) -> list[str]:
    """What figures, the headline table and token efficiency compare: base, warmstart and each
    RL arm's last round aggregated over seeds."""
    return list(params.evaluate.models)


def run_evaluate(params: Params, paths: Paths, log=None, backends: dict | None = None) -> dict:
    """Evaluate every model of ``evaluated_models``, aggregate RL arms over seeds, simulate the
    reference policies; write outputs."""
    problems = load_problems(paths, "test")
    models = evaluated_models(params, paths)
    results, records, details = {}, {}, {}
    with environment(params) as env:
        for name, path in models.items():
            # one model loaded at a time: several vLLM engines would not share a GPU
            backend = backends[name] if backends else build_backend(params, path)
            results[name], records[name], details[name] = evaluate_model(params, paths, backend, problems, log, name,
                                                                         env)
            del backend
    for arm in (m for m in params.evaluate.models if m in params.rl.arms):
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


def rl_compute(params: Params, paths: Paths) -> dict:
    """What each evaluated arm's training cost, per seed (summed over its rounds), from the
    rounds' metrics: RL rollouts, policy updates, generated tokens (prefix rollouts and
    continuations) and the probe tokens the arm's own advantages needed."""
    keys = ("rollouts", "steps", "prefix_generated_tokens", "generated_tokens", "probe_tokens", "total_tokens")
    out = {}
    for arm in (m for m in params.evaluate.models if m in params.rl.arms):
        per_seed = []
        for seed in params.rl.seeds:
            rounds = [read_json(paths.rl_round(arm, seed, r.n) / "metrics.json")["summary"] for r in params.rl.rounds]
            per_seed.append({k: sum(r[k] for r in rounds) for k in keys})
        out[arm] = {"per_seed": per_seed, "mean": {k: float(np.mean([s[k] for s in per_seed])) for k in keys}}
    return out


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


def write_outputs(paths: Paths, results: dict, records: dict[str, list[dict]], budgets: list[int],
                  details: dict | None = None, shown: list[str] | None = None) -> None:
    by_budget = {name: {f"B{b}": row for b, row in rows.items()} for name, rows in results.items()}
    write_json_atomic(paths.metrics / "evaluate.json", by_budget, sort_keys=False)  # budgets in order
    write_json_atomic(paths.metrics / "evaluate_details.json", {"schema": DETAILS_SCHEMA, **(details or {})},
                      sort_keys=False)
    models = shown if shown is not None else [n for n in results if n not in REFERENCES]
    refs = [n for n in REFERENCES if n in results]
    plot_rows = [{"budget": b, **{name: results[name][b]["accuracy"] for name in [*models, *refs]}}
                 for b in budgets]
    write_json_atomic(paths.plots / "accuracy_vs_budget.json", plot_rows)
    regret_rows = [{"budget": b, **{n: results[n][b]["regret"] for n in models},
                    **{f"{n}_votes": results[n][b]["regret_votes"] for n in models}} for b in budgets]
    write_json_atomic(paths.plots / "regret_vs_budget.json", regret_rows)
    with atomic_path(paths.eval_dir) as tmp:
        tmp.mkdir()
        for name, recs in records.items():
            (tmp / f"rollouts_{name.replace('/', '_')}.jsonl").write_text(jsonl_text(recs))
    with atomic_path(paths.plots / "accuracy_vs_budget.png") as tmp:
        plot_accuracy(results, budgets, tmp, models)


def plot_accuracy(results: dict, budgets: list[int], out, models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in models:
        rows = [results[name][b] for b in budgets]
        over = rows[0].get("ci_over", "problems")
        ax.plot(budgets, [r["accuracy"] for r in rows], "o-", label=f"{name} (95% CI over {over})")
        ax.fill_between(budgets, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.2)
    if "bisection" in results:
        ax.plot(budgets, [results["bisection"][b]["accuracy"] for b in budgets], "k--", label="bisection (optimal)")
        data_policy = [results["data_policy"][b]["accuracy"] for b in budgets]
        ax.plot(budgets, data_policy, ":", label="base data policy (never gives up)")
    ax.set_xlabel("generated-token budget")
    ax.set_ylabel("accuracy (forced answer)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    setup_process(params.runtime.torch_threads, params.evaluate.seed)
    paths = Paths()
    try:
        require_backend(params.generation.backend)
    except BackendUnavailable as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for path in evaluated_models(params, paths).values():  # every model present, before anything is written
        if not (path / "config.json").exists():
            print(f"evaluate: {path} holds no model: run the stage that writes it first (dvc repro)", file=sys.stderr)
            raise SystemExit(2)
    with stage_run("evaluate", params.runtime.tracking_uri, params.runtime.experiment,
                   {"evaluate": params.evaluate.model_dump(), "generation": params.generation.model_dump()}) as mlflow:
        results = run_evaluate(params, paths, lambda m, step: mlflow.log_metrics(m, step=step))
        mlflow.log_metrics(flat_metrics(results))
        mlflow.log_artifact(str(paths.plots / "accuracy_vs_budget.png"))
        mlflow.log_artifact(str(paths.metrics / "evaluate.json"))
    for name in display_models(params):
        for b in params.evaluate.budgets:
            row = results[name][b]
            ref = f" bisection={results['bisection'][b]['accuracy']:.3f}" if "bisection" in results else ""
            print(f"{name:9s} B={b:3d} acc={row['accuracy']:.3f} [{row['ci_low']:.3f},{row['ci_high']:.3f}] "
                  f"wasted={row['wasted_share']:.2f} backtrack|deep-failure={row['backtrack_after_deep_failure']:.2f} "
                  f"regret={row['regret']:.3f}{ref}")


if __name__ == "__main__":
    main()

"""Stage ``evaluate`` (first version): accuracy of the base model at several token budgets.

For each budget B, ``n_samples`` rollouts per test problem; the answer is forced after B
generated tokens. Beside the model, two reference policies are simulated exactly in the
environment with Bayes-optimal forced answers: bisection (the known-optimal search) and the
base data policy the model imitated. Writes ``metrics/evaluate.json`` (DVC metrics),
``plots/accuracy_vs_budget.json`` (DVC plot), ``plots/accuracy_vs_budget.png`` and every
rollout to ``data/eval/rollouts_base.jsonl``.

    python -m tasks.evaluate                 # what dvc.yaml runs
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np

from mrt_core.envs.code_search import CodeSearchEnv, base_guess_fn, bisection_guess, play
from mrt_core.metrics import accuracy, bootstrap_ci
from tasks.build_dataset import load_split
from tasks.common import Paths, atomic_path, derive_seed, jsonl_text, setup_process, write_json_atomic
from tasks.config import Params, load_params_or_exit
from tasks.generation import BackendUnavailable, GenerationBackend, make_backend
from tasks.generation.rollouts import Rollout, RolloutEngine
from tasks.modeling import check_round_trip
from tasks.tracking import stage_run
from tasks.train_base import problems_of

ROLE_CHAR = {"prompt": "p", "gen": "g", "env": "e", "forced": "f"}


def model_row(rolls: list[Rollout], n_samples: int, n_boot: int, seed: int) -> dict:
    """Accuracy with a bootstrap CI over problems, and how the budget was spent."""
    correct = np.array([r.correct for r in rolls], dtype=float).reshape(-1, n_samples)
    lo, hi = bootstrap_ci(correct.mean(axis=1), n_boot, seed)
    steps = sum(r.state.steps for r in rolls)
    return {
        "accuracy": accuracy(correct),
        "ci_low": lo,
        "ci_high": hi,
        "j_exact": float(np.mean([r.j_exact for r in rolls])),
        "wasted_share": sum(r.state.wasted for r in rolls) / max(steps, 1),
        "attempts": float(np.mean([r.state.attempts for r in rolls])),
        "solved_share": float(np.mean([r.state.solved for r in rolls])),
        "stopped_by_policy": float(np.mean([r.stopped_by == "policy" for r in rolls])),
        "generated_tokens": float(np.mean([r.budget_tokens for r in rolls])),
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
        "steps": r.state.steps,
        "wasted": r.state.wasted,
        "attempts": r.state.attempts,
    }


def build_backend(params: Params, model_path) -> GenerationBackend:
    """The configured generation backend for ``model_path``; raises ``BackendUnavailable``."""
    gen = params.generation
    backend = make_backend(gen.backend, str(model_path), gpu_memory_utilization=gen.vllm_gpu_memory_utilization,
                           dtype=gen.vllm_dtype)
    check_round_trip(backend.tokenizer, params.env.spec().alphabet())
    return backend


def run_evaluate(params: Params, paths: Paths, log=None, backend: GenerationBackend | None = None) -> dict:
    cfg = params.evaluate
    env = CodeSearchEnv(params.env.spec())
    problems = problems_of(load_split(paths, "test"))
    backend = backend or build_backend(params, paths.base_model)
    tokenizer = backend.tokenizer
    engine = RolloutEngine(backend, env, cfg.temperature, params.env.continuation_text)
    data_policy = base_guess_fn(env.spec.n_values, params.train_base.p_informed)
    results, records = {"base": {}, "bisection": {}, "data_policy": {}}, []
    for budget in cfg.budgets:
        rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "eval", budget),
                           cfg.batch_size, cfg.budget_forcing, desc=f"evaluate B={budget}")
        boot_seed = derive_seed(cfg.seed, "boot", budget)
        results["base"][budget] = model_row(rolls, cfg.n_samples, cfg.n_bootstrap, boot_seed)
        for name, guess in (("bisection", bisection_guess), ("data_policy", data_policy)):
            n = 1 if name == "bisection" else cfg.reference_samples
            results[name][budget] = reference_row(env, problems, guess, budget, n, derive_seed(cfg.seed, name, budget))
        records += [rollout_record(r, budget, tokenizer) for r in rolls]
        if log:
            for name, rows in results.items():
                log({f"{name}.accuracy": rows[budget]["accuracy"]}, budget)
            log({"base.wasted_share": results["base"][budget]["wasted_share"]}, budget)
    write_outputs(paths, results, records, cfg.budgets)
    return results


def flat_metrics(results: dict) -> dict:
    return {f"{name}.B{b}.{k}": v for name, rows in results.items() for b, row in rows.items() for k, v in row.items()}


def write_outputs(paths: Paths, results: dict, records: list[dict], budgets: list[int]) -> None:
    by_budget = {name: {f"B{b}": row for b, row in rows.items()} for name, rows in results.items()}
    write_json_atomic(paths.metrics / "evaluate.json", by_budget, sort_keys=False)  # budgets in order
    plot_rows = [{"budget": b, **{name: results[name][b]["accuracy"] for name in results}} for b in budgets]
    write_json_atomic(paths.plots / "accuracy_vs_budget.json", plot_rows)
    with atomic_path(paths.eval_dir / "rollouts_base.jsonl") as tmp:
        tmp.write_text(jsonl_text(records))
    with atomic_path(paths.plots / "accuracy_vs_budget.png") as tmp:
        plot_accuracy(results, budgets, tmp)


def plot_accuracy(results: dict, budgets: list[int], out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    base = [results["base"][b] for b in budgets]
    ax.plot(budgets, [r["accuracy"] for r in base], "o-", label="base model (95% CI over problems)")
    ax.fill_between(budgets, [r["ci_low"] for r in base], [r["ci_high"] for r in base], alpha=0.2)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params_or_exit(args.params)
    setup_process(params.runtime.torch_threads, params.evaluate.seed)
    paths = Paths()
    try:  # before anything is written or logged
        backend = build_backend(params, paths.base_model)
    except (BackendUnavailable, FileNotFoundError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    with stage_run("evaluate", params.runtime.tracking_uri, params.runtime.experiment,
                   {"evaluate": params.evaluate.model_dump(), "generation": params.generation.model_dump()}) as mlflow:
        results = run_evaluate(params, paths, lambda m, step: mlflow.log_metrics(m, step=step), backend)
        mlflow.log_metrics(flat_metrics(results))
        mlflow.log_artifact(str(paths.plots / "accuracy_vs_budget.png"))
        mlflow.log_artifact(str(paths.metrics / "evaluate.json"))
    for b in params.evaluate.budgets:
        row = results["base"][b]
        print(f"B={b:3d} base acc={row['accuracy']:.3f} [{row['ci_low']:.3f},{row['ci_high']:.3f}] "
              f"wasted={row['wasted_share']:.2f} bisection={results['bisection'][b]['accuracy']:.3f} "
              f"data_policy={results['data_policy'][b]['accuracy']:.3f}")


if __name__ == "__main__":
    main()

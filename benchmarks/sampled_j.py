"""Sampled J against exact J on the code search: bias, variance, interval coverage, shrinkage,
and the tokens adaptive K saves (METHOD.md (2)-(2d)).

Exact J is the ground truth on the code search (a finite answer set: the probability of the
reference answer, teacher-forced). The warm-start policy of the default pipeline (``make run``
first) samples rollouts of validation problems at the training budget; the meta-prover reads J
after every episode of every rollout, exactly and then ``--reps`` times with each sampled
estimator (fresh draws each time):

- ``K=8``: the default sampled estimator (8 answers per prefix);
- ``K=32``: the most an adaptive run may draw;
- ``adaptive``: 4 answers at a time per prefix while J's Agresti-Coull interval is wider than
  ``+-half_width``, at most 32.

Reported per estimator: the bias and RMSE of J against exact J, the variance over draws, the
share of prefixes whose interval holds exact J, the probe tokens spent, and for progress (the
per-episode bonus) the RMSE against exact progress as measured and shrunk (``interval``,
``snr``). Nothing here is timed: the figures are counts and errors, the same on any machine.

    .venv/bin/python -m benchmarks.sampled_j --problems 64 --reps 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.record import print_table, record
from mrt_core.meta_prover import progress_standard_error, shrink_progress
from mrt_core.regret import progress
from mrt_lib.common import Paths, setup_process
from mrt_lib.config import load_params
from mrt_lib.data import load_problems
from mrt_lib.envs import environment, family
from mrt_lib.generation import make_backend
from mrt_lib.generation.curves import episode_curves

REPO = Path(__file__).resolve().parents[1]
ESTIMATORS = {"K=8": dict(samples=8), "K=32": dict(samples=32),
              "adaptive": dict(samples=4, max_samples=32)}


def flat(curves, key: str) -> np.ndarray:
    return np.concatenate([np.asarray(getattr(c, key), dtype=float) for c in curves])


def flat_progress(curves, shrink: str = "none", z: float = 1.96) -> np.ndarray:
    out = []
    for c in curves:
        se = progress_standard_error(np.array(c.j_se)) if c.j_se else np.zeros(len(c.j) - 1)
        out.append(shrink_progress(progress(np.array(c.j)), se, shrink, z))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--half-width", type=float, default=0.15)
    parser.add_argument("--model", default="models/warmstart")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sampled_j.json"))
    args = parser.parse_args(argv)
    params = load_params(REPO / "params.yaml")
    setup_process(params.runtime.torch_threads, 0)
    z = params.meta_prover.z
    with environment(params) as env:
        engine = family(params.env.kind).engine(make_backend("hf", str(REPO / args.model)), env, 1.0, params.env)
        problems = load_problems(Paths(root=REPO), "val")[: args.problems]
        rolls = engine.run(problems, n_samples=1, budget=params.rl.train_budget, seed=0, batch_size=256)
        exact = episode_curves(engine, rolls, "exact")
        j_true, prog_true = flat(exact, "j"), flat_progress(exact)
        rows, results = [], {}
        for name, kw in ESTIMATORS.items():
            draws = [episode_curves(engine, rolls, "sampled", seed=rep, half_width=args.half_width, z=z, **kw)
                     for rep in range(args.reps)]
            j = np.stack([flat(d, "j") for d in draws])  # (reps, cuts)
            se = np.stack([flat(d, "j_se") for d in draws])
            err = j - j_true
            prog = {rule: np.stack([flat_progress(d, rule, z) for d in draws]) - prog_true
                    for rule in ("none", "interval", "snr")}
            zero = np.abs(prog_true) <= params.evaluate.zero_threshold  # episodes with no real progress
            results[name] = {
                "j_bias": float(err.mean()), "j_rmse": float(np.sqrt((err**2).mean())),
                "j_variance_over_draws": float(j.var(axis=0, ddof=1).mean()),
                "interval_coverage": float((np.abs(err) <= z * se).mean()),
                "answers_per_prefix": float(np.mean([k for d in draws for c in d for k in c.j_samples])),
                "probe_tokens": float(np.mean([sum(c.probe_tokens for c in d) for d in draws])),
                **{f"progress_rmse_{rule}": float(np.sqrt((e**2).mean())) for rule, e in prog.items()},
                **{f"false_progress_{rule}": float(np.abs(e[:, zero]).mean()) if zero.any() else float("nan")
                   for rule, e in prog.items()},
            }
            r = results[name]
            rows.append([name, f"{r['answers_per_prefix']:.1f}", f"{r['probe_tokens']:,.0f}", f"{r['j_bias']:+.4f}",
                         f"{r['j_rmse']:.4f}", f"{r['interval_coverage']:.3f}", f"{r['progress_rmse_none']:.4f}",
                         f"{r['progress_rmse_interval']:.4f}", f"{r['progress_rmse_snr']:.4f}",
                         f"{r['false_progress_none']:.4f}", f"{r['false_progress_interval']:.4f}"])
    cuts = len(j_true)
    print(f"{len(rolls)} rollouts, {cuts} prefixes, exact J mean {j_true.mean():.3f}, "
          f"{int(zero.sum())} of {len(prog_true)} episodes with no exact progress")
    print_table(["estimator", "answers/prefix", "probe tokens", "J bias", "J RMSE", "coverage",
                 "progress RMSE", "... interval", "... snr", "false progress", "... interval"], rows)
    record(args.out, params.runtime.torch_threads, rollouts=len(rolls), prefixes=cuts, reps=args.reps,
           half_width=args.half_width, z=z, model=args.model, exact_j_mean=float(j_true.mean()), results=results)


if __name__ == "__main__":
    main()

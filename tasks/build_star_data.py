"""Stage ``build_star_data``: MRT-STaR data, correct traces whose episodes make progress.

The policy (the warm-start model by default) samples traces on the training problems; each is
split into episodes (the environment's attempts), the meta-prover's ``J(mu | c_j)`` is read after
every episode with shared-prefix probes (exact estimator, METHOD.md (3)), progress is
METHOD.md (4), and a trace is kept when it is correct and makes progress (the MRT-STaR filter,
METHOD.md after (13)). Rows carry provenance; rejects are counted by reason.

    python -m tasks.build_star_data          # what dvc.yaml runs
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from mrt_core.advantages import star_filter
from mrt_core.regret import progress, zero_progress_share
from mrt_lib.common import (
    Paths,
    atomic_path,
    derive_seed,
    entry_environment,
    exit_on,
    jsonl_text,
    model_hash,
    setup_process,
    write_json_atomic,
)
from mrt_lib.config import Params, StageConfig, for_stage, stage_params
from mrt_lib.data import load_problems
from mrt_lib.envs import GradingMeter, backend_for, backend_for_or_exit, environment, family
from mrt_lib.generation.curves import curves_for
from mrt_lib.generation.rollouts import Rollout
from mrt_lib.grading import GradingError
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "template", "grader", "meta_prover", "generation", "build_star_data")


def run_build_star_data(params: Params, paths: Paths, backend=None) -> dict:
    params = for_stage(params, SECTIONS)
    cfg = params.build_star_data
    model_path = paths.model(cfg.model)
    backend = backend or backend_for(params, model_path)
    with environment(params) as env:
        engine = family(params.env.kind).engine(backend, env, cfg.temperature, params.env)
        return _build(params, paths, cfg, env, engine, model_path)


def _build(params: StageConfig, paths: Paths, cfg, env, engine, model_path) -> dict:
    meter = GradingMeter(params, env)
    problems = load_problems(paths, "train")[: cfg.n_problems]
    rolls = engine.run(problems, cfg.n_samples, cfg.budget, derive_seed(cfg.seed, "star"), cfg.batch_size,
                       desc="star samples")
    rows, rejects, all_progress = [], Counter(), []
    mp = params.meta_prover
    for r, curve in zip(rolls, curves_for(engine, rolls, mp, derive_seed(cfg.seed, "j"))):
        episodes, j_values = curve.episodes, list(curve.j)
        prog = progress(np.array(j_values)).tolist()
        all_progress += prog
        keep = star_filter([float(r.correct)], [prog], cfg.min_total_progress, cfg.max_zero_share, cfg.zero_threshold)
        if keep[0]:
            rows.append(star_row(engine, r, episodes, j_values, prog, cfg.seed, model_hash(model_path)))
        else:
            rejects["incorrect" if not r.correct else "not_progressing"] += 1
    stats = {
        "n_rollouts": len(rolls), "n_correct": sum(r.correct for r in rolls), "n_rows": len(rows),
        "yield": len(rows) / max(len(rolls), 1), "rejects": dict(sorted(rejects.items())),
        "mean_progress": float(np.mean(all_progress)) if all_progress else float("nan"),
        "zero_progress_share": zero_progress_share(np.array(all_progress), cfg.zero_threshold),
    }
    stats |= meter.check([meter.take()])  # grader counts where answers can time out; fails past the share
    with atomic_path(paths.star) as tmp:
        tmp.mkdir()
        (tmp / "traces.jsonl").write_text(jsonl_text(rows))
        write_json_atomic(tmp / "meta.json", stats)
    return stats


def star_row(engine, r: Rollout, episodes, j_values, prog, seed: int, hash_: str) -> dict:
    segments, last = [], None
    for t, role in zip(r.token_ids[r.start_len:], r.roles[r.start_len:]):
        if role == last:
            segments[-1][0] += engine.id_text[t]
        else:
            segments.append([engine.id_text[t], role.value])
        last = role
    return {
        "problem_id": r.problem.id, "prompt": r.problem.prompt, "segments": [[r.problem.prompt, "prompt"]] + segments,
        "text": r.problem.prompt + "".join(s[0] for s in segments), "suffix_start": 0,
        "episodes": [[e.char_start, e.char_end] for e in episodes], "j": j_values, "progress": prog,
        "model_hash": hash_, "seed": seed,
    }


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    entry_environment()
    setup_process(params.runtime.torch_threads, params.build_star_data.seed)
    paths = Paths()
    backend = backend_for_or_exit("build_star_data", params, paths.model(params.build_star_data.model))
    with stage_run("build_star_data", params.runtime.tracking_uri, params.runtime.experiment,
                   {"build_star_data": params.build_star_data.model_dump()}) as mlflow:
        with exit_on(GradingError, "build_star_data", 1):
            stats = run_build_star_data(params, paths, backend)
        mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"rejects.{k}": float(v) for k, v in stats["rejects"].items()})
        mlflow.log_artifact(str(paths.star / "meta.json"))
    print(f"build_star_data: {stats}")


if __name__ == "__main__":
    main()

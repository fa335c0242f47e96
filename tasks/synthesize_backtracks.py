"""Stage ``synthesize_backtracks``: warm-start traces with an explicit backtrack (MRT-B).

For each training problem the base model searches until its first attempt that fails *after*
confirming at least one step (an attempt failing at its first step has nothing to return to):
that attempt is z_0, the attempts before it are kept as they are. The success of resampling z_0
from each of its step prefixes is estimated (K samples each), the best step is chosen
(METHOD.md (18)) and the trace is written as: the search so far, the failed attempt, a
backtrack naming that step, a successful new attempt from the shared prefix, the answer.
Every trace is replayed through the environment, so its feedback is exactly the environment's.

    python -m tasks.synthesize_backtracks    # what dvc.yaml runs
"""

from __future__ import annotations

import sys

from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.backtracks import (
    SynthesisError,
    build_row,
    estimate_prefixes,
    exact_prefixes,
    search_until_deep_failure,
    synthesis_stats,
)
from mrt_lib.common import (
    WARMSTART_SCOPE,
    Paths,
    atomic_path,
    derive_seed,
    entry_environment,
    jsonl_text,
    model_hash,
    setup_process,
    write_json_atomic,
    write_not_applicable,
)
from mrt_lib.config import Params, StageConfig, for_stage, stage_params
from mrt_lib.data import load_problems
from mrt_lib.envs import backend_for, backend_for_or_exit, family
from mrt_lib.generation.rollouts import RolloutEngine
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "template", "generation", "synthesize_backtracks")


def synthesize(params: StageConfig, paths: Paths, backend) -> tuple[list[dict], dict]:
    """Search, score every step prefix of each failed attempt, build the traces; rows and stats."""
    cfg = params.synthesize_backtracks
    env = CodeSearchEnv(params.env.spec())
    engine = RolloutEngine(backend, env, cfg.temperature)
    problems = load_problems(paths, "train")[: cfg.n_problems]
    failed, rejects = search_until_deep_failure(engine, problems, cfg, derive_seed(cfg.seed, "search"))
    malformed = rejects["malformed_search"] / max(len(problems) * cfg.searches_per_problem, 1)
    if malformed > cfg.max_malformed_share:
        raise SynthesisError(f"{malformed:.0%} of base searches were malformed (limit "
                             f"synthesize_backtracks.max_malformed_share={cfg.max_malformed_share}): is the base "
                             "model trained on this environment's format?")
    if cfg.estimator == "exact":
        cands = exact_prefixes(engine, failed)
    else:
        cands = estimate_prefixes(engine, failed, cfg, derive_seed(cfg.seed, "resample"))
    provenance = {"model_hash": model_hash(paths.base_model), "seed": cfg.seed}
    rows = []
    for cand in cands:
        row, reason = build_row(env, cand, cfg.variant, provenance)
        if row is None:
            rejects[reason] += 1
        else:
            rows.append(row)
    return rows, synthesis_stats(problems, failed, cands, rows, rejects)


def run_synthesize_backtracks(params: Params, paths: Paths, backend=None) -> dict:
    """Write ``traces.jsonl`` and ``meta.json`` under ``paths.backtracks``; returns the stats."""
    params = for_stage(params, SECTIONS)
    if not family(params.env.kind).backtracks:
        return write_not_applicable(paths.backtracks, "synthesize_backtracks", WARMSTART_SCOPE)
    backend = backend or backend_for(params, paths.base_model)
    rows, stats = synthesize(params, paths, backend)
    with atomic_path(paths.backtracks) as tmp:
        tmp.mkdir()
        (tmp / "traces.jsonl").write_text(jsonl_text(rows))
        write_json_atomic(tmp / "meta.json", stats)
    return stats


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    entry_environment()
    setup_process(params.runtime.torch_threads, params.synthesize_backtracks.seed)
    paths = Paths()
    code_search = family(params.env.kind).backtracks
    backend = backend_for_or_exit("synthesize_backtracks", params, paths.base_model) if code_search else None
    with stage_run("synthesize_backtracks", params.runtime.tracking_uri, params.runtime.experiment,
                   {"synthesize_backtracks": params.synthesize_backtracks.model_dump()}) as mlflow:
        try:
            stats = run_synthesize_backtracks(params, paths, backend)
        except SynthesisError as exc:
            print(f"synthesize_backtracks: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"rejects.{k}": float(v) for k, v in stats.get("rejects", {}).items()})
        for note in paths.backtracks.glob("*.json"):
            mlflow.log_artifact(str(note))
    print(f"synthesize_backtracks: {stats}")


if __name__ == "__main__":
    main()

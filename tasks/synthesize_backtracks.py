"""Stage ``synthesize_backtracks``: warm-start traces with an explicit backtrack (MRT-B).

For each training problem the base model writes a first attempt. For a failed one, the success
of resampling the attempt from each of its step prefixes is estimated (K samples each); the
best step is chosen (METHOD.md (18)) and the trace is written as: the failed attempt, a
backtrack naming that step, a successful new attempt from the shared prefix, the answer.
Every trace is replayed through the environment, so its feedback is exactly the environment's.

    python -m tasks.synthesize_backtracks    # what dvc.yaml runs
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrt_core.backtrack import choose_backtrack_step, plan_trace, success_gain
from mrt_core.envs.base import Problem, Role, Segment
from mrt_core.envs.code_search import CodeSearchEnv
from tasks.build_dataset import load_split
from tasks.common import Paths, atomic_path, derive_seed, jsonl_text, setup_process, write_json_atomic
from tasks.config import Params, load_params_or_exit
from tasks.evaluate import build_backend
from tasks.generation import BackendUnavailable
from tasks.generation.rollouts import RolloutEngine, Start
from tasks.tracking import stage_run
from tasks.train_base import problems_of


class SynthesisError(RuntimeError):
    """Too many malformed first attempts: dropping them would silently bias the data."""


def attempt_over(state) -> bool:
    return state.solved or state.digit == 0


def replay(env: CodeSearchEnv, problem: Problem, actions) -> tuple[list[Segment], object]:
    """Segments of prompt + actions with the environment's answers, and the final state."""
    state, segments = env.initial_state(problem), [Segment(problem.prompt, Role.PROMPT)]
    for a in actions:
        result = env.step(state, a)
        state = result.state
        segments.append(Segment(a, Role.GENERATED))
        if result.observation:
            segments.append(Segment(result.observation, Role.ENV))
    return segments, state


@dataclass
class Candidate:
    """A failed first attempt and what resampling from each of its step prefixes gave."""

    problem: Problem
    first: list[str]
    success: list[float] = field(default_factory=list)  # j = 0..fail step
    continuations: list[list[str] | None] = field(default_factory=list)


def model_hash(path: Path) -> str:
    weights = path / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else "unknown"


def prefix_start(engine: RolloutEngine, problem: Problem, actions: list[str], k: int) -> Start:
    """A rollout start holding the prompt and the first actions with their feedback."""
    segments, state = replay(engine.env, problem, actions)
    ids, roles = [], []
    for seg in segments:
        piece = engine.encode(seg.text)
        ids += piece
        roles += [seg.role] * len(piece)
    return Start(problem, k, tuple(ids), tuple(roles), state)


def classify_first_attempts(engine, problems, params: Params, seed: int) -> tuple[list[tuple], Counter]:
    """One attempt per problem; returns the failed ones (problem, actions) and reject counts."""
    cfg = params.synthesize_backtracks
    rolls = engine.run(problems, 1, params.env.n_digits + 1, seed, cfg.batch_size, stop_when=attempt_over,
                       desc="first attempts")
    failed, rejects = [], Counter()
    for r in rolls:
        actions = r.generated_texts(engine.id_text, r.start_len)
        if r.stopped_by != "condition" or r.state.wasted or not all(engine.env.is_action(a) for a in actions):
            rejects["malformed_first_attempt"] += 1  # stopped, gave up or wrote something invalid
        elif r.state.solved:
            rejects["first_attempt_solved"] += 1
        else:
            failed.append((r.problem, actions))
    return failed, rejects


def estimate_prefixes(engine, failed: list[tuple], params: Params, seed: int) -> list[Candidate]:
    """Resample each failed attempt K times from each step prefix (METHOD.md (18))."""
    k_samples = params.synthesize_backtracks.n_resamples
    starts, index = [], []
    for c, (problem, first) in enumerate(failed):
        for j in range(len(first)):  # keep j = 0 .. fail-step steps; step `fail` itself is resampled
            starts += [prefix_start(engine, problem, first[:j], k) for k in range(k_samples)]
            index += [(c, j)] * k_samples
    rolls = engine.run_from(starts, params.env.n_digits, seed, params.synthesize_backtracks.batch_size,
                            stop_when=attempt_over, desc="resample step prefixes")
    cands = [Candidate(p, first, [0.0] * len(first), [None] * len(first)) for p, first in failed]
    for (c, j), r in zip(index, rolls):
        if r.state.solved:
            cands[c].success[j] += 1 / k_samples
            if cands[c].continuations[j] is None:
                cands[c].continuations[j] = r.generated_texts(engine.id_text, r.start_len)
    return cands


def build_row(env: CodeSearchEnv, cand: Candidate, params: Params, provenance: dict) -> tuple[dict | None, str]:
    """The warm-start trace of one candidate, or None and the reason it was rejected."""
    variant = params.synthesize_backtracks.variant
    step = choose_backtrack_step(cand.success)
    cont = cand.continuations[step]
    if cont is None:
        return None, "no_successful_resample"
    plan = plan_trace(variant, cand.first, step, cont, env.spec.backtrack_text, env.spec.symbols)
    segments, state = replay(env, cand.problem, plan.actions())
    if not state.solved:
        return None, "malformed_replay"
    segments += [Segment(env.spec.termination_text, Role.GENERATED), Segment(cand.problem.answer, Role.GENERATED)]
    first_len = len("".join(s.text for s in replay(env, cand.problem, cand.first)[0]))
    row = {
        "problem_id": cand.problem.id, "prompt": cand.problem.prompt, "variant": variant,
        "text": "".join(s.text for s in segments), "segments": [[s.text, s.role.value] for s in segments],
        "suffix_start": first_len,  # characters of prompt + first attempt (for loss on the suffix only)
        "fail_step": len(cand.first) - 1, "chosen_step": step, "success_by_step": cand.success,
        **provenance,
    }
    return row, ""


def synthesize(params: Params, paths: Paths, backend) -> tuple[list[dict], dict]:
    cfg = params.synthesize_backtracks
    env = CodeSearchEnv(params.env.spec())
    engine = RolloutEngine(backend, env, cfg.temperature)
    problems = problems_of(load_split(paths, "train"))[: cfg.n_problems]
    failed, rejects = classify_first_attempts(engine, problems, params, derive_seed(cfg.seed, "first"))
    malformed = rejects["malformed_first_attempt"] / max(len(problems), 1)
    if malformed > cfg.max_malformed_share:
        raise SynthesisError(f"{malformed:.0%} of first attempts were malformed (limit "
                             f"synthesize_backtracks.max_malformed_share={cfg.max_malformed_share}): is the base "
                             "model trained on this environment's format?")
    cands = estimate_prefixes(engine, failed, params, derive_seed(cfg.seed, "resample"))
    provenance = {"model_hash": model_hash(paths.base_model), "seed": cfg.seed}
    rows = []
    for cand in cands:
        row, reason = build_row(env, cand, params, provenance)
        if row is None:
            rejects[reason] += 1
        else:
            rows.append(row)
    return rows, synthesis_stats(problems, failed, cands, rows, rejects)


def synthesis_stats(problems, failed, cands, rows, rejects) -> dict:
    chosen = [r["chosen_step"] for r in rows]
    gains = [success_gain(c.success, choose_backtrack_step(c.success)) for c in cands]
    return {
        "n_problems": len(problems), "n_failed_first_attempts": len(failed), "n_rows": len(rows),
        "yield": len(rows) / max(len(failed), 1), "rejects": dict(sorted(rejects.items())),
        "mean_backtrack_step": float(np.mean(chosen)) if chosen else float("nan"),
        "mean_fail_step": float(np.mean([len(c.first) - 1 for c in cands])) if cands else float("nan"),
        "mean_success_chosen": float(np.mean([max(c.success) for c in cands])) if cands else float("nan"),
        "mean_success_restart": float(np.mean([c.success[0] for c in cands])) if cands else float("nan"),
        "mean_success_gain_over_restart": float(np.mean(gains)) if gains else float("nan"),
    }


def run_synthesize_backtracks(params: Params, paths: Paths, backend=None) -> dict:
    """Write ``traces.jsonl`` and ``meta.json`` under ``paths.backtracks``; returns the stats."""
    backend = backend or build_backend(params, paths.base_model)
    rows, stats = synthesize(params, paths, backend)
    with atomic_path(paths.backtracks) as tmp:
        tmp.mkdir()
        (tmp / "traces.jsonl").write_text(jsonl_text(rows))
        write_json_atomic(tmp / "meta.json", stats)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params_or_exit(args.params)
    setup_process(params.runtime.torch_threads, params.synthesize_backtracks.seed)
    paths = Paths()
    try:
        backend = build_backend(params, paths.base_model)
    except (BackendUnavailable, FileNotFoundError) as exc:
        print(f"synthesize_backtracks: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    with stage_run("synthesize_backtracks", params.runtime.tracking_uri, params.runtime.experiment,
                   {"synthesize_backtracks": params.synthesize_backtracks.model_dump()}) as mlflow:
        try:
            stats = run_synthesize_backtracks(params, paths, backend)
        except SynthesisError as exc:
            print(f"synthesize_backtracks: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        mlflow.log_metrics({f"rejects.{k}": float(v) for k, v in stats["rejects"].items()})
        mlflow.log_artifact(str(paths.backtracks / "meta.json"))
    print(f"synthesize_backtracks: {stats}")


if __name__ == "__main__":
    main()

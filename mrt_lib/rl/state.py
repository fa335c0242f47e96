"""A round's resume state and its outputs.

Every ``save_every`` steps the training state (model, optimizer, RNG through Accelerate), the
prefix pool and what was recorded are saved under ``checkpoints/rl/<arm>/s<seed>/r<n>/``; a
re-run with the same fingerprint continues from there, any other fingerprint discards it.
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

from mrt_lib.common import atomic_path, jsonl_text, read_json, write_json_atomic
from mrt_lib.generation.rollouts import RolloutEngine
from mrt_lib.resume import ResumeState, unsafe_state
from mrt_lib.rl.prefixes import Prefix, prefix_from_record, prefix_record


@dataclass
class RoundState:
    """What a killed round needs to go on: steps done, the prefix pool (made by the round's
    start policy, so it cannot be re-sampled after updates), its cost, and what was recorded."""

    step: int
    pool: list[Prefix]
    prefix_cost: dict  # the pool's tokens: generated, teacher_forced (its probes)
    history: list[dict]
    records: list[dict]
    validations: list[dict]


def save_state(accelerator, resume: ResumeState, run: RoundState) -> None:
    """Training state (model, optimizer, RNG via Accelerate) after ``run.step`` updates, written
    aside by every rank (collective under DeepSpeed), then moved in with the rest by the main one,
    marked with the round's fingerprint (``mrt_lib.resume``)."""
    state_dir = resume.folder
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
        # history and validations keep their key order: metrics.json of a resumed round must be
        # byte-identical to an uninterrupted one's (jsonl_text would sort the keys)
        (tmp / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run.history))
        (tmp / "records.jsonl").write_text(jsonl_text(run.records))
        (tmp / "validations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run.validations))
        if (state_dir / "best").exists():
            shutil.copytree(state_dir / "best", tmp / "best")
        write_json_atomic(tmp / "state.json", {"step": run.step, "prefix_cost": run.prefix_cost})
        resume.mark(tmp)


def load_state(accelerator, resume: ResumeState, engine: RolloutEngine, by_id: dict) -> RoundState | None:
    """The saved state of the round, or None: nothing saved, or a state made with another
    fingerprint (discarded whole, its best snapshot too, so nothing of it reaches the outputs)."""
    state_dir = resume.folder
    if not resume.usable() or not (state_dir / "state.json").exists():
        return None
    state = read_json(state_dir / "state.json")
    if state["step"]:
        try:  # Accelerate loads with weights_only=True: a crafted pickle raises here, never runs
            _check_random_states(state_dir / "accelerate")
            accelerator.load_state(str(state_dir / "accelerate"))
        except pickle.UnpicklingError as exc:
            raise unsafe_state(resume, exc) from None
    read = lambda name: [json.loads(x) for x in (state_dir / name).read_text().splitlines()]  # noqa: E731
    pool = [prefix_from_record(engine, rec, by_id, i) for i, rec in enumerate(read("pool.jsonl"))]
    print(f"rl_round: resuming at step {state['step']} from {state_dir}")
    return RoundState(state["step"], pool, state["prefix_cost"], read("history.jsonl"), read("records.jsonl"),
                      read("validations.jsonl"))


def _check_random_states(folder: Path) -> None:
    """Load the RNG states as Accelerate will (``weights_only``), so that one it refuses stops the
    resume: Accelerate itself only logs "Could not load random states" and goes on with the
    current generators, and the resumed round would no longer be the uninterrupted one."""
    from accelerate.utils import load

    for path in sorted(folder.glob("random_states_*.pkl")):
        states = load(path)
        if not isinstance(states, dict) or "torch_manual_seed" not in states:
            raise pickle.UnpicklingError(f"{path.name} holds no random states")


def write_outputs(out_dir: Path, model, weights: dict, tok, summary: dict, run: "RoundState",
                   best: Path | None) -> None:
    """``model/`` (the last policy: the next round starts here), ``best/`` when a snapshot
    validated better than the last, every training rollout, and the metrics."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_model(model, weights, tok, tmp / "model")
        if best is not None and summary["best_step"] != summary["steps"] and best.exists():
            shutil.copytree(best, tmp / "best")
        (tmp / "rollouts.jsonl").write_text(jsonl_text(run.records))
        write_json_atomic(tmp / "metrics.json", {"summary": summary, "steps": run.history,
                                                 "validations": run.validations}, sort_keys=False)


def save_model(accelerator, model, tok, folder: Path) -> None:
    """The full weights (gathered on every rank under ZeRO-3) written by the main process."""
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with atomic_path(folder) as tmp:
            write_model(accelerator.unwrap_model(model), weights, tok, tmp)
    accelerator.wait_for_everyone()


def write_model(model, weights: dict, tok, folder: Path) -> None:
    """A Hugging Face model folder (safetensors) from ``weights``, the full state dict."""
    model.save_pretrained(folder, state_dict=weights, safe_serialization=True)
    tok.save_pretrained(folder)


def log_round(mlflow, out: Path, summary: dict, round_n: int, sample_rows: int) -> None:
    """The round's summary metrics, its metrics.json and a table of its last ``sample_rows``
    rollouts, to the stage's MLflow run."""
    mlflow.log_metrics({f"round.{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))},
                       step=round_n)
    mlflow.log_artifact(str(out / "metrics.json"))
    sample = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    sample = sample[-sample_rows:] if sample_rows else []
    if sample:
        keys = ("problem_id", "step", "prefix_text", "text", "roles", "reward", "episode_j")
        mlflow.log_table({k: [row[k] for row in sample] for k in keys}, artifact_file=f"rollouts_r{round_n}.json")


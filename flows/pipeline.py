"""The MRT pipeline as a Prefect flow: the same DVC stages, in the same order.

Each Prefect task runs one stage through DVC (``dvc repro --single-item <stage>``), so both
paths share ``dvc.lock`` and skip what is unchanged; Prefect adds retries, observability and
(at scale) deployments. Locally it uses Prefect's ephemeral API: no server to start.

    python -m flows.pipeline                 # or: make flow
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

from mrt_lib.common import LOCKS, LockedError, entry_environment, exclusive_lock
from mrt_lib.config import load_params_or_exit
from mrt_lib.prefect_server import ephemeral_api, note_flow_run
from mrt_lib.streaming import stream_lines
from mrt_lib.tracking import PARENT_RUN_ENV, PIPELINE_RUN_ENV, new_pipeline_run_id, start_parent_run

STAGES = ("build_dataset", "train_base", "synthesize_backtracks", "sft_warmstart", "build_star_data", "rl_start",
          "rl_round", "evaluate", "report")


def stage_order(name: str) -> tuple:
    """Sort key of a DVC stage name: its group in ``STAGES``, then (for the matrix stages
    ``rl_start@<arm>-<seed>`` and ``rl_round@<arm>-<seed>-round<i>``) the round, then the name."""
    group, _, item = name.partition("@")
    round_index = int(item.rsplit("round", 1)[1]) if group == "rl_round" else -1
    return STAGES.index(group), round_index, name


def pipeline_stages(repo_dir: str, env: dict[str, str] | None = None) -> list[str]:
    """Every stage of the repository's dvc.yaml (matrix stages expanded by DVC from params),
    in an order that respects the graph: one Prefect task each."""
    proc = subprocess.run([_dvc(), "stage", "list", "--name-only"], cwd=repo_dir, env=env, capture_output=True,
                          text=True, check=True)
    return sorted(proc.stdout.split(), key=stage_order)


def _dvc() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else (shutil.which("dvc") or "dvc")


@task(name="dvc-stage", retries=0, cache_policy=None)
def dvc_stage(stage: str, repo_dir: str, env: dict[str, str]) -> str:
    """Run one stage through DVC; DVC skips it when nothing it depends on changed. Its output
    goes to the run's log while it runs (progress bars every 10 s); returns the output's tail."""
    logger = get_run_logger()
    proc = subprocess.Popen([_dvc(), "repro", "--single-item", stage], cwd=repo_dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        tail = stream_lines(proc.stdout, lambda line: logger.info(f"{stage}: {line}"))
    finally:
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"stage {stage} failed (exit {code}):\n{tail}")
    return tail


@flow(name="mrt-pipeline", log_prints=True)
def mrt_pipeline(repo_dir: str = ".", stages: tuple[str, ...] | None = None) -> list[str]:
    """Run ``stages`` (default: every stage of dvc.yaml) in order, one Prefect task per stage
    and per RL round; their MLflow runs are nested under one parent run."""
    note_flow_run()
    params = load_params_or_exit(Path(repo_dir) / "params.yaml")
    with workspace_lock(repo_dir):
        return _run_stages(repo_dir, params, stages)


def workspace_lock(repo_dir: str):
    """One flow at a time per workspace (re-entrant: a profile's flow holds it around its copy)."""
    return exclusive_lock(Path(repo_dir) / LOCKS / "workspace.lock", f"a pipeline flow in {Path(repo_dir).resolve()}")


def _run_stages(repo_dir: str, params, stages: tuple[str, ...] | None) -> list[str]:
    group = new_pipeline_run_id()
    cwd = os.getcwd()
    os.chdir(repo_dir)  # the tracking URI in params is relative to the repository
    try:
        parent = start_parent_run(params.runtime.tracking_uri, params.runtime.experiment, group, "pipeline (prefect)")
    finally:
        os.chdir(cwd)
    env = dict(os.environ, **{PIPELINE_RUN_ENV: group, PARENT_RUN_ENV: parent})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    logs = []
    for stage in stages or pipeline_stages(repo_dir, env):
        logs.append(dvc_stage.with_options(name=f"stage:{stage}")(stage, repo_dir, env))
        print(f"stage {stage}: done")
    return logs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-dir", default=".")
    args = parser.parse_args(argv)
    entry_environment(needs_hub=True)  # telemetry off; each stage decides about the hub for itself
    run_flow(mrt_pipeline, repo_dir=args.repo_dir)


def run_flow(flow_fn, **kwargs):
    """A flow from the command line: on this process's own temporary Prefect server (stopped on
    exit; one left by a killed run is stopped first), a held workspace a one-line exit 1."""
    try:
        with ephemeral_api():
            return flow_fn(**kwargs)
    except LockedError as exc:
        print(f"{flow_fn.name}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

"""The MRT pipeline as a Prefect flow: the same DVC stages, in the same order.

Each Prefect task runs one stage through DVC (``dvc repro --single-item <stage>``), so both
paths share ``dvc.lock`` and skip what is unchanged; Prefect adds retries, observability and
deployments (``prefect.yaml``: ``mrt-pipeline/local``, ``mrt-pipeline/headline``). The default
profile runs in the repository; any other in its own workspace (``flows/workspace.py``). From
the command line it uses Prefect's ephemeral API (no server to start) unless
``PREFECT_API_URL`` names a server.

    python -m flows.pipeline                                  # or: make flow
    python -m flows.pipeline --profile tests/params_smoke.yaml  # in runs/smoke/
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from prefect import flow, get_run_logger, task

from flows.workspace import (
    DEFAULT_PROFILE,
    dvc_executable,
    prepare_workspace,
    profile_path,
    runs_in_place,
    workspace_for,
    workspace_lock,
    workspace_name,
)
from mrt_lib.common import LockedError, entry_environment
from mrt_lib.config import ConfigError, load_params
from mrt_lib.config.sections import STAGE_NAMES
from mrt_lib.prefect_server import ServerUnreachable, ephemeral_api, note_flow_run
from mrt_lib.streaming import stream_lines
from mrt_lib.tracking import PARENT_RUN_ENV, PIPELINE_RUN_ENV, new_pipeline_run_id, start_parent_run

STAGES = STAGE_NAMES
# a failed run of these is retried once: they write their outputs whole or not at all. The
# training stages are not: a half-finished one resumes from its state when the flow is re-run.
RETRY_SAFE = ("build_dataset", "synthesize_backtracks", "build_star_data", "rl_start", "evaluate", "report")
BAD_INPUT = re.compile(r"exited with 2\b")  # a stage's own exit status for bad input: a retry cannot help
STOP_GRACE_S = 10.0


def stage_order(name: str) -> tuple:
    """Sort key of a DVC stage name: its group in ``STAGES``, then (for the matrix stages
    ``rl_start@<arm>-<seed>`` and ``rl_round@<arm>-<seed>-round<i>``) the round, then the name."""
    group, _, item = name.partition("@")
    round_index = int(item.rsplit("round", 1)[1]) if group in ("rl_round", "rl_matched") else -1
    return STAGES.index(group), round_index, name


def pipeline_stages(repo_dir: str, env: dict[str, str] | None = None) -> list[str]:
    """Every stage of the repository's dvc.yaml (matrix stages expanded by DVC from params),
    in an order that respects the graph: one Prefect task each."""
    proc = subprocess.run([dvc_executable(), "stage", "list", "--name-only"], cwd=repo_dir, env=env,
                          capture_output=True, text=True, check=True)
    return sorted(proc.stdout.split(), key=stage_order)


class StageFailed(RuntimeError):
    """A stage exited non-zero; the message names it and ends with the tail of its output."""


def _retry_unless_bad_input(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return not (isinstance(exc, StageFailed) and BAD_INPUT.search(str(exc)))


@contextmanager
def stage_process(args: list[str], cwd: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A stage in a process group of its own (DVC and the Python it starts), ended with the flow:
    when the flow stops (SIGTERM, which Prefect raises as an exception, or SIGINT) the whole group
    gets SIGTERM, then SIGKILL after a grace period, so no stage outlives its flow."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
    except BaseException:
        _end_group(proc)
        raise
    finally:
        proc.stdout.close()


def _end_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


@task(name="dvc-stage", retries=0, cache_policy=None)
def dvc_stage(stage: str, repo_dir: str, env: dict[str, str]) -> str:
    """Run one stage through DVC; DVC skips it when nothing it depends on changed. Its output
    goes to the run's log while it runs (progress bars every 10 s); returns the output's tail.
    A failure raises ``StageFailed`` with the stage's name and the tail of its output."""
    logger = get_run_logger()
    with stage_process([dvc_executable(), "repro", "--single-item", stage], repo_dir, env) as proc:
        tail = stream_lines(proc.stdout, lambda line: logger.info(f"{stage}: {line}"))
        code = proc.wait()
    if code != 0:
        raise StageFailed(f"stage {stage} failed (exit {code}) in {repo_dir}; the end of its output:\n{tail}")
    return tail


def stage_task(stage: str):
    """The Prefect task of one stage: named after it, retried once where that is safe."""
    safe = stage.partition("@")[0] in RETRY_SAFE
    return dvc_stage.with_options(name=f"stage:{stage}", retries=1 if safe else 0, retry_delay_seconds=5,
                                  retry_condition_fn=_retry_unless_bad_input if safe else None)


def workspace_run_name(prefix: str = "") -> str:
    """A flow run's name: ``prefix``, the workspace of its ``profile`` and the start time."""
    from prefect.runtime import flow_run

    profile = flow_run.parameters.get("profile", DEFAULT_PROFILE)
    name = "default" if Path(profile).name == DEFAULT_PROFILE else workspace_name(profile)
    return f"{prefix}{name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def pipeline_run_name() -> str:
    """A pipeline run's name: the workspace and the start time (``smoke-20261202-0412``)."""
    return workspace_run_name()


@flow(name="mrt-pipeline", log_prints=True, flow_run_name=pipeline_run_name)
def mrt_pipeline(profile: str = DEFAULT_PROFILE, repo_dir: str = ".", workdir: str | None = None,
                 stages: list[str] | None = None, share_cache: bool = True) -> dict[str, str]:
    """Run ``stages`` (default: every stage of dvc.yaml) of the pipeline under ``profile`` (a
    complete params file, relative to ``repo_dir``): the repository's ``params.yaml`` in the
    repository, any other in ``workdir`` (default ``runs/<profile name>``). One Prefect task per
    stage and RL round; their MLflow runs are nested under one parent run. Returns the workspace,
    the pipeline run id (MLflow tag ``mrt.pipeline_run``) and the parent run's id."""
    note_flow_run()
    entry_environment(needs_hub=True)  # as in main(): a deployment's run starts here
    ws = workspace_for(profile, repo_dir, workdir)
    check_profile(profile, repo_dir)  # a bad profile stops here, before any workspace is made
    with workspace_lock(ws):  # before the copy: a second run must not replace the code of a running one
        if not runs_in_place(profile, repo_dir, workdir):
            prepare_workspace(profile, str(ws), repo_dir, share_cache)
        group, parent = _run_stages(str(ws), load_params(ws / "params.yaml"), stages)
    print(f"pipeline {profile}: done; outputs and reports in {ws}")
    return {"workspace": str(ws), "pipeline_run": group, "mlflow_parent_run": parent}


def check_profile(profile: str, repo_dir: str):
    """The profile's params; raises ``ConfigError`` naming the profile and every problem in it."""
    path = profile_path(profile, repo_dir)
    try:
        return load_params(path)
    except ConfigError as exc:
        raise ConfigError(f"profile {profile}: {exc}") from None


def _run_stages(repo_dir: str, params, stages: list[str] | None) -> tuple[str, str]:
    group = new_pipeline_run_id()
    cwd = os.getcwd()
    os.chdir(repo_dir)  # the tracking URI in params is relative to the repository
    try:
        parent = start_parent_run(params.runtime.tracking_uri, params.runtime.experiment, group, "pipeline (prefect)")
    finally:
        os.chdir(cwd)
    env = dict(os.environ, **{PIPELINE_RUN_ENV: group, PARENT_RUN_ENV: parent})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for stage in stages or pipeline_stages(repo_dir, env):
        stage_task(stage)(stage, repo_dir, env)
        print(f"stage {stage}: done")
    return group, parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="a complete params file (default params.yaml)")
    parser.add_argument("--repo-dir", default=".")
    parser.add_argument("--workdir", default=None, help="workspace of a profile (default runs/<profile name>)")
    args = parser.parse_args(argv)
    entry_environment(needs_hub=True)  # telemetry off; each stage decides about the hub for itself
    run_flow(mrt_pipeline, workspace_for(args.profile, args.repo_dir, args.workdir),
             lambda: check_profile(args.profile, args.repo_dir), profile=args.profile, repo_dir=args.repo_dir,
             workdir=args.workdir)


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` instead of ending the process at once. Prefect's engine
    turns SIGTERM into an exception inside a flow, ends the flow run, then re-sends the signal to
    the handler it found: with the default one the process died there, and the temporary server
    was left running; with this one the ``finally`` blocks run and stop it."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_flow(flow_fn, workspace: Path, precheck=None, **kwargs):
    """A flow from the command line. ``precheck`` (e.g. the profile's validation) runs first, so
    bad input writes nothing. Without a configured server: on this process's own temporary
    Prefect server, its database in the workspace's ``.prefect/`` (stopped on exit, SIGTERM
    included; one left by a killed run is stopped first). A held workspace, a bad profile or an
    unreachable server: a one-line message and exit 1 (2 for the profile)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    try:
        if precheck is not None:
            precheck()
        home = {}
        if not PREFECT_API_URL.value():
            home = {PREFECT_HOME: str(Path(workspace).resolve() / ".prefect")}
            Path(home[PREFECT_HOME]).mkdir(parents=True, exist_ok=True)  # the server's database goes there
        with temporary_settings(updates=home), sigterm_exits(), ephemeral_api():
            return flow_fn(**kwargs)
    except ConfigError as exc:
        print(f"{flow_fn.name}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (LockedError, ServerUnreachable) as exc:
        print(f"{flow_fn.name}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

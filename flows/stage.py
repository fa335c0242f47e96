"""One pipeline stage as a job of its own: the flow of the stage deployments (``mrt-stage/local``
on a process pool, ``mrt-stage/gpu`` on the cluster's GPU pool), started by the fan-out
orchestrator (``flows/fanout.py``) once per stage.

The job works in its own checkout of the orchestrator's commit (``mrt_lib/checkout.py``) and
exchanges data through the DVC remote only: ``dvc repro --pull <stage>`` restores every upstream
stage from the remote's run cache ("cached - skipping run") and runs this one, then
``dvc push --run-cache`` sends its outputs and run-cache entry back, from where the orchestrator
restores them. It never writes the orchestrator's ``dvc.lock`` or outputs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task

from flows.pipeline import StageFailed, stage_process
from flows.workspace import DEFAULT_PROFILE, dvc_executable, profile_path
from mrt_lib.checkout import make_checkout, set_dvc_remote
from mrt_lib.common import entry_environment, write_text_atomic
from mrt_lib.config import ConfigError, read_params_file
from mrt_lib.streaming import stream_lines
from mrt_lib.tracking import PARENT_RUN_ENV, PIPELINE_RUN_ENV, TRACKING_URI_ENV

RAN = re.compile(r"^Running stage '(?P<stage>[^']+)'", re.MULTILINE)
CHECKOUTS = Path("runs") / ".checkouts"  # under the source repository, beside the profile workspaces


def stage_run_name() -> str:
    """A stage job's flow run name: the stage and the commit (``rl_round@grpo-0-round1-3f9f41e``)."""
    from prefect.runtime import flow_run

    return f"{flow_run.parameters['stage']}-{flow_run.parameters['commit'][:7]}"


def checkout_dir(root: str | Path, commit: str, stage: str, attempt: str) -> Path:
    """One folder per commit, stage and attempt (the flow run: a rescheduled run, an evicted pod,
    finds its own state again; another attempt or another profile's job never shares it). ``@``
    is a legal name, but not in every tool's paths."""
    return Path(root) / commit[:12] / f"{stage.replace('@', '__')}-{attempt[:8]}"


@task(name="checkout", cache_policy=None)
def prepare_checkout(source: str, commit: str, dest: str, profile: str, remote: str) -> str:
    """The commit checked out in ``dest``, the profile as its ``params.yaml``, ``remote`` as its
    DVC remote."""
    checkout = make_checkout(source, commit, dest)
    if Path(profile) != Path(DEFAULT_PROFILE):
        resolved = read_params_file(profile_path(profile, checkout))  # the profile at the commit, inherit resolved
        write_text_atomic(checkout / "params.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    set_dvc_remote(checkout, remote, dvc_executable())
    return str(checkout)


def _dvc(args: list[str], checkout: str, env: dict[str, str], label: str) -> str:
    """``dvc <args>`` in the checkout, its output streamed to the run's log; its full output, or
    ``StageFailed`` with the tail."""
    logger = get_run_logger()
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        logger.info(f"{label}: {line}")

    with stage_process([dvc_executable(), *args], checkout, env) as proc:
        tail = stream_lines(proc.stdout, emit)
        code = proc.wait()
    if code != 0:
        raise StageFailed(f"stage {label} failed (exit {code}) in {checkout}; the end of its output:\n{tail}")
    return "\n".join(lines)


@task(name="reproduce", cache_policy=None)
def reproduce(stage: str, checkout: str, env: dict[str, str]) -> list[str]:
    """``dvc repro --pull <stage>``; returns the stages that ran (this one, unless DVC found it
    in the remote's run cache). An upstream stage that ran here was missing from the remote."""
    ran = RAN.findall(_dvc(["repro", "--pull", stage], checkout, env, stage))
    upstream = [s for s in ran if s != stage]
    if upstream:
        get_run_logger().warning(f"stage {stage}: upstream stages {upstream} were not in the remote and ran here")
    return ran


@task(name="push", cache_policy=None)
def push(stage: str, checkout: str, env: dict[str, str]) -> None:
    """The stage's outputs and run-cache entry to the remote."""
    _dvc(["push", "--run-cache"], checkout, env, f"{stage} (push)")


@flow(name="mrt-stage", log_prints=True, flow_run_name=stage_run_name)
def mrt_stage(stage: str, commit: str, source: str = ".", profile: str = DEFAULT_PROFILE, remote: str | None = None,
              checkout_root: str | None = None, tracking_uri: str | None = None, pipeline_run: str | None = None,
              parent_run: str | None = None, keep_checkout: bool = False) -> dict:
    """Run ``stage`` of the pipeline at ``commit`` of ``source`` (a repository path or URL; a
    relative path is relative to the worker's working directory) under ``profile``, in a
    checkout of its own below ``checkout_root`` (default ``<source>/runs/.checkouts``, kept after
    a failure for a look), its data
    through the DVC remote ``remote``; its MLflow run goes to ``tracking_uri`` under the parent
    run ``parent_run``. Returns the stage, the stages that ran and the checkout (removed once
    pushed unless ``keep_checkout``)."""
    entry_environment(needs_hub=True)
    if not remote:
        raise ConfigError("a stage job needs the DVC remote its data goes through (parameter remote)")
    from prefect.runtime import flow_run

    local = Path(source).is_dir()  # else a git URL: the checkouts go below the working directory
    root = Path(checkout_root) if checkout_root else (Path(source) if local else Path(".")) / CHECKOUTS
    dest = checkout_dir(root, commit, stage, str(flow_run.id or "local"))
    checkout = prepare_checkout(source, commit, str(dest), profile, remote)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run_env = {TRACKING_URI_ENV: tracking_uri, PIPELINE_RUN_ENV: pipeline_run, PARENT_RUN_ENV: parent_run}
    env.update({k: v for k, v in run_env.items() if v})
    ran = reproduce(stage, checkout, env)
    push(stage, checkout, env)
    if not keep_checkout:
        shutil.rmtree(checkout, ignore_errors=True)
    print(f"stage {stage}: done at {commit[:12]} (ran: {', '.join(ran) or 'nothing, restored from the remote'})")
    return {"stage": stage, "ran": ran, "checkout": checkout}

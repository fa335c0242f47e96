"""The pipeline fanned out: every stage a job of its own on a stage work pool, independent
stages at once (the arms x seeds of a round), data through a DVC remote.

The orchestrator (this flow: CPU, cheap, long-lived) reads DVC's stage graph, finds what is out
of date (``dvc status``, and everything downstream of it), and runs each such stage as a flow
run of the stage deployment (``flows/stage.py``; ``mrt-stage/local`` on a process pool here,
``mrt-stage/gpu`` on the cluster's GPU pool) as soon as its upstream stages are done, at most
``concurrency`` at once. Each stage's job variables come from ``resources`` in params. A
finished stage's outputs are restored here from the remote (``dvc repro --pull``: "cached -
skipping run") once the fan-out ends, so only the orchestrator writes this workspace's
``dvc.lock``, in the order a sequential ``dvc repro`` writes it.

Idempotent: each stage run carries an idempotency key made of the stage, the commit, the
params and the remote; an orchestrator run again after a kill finds the runs it started (running
or done) and waits for them instead of starting them twice. A failed run is started again under
the next key (``<key>#2``).

    make server; make deploy; make stage-worker; make worker      # once
    python -m flows.fanout --profile tests/params_smoke.yaml --remote /path/to/remote   # or: make fanout
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
import threading
from pathlib import Path

from prefect import flow, get_run_logger

from flows.pipeline import StageFailed, check_profile, run_flow, stage_order, stage_process, workspace_run_name
from flows.workspace import (
    DEFAULT_PROFILE,
    dvc_executable,
    prepare_workspace,
    profile_path,
    runs_in_place,
    workspace_for,
    workspace_lock,
)
from mrt_lib.checkout import default_dvc_remote, refuse_uncommitted, set_dvc_remote
from mrt_lib.common import entry_environment
from mrt_lib.config import ConfigError, read_params_file
from mrt_lib.fanout import (
    attempt_keys,
    changed_stages,
    choose_attempt,
    fan_out,
    idempotency_key,
    job_variables,
    stage_graph,
    stages_to_run,
)
from mrt_lib.prefect_server import note_flow_run
from mrt_lib.retraining import params_hash
from mrt_lib.streaming import stream_lines
from mrt_lib.tracking import TRACKING_URI_ENV, new_pipeline_run_id, start_parent_run

STAGE_DEPLOYMENT = "mrt-stage/local"
POLL_S = 3.0
MAX_ATTEMPTS = 20  # keys <key>, <key>#2, ...: a stage failed this often needs a person, not a retry


class StagePool:
    """The stage deployment as the orchestrator sees it: its id, the job variables its pool's
    template accepts, and stage runs started (or found) by idempotency key."""

    def __init__(self, client, deployment: str):
        from prefect.exceptions import ObjectNotFound

        try:
            self.deployment = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigError(f"no deployment {deployment!r} on the Prefect server: register the stage deployments "
                              "first (make deploy)") from None
        self.name, self.client = deployment, client
        pool = client.read_work_pool(self.deployment.work_pool_name)
        self.pool_name, self.pool_type = pool.name, pool.type
        self.accepted = set(pool.base_job_template.get("variables", {}).get("properties", {}))
        self.lock = threading.Lock()  # one submission at a time: Prefect numbers the parent task runs

    def existing(self, key: str):
        """The key to run the stage under and the run already holding it, if any
        (``choose_attempt``: running or done runs are waited for, failures retried)."""
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterIdempotencyKey,
        )

        runs = self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(
                any_=attempt_keys(key, MAX_ATTEMPTS))),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment.id])))
        by_key = {r.idempotency_key: r for r in runs}
        try:
            chosen, held = choose_attempt(key, {k: r.state.type.name if r.state else None for k, r in by_key.items()},
                                          MAX_ATTEMPTS)
        except RuntimeError as exc:
            raise StageFailed(str(exc)) from None
        return chosen, by_key[chosen] if held else None


class Interrupted(Exception):
    """The orchestrator is stopping; the stage's job runs on (a rerun finds it by its key)."""


def run_stage_job(pool: StagePool, stage: str, key: str, parameters: dict, variables: dict,
                  stop: threading.Event) -> None:
    """Start (or find) the stage's flow run and wait until it ends; ``StageFailed`` unless it
    completed."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    with pool.lock:
        key, run = pool.existing(key)
        if run is None:
            run = run_deployment(pool.name, parameters=parameters, job_variables=variables, idempotency_key=key,
                                 timeout=0, as_subflow=True, flow_run_name=f"{stage}-{parameters['commit'][:7]}")
            logger.info(f"stage {stage}: started flow run {run.name} ({run.id}) on {pool.pool_name}")
        else:
            done = run.state is not None and run.state.is_completed()
            logger.info(f"stage {stage}: flow run {run.name} ({run.state.type.name if run.state else 'new'}) was "
                        f"started by an earlier orchestrator run: {'its result is used' if done else 'waiting for it'}"
                        " instead of starting another")
    while run.state is None or not run.state.is_final():
        if stop.wait(POLL_S):
            raise Interrupted(f"stage {stage}: no longer waited for; its flow run {run.name} goes on")
        run = pool.client.read_flow_run(run.id)
    if not run.state.is_completed():
        raise StageFailed(f"stage {stage}: flow run {run.name} ({run.id}) ended {run.state.type.name}: "
                          f"{(run.state.message or '').strip()[:500]}")


def restore(stages: list[str], workspace: str, env: dict[str, str]) -> None:
    """The finished stages' outputs (``[]``: every stage's) from the remote into the workspace,
    ``dvc.lock`` written. One ``dvc repro --pull`` over all of them, so DVC writes the lock in its own order (that of a
    sequential ``dvc repro``, not the order the jobs ended in). No stage may run here: that would
    mean its job did not push it."""
    logger = get_run_logger()
    lines: list[str] = []

    def emit(line: str) -> None:
        lines.append(line)
        logger.info(f"restore: {line}")

    with stage_process([dvc_executable(), "repro", "--pull", *stages], workspace, env) as proc:
        tail = stream_lines(proc.stdout, emit)
        code = proc.wait()
    ran = [line for line in lines if line.startswith("Running stage")]
    if code != 0 or ran:
        raise StageFailed(f"the stages' outputs could not be restored from the remote (exit {code}"
                          f"{'; DVC ran ' + ', '.join(ran) + ' in the orchestrator instead' if ran else ''}; if the "
                          f"remote lost them, fan out to a fresh remote):\n{tail}")


def fanout_run_name() -> str:
    """``fanout-smoke-20261202-0412``."""
    return workspace_run_name("fanout-")


@flow(name="mrt-fanout", log_prints=True, flow_run_name=fanout_run_name)
def mrt_fanout(profile: str = DEFAULT_PROFILE, repo_dir: str = ".", workdir: str | None = None,
               remote: str | None = None, concurrency: int = 2, deployment: str = STAGE_DEPLOYMENT,
               image: str | None = None, source: str | None = None, checkout_root: str | None = None,
               tracking_uri: str | None = None) -> dict:
    """Run every out-of-date stage of the pipeline under ``profile`` as its own job of
    ``deployment``, at most ``concurrency`` at once, from the commit of ``repo_dir`` (refused with
    uncommitted changes to code or params), data through the DVC remote ``remote`` (default: the
    repository's default remote), outputs restored into the workspace (as ``mrt_pipeline``: the
    repository for ``params.yaml``, else ``runs/<profile>``). ``source``: where stage jobs clone
    the commit from (default ``repo_dir``; ``.`` on a cluster: the image's own repository, or a
    git URL), ``image``: the stage jobs' image
    (cluster pools), ``tracking_uri``: the MLflow store every job logs to (default: this
    workspace's SQLite store, absolute). Returns the workspace, commit, the stages run and the
    tracking URI."""
    note_flow_run()
    entry_environment(needs_hub=True)
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    params = check_profile(profile, repo_dir)
    rel_profile = repository_file(profile, repo_dir)
    commit = refuse_uncommitted(repo_dir, rel_profile)
    remote = absolute_location(remote or default_dvc_remote(repo_dir, dvc_executable()) or "")
    if not remote:
        raise ConfigError("no DVC remote: pass --remote URL (a directory works on one machine) or set the "
                          "repository's default remote (dvc remote add -d NAME URL)")
    ws = workspace_for(profile, repo_dir, workdir)
    from prefect import get_client

    with get_client(sync_client=True) as client, workspace_lock(ws):
        pool = StagePool(client, deployment)
        tracking = _absolute_store(tracking_uri or os.environ.get(TRACKING_URI_ENV) or params.runtime.tracking_uri, ws)
        if pool.pool_type != "process":
            check_cluster_inputs(pool, commit, image, remote, tracking)
        if not runs_in_place(profile, repo_dir, workdir):
            prepare_workspace(profile, str(ws), repo_dir, share_cache=False)  # its data comes from the remote
        set_dvc_remote(ws, remote, dvc_executable())
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        graph = stages_to_run(stage_graph(ws, dvc_executable()), changed_stages(ws, dvc_executable()))
        if not graph:
            print(f"fan-out {profile}: every stage is up to date in {ws}")
            return {"workspace": str(ws), "commit": commit, "stages": [], "tracking_uri": tracking}
        _push_done(ws, env)
        group, parent = open_tracking(tracking, params.runtime.experiment, ws)
        common = {"commit": commit, "source": source or str(Path(repo_dir).resolve()), "profile": rel_profile,
                  "remote": remote, "checkout_root": absolute_location(checkout_root) or None,
                  "tracking_uri": tracking, "pipeline_run": group, "parent_run": parent}
        get_run_logger().info(f"fan-out of {len(graph)} stages at {commit[:12]} on {pool.pool_name} "
                              f"({pool.pool_type}), {concurrency} at once, data through {remote}")
        run = stage_runner(pool, params, read_params_file(ws / "params.yaml"), common, image, deployment)
        result = fan_out(graph, run, concurrency, order=stage_order, stop=run.stop)
        restore_after(result, str(ws), env, profile)
    print(f"fan-out {profile}: {result.summary()} (at most {result.max_running} at once); outputs in {ws}")
    return {"workspace": str(ws), "commit": commit, "stages": result.completed, "tracking_uri": tracking}


def repository_file(profile: str, repo_dir: str) -> str:
    """The profile's path inside the repository (stage jobs read it at the commit)."""
    path, repo = profile_path(profile, repo_dir), Path(repo_dir).resolve()
    if not path.is_relative_to(repo):
        raise ConfigError(f"profile {profile}: not a file of the repository {repo}; stage jobs read it at the "
                          "commit, so commit it there")
    return str(path.relative_to(repo))


def absolute_location(location: str | None) -> str:
    """A URL as it is, a local path made absolute: DVC stores a relative remote relative to the
    folder it is set in, and the orchestrator and every checkout are different folders."""
    if not location or "://" in location:
        return location or ""
    return str(Path(location).expanduser().resolve())


def stage_runner(pool: StagePool, params, raw: dict, common: dict, image: str | None, deployment: str):
    """``run(stage)`` for ``fan_out``: the stage's job variables and key, then its job, in a copy
    of this thread's context (the flow run's: Prefect links each job as a subflow through it).
    ``run.stop`` tells the waiting threads to return."""
    logger = get_run_logger()
    base = contextvars.copy_context()
    stop = threading.Event()

    def run(stage: str) -> None:
        variables, dropped = job_variables(params.resources.for_stage(stage), image, pool.accepted)
        if dropped:
            logger.info(f"stage {stage}: {pool.pool_type} pool {pool.pool_name} takes no {', '.join(dropped)}")
        key = idempotency_key(stage, commit=common["commit"], params=params_hash(raw), remote=common["remote"],
                              deployment=deployment)
        base.copy().run(run_stage_job, pool, stage, key, {**common, "stage": stage}, variables, stop)

    run.stop = stop
    return run


def restore_after(result, workspace: str, env: dict[str, str], profile: str) -> None:
    """Restore what the fan-out made; ``StageFailed`` naming the failed stages (and a restore
    that failed too) unless every stage completed."""
    if result.ok:  # every stage: DVC's own walk over the whole pipeline, as a sequential repro
        restore([], workspace, env)
        return
    problem = ""
    if result.completed:  # the stages that did complete are good: restore them anyway
        try:
            restore(sorted(result.completed, key=stage_order), workspace, env)
        except StageFailed as exc:
            problem = f"; restoring the completed stages failed too: {exc}"
    raise StageFailed(f"fan-out {profile}: {result.summary()}{problem}")


def open_tracking(tracking: str, experiment: str, ws: Path) -> tuple[str, str]:
    """The pipeline run's id and its MLflow parent run, made before any job starts: the store's
    schema and the experiment then exist when the jobs open it (8 processes creating a SQLite
    store at once all crashed, measured), and a new experiment's artifacts go to the workspace."""
    group = new_pipeline_run_id()
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        return group, start_parent_run(tracking, experiment, group, "pipeline (fan-out)")
    finally:
        os.chdir(cwd)


def check_cluster_inputs(pool: StagePool, commit: str, image: str | None, remote: str, tracking: str) -> None:
    """Stage jobs in pods see neither this machine's files nor its SQLite store: an image built
    from the commit, a remote and a tracking server they can reach are required."""
    where = f"the stage deployment runs on the {pool.pool_type} pool {pool.pool_name}"
    if not image:
        raise ConfigError(f"{where}: give the stage jobs' image (--image / parameter image, e.g. "
                          f"REGISTRY/mrt-pipeline:{commit[:7]}, built from this commit: docs/CLUSTER.md)")
    if "://" not in remote:
        raise ConfigError(f"{where}: the DVC remote {remote!r} is a local path; give one the pods reach "
                          "(e.g. s3://BUCKET/mrt)")
    if "://" not in tracking or tracking.startswith(("sqlite:", "file:")):
        raise ConfigError(f"{where}: the tracking store {tracking!r} is this machine's; give an MLflow server "
                          "(--tracking-uri / MRT_TRACKING_URI, e.g. http://mlflow.mrt.svc.cluster.local:5000)")


def _absolute_store(tracking_uri: str, ws: Path) -> str:
    """The params' workspace store as an absolute URI: a relative SQLite path would give every
    stage checkout a store of its own."""
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        return f"sqlite:///{(ws / tracking_uri.removeprefix('sqlite:///')).resolve()}"
    return tracking_uri


def _push_done(ws: Path, env: dict[str, str]) -> None:
    """Outputs of up-to-date stages the jobs will read (made here by ``dvc repro``, say) go to
    the remote first, so no job has to make them again."""
    with stage_process([dvc_executable(), "push", "--run-cache"], str(ws), env) as proc:
        tail = stream_lines(proc.stdout, lambda line: None)
        code = proc.wait()
    if code != 0:
        raise StageFailed(f"dvc push of the up-to-date stages failed in {ws} (exit {code}):\n{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="a complete params file (default params.yaml)")
    parser.add_argument("--repo-dir", default=".")
    parser.add_argument("--workdir", default=None, help="workspace of a profile (default runs/<profile name>)")
    parser.add_argument("--remote", default=None, help="DVC remote URL (default: the repository's default remote)")
    parser.add_argument("--concurrency", type=int, default=2, help="stage jobs at once (default 2)")
    parser.add_argument("--deployment", default=STAGE_DEPLOYMENT, help=f"stage deployment (default {STAGE_DEPLOYMENT})")
    parser.add_argument("--image", default=None, help="stage jobs' container image (cluster pools)")
    parser.add_argument("--source", default=None, help="where stage jobs clone the commit from (default the "
                        "repository; '.' on a cluster: the image's own copy)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store of every job (default this workspace's)")
    args = parser.parse_args(argv)
    entry_environment(needs_hub=True)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("fan-out: set PREFECT_API_URL to a Prefect server with a worker on the stage pool (make server; "
              "make deploy; make stage-worker): stage jobs are flow runs of its deployments", file=sys.stderr)
        raise SystemExit(1)
    run_flow(mrt_fanout, workspace_for(args.profile, args.repo_dir, args.workdir),
             lambda: check_profile(args.profile, args.repo_dir), profile=args.profile, repo_dir=args.repo_dir,
             workdir=args.workdir, remote=args.remote, concurrency=args.concurrency, deployment=args.deployment,
             image=args.image, source=args.source, tracking_uri=args.tracking_uri)


if __name__ == "__main__":
    main()

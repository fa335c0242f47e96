"""MLflow tracking: one run per stage, grouped per pipeline execution.

Runs of one execution share the tag ``mrt.pipeline_run`` (``MRT_PIPELINE_RUN`` in the
environment; ``make run`` and the Prefect flow set it) and, when ``MRT_PARENT_RUN_ID`` is set,
are nested under that parent run. A stage run alone gets a fresh group id.

A SQLite store that does not exist yet is created under a temporary name and moved into place
only once MLflow has migrated it, so a stage killed meanwhile leaves no half-created store; a
store that cannot be opened (one half-created before this) raises :class:`TrackingStoreError`
with a one-line message. Each stage
run records the host and process that opened it, so that the next stage on that host can mark
the runs of killed stages KILLED instead of leaving them RUNNING forever.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mrt_lib.common import LOCKS, LockedError, exclusive_lock, exit_on
from mrt_lib.distributed import launched_world

PIPELINE_RUN_ENV = "MRT_PIPELINE_RUN"
PARENT_RUN_ENV = "MRT_PARENT_RUN_ID"
PIPELINE_TAG = "mrt.pipeline_run"
HOST_TAG = "mrt.host"
PID_TAG = "mrt.pid"
PID_START_TAG = "mrt.pid_start"
PID_NS_TAG = "mrt.pid_ns"


TRACKING_URI_ENV = "MRT_TRACKING_URI"


class TrackingStoreError(RuntimeError):
    """The SQLite tracking store cannot be opened; the message (one line) says what to do."""


def new_pipeline_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _configure(tracking_uri: str, experiment: str):
    import mlflow

    # an explicit MRT_TRACKING_URI (a shared server, a store elsewhere) wins over the params'
    # workspace store; not MLFLOW_TRACKING_URI, which mlflow.set_tracking_uri itself writes into
    # the environment (so every child process would inherit the last store used)
    tracking_uri = os.environ.get(TRACKING_URI_ENV) or tracking_uri
    db_path = _sqlite_path(tracking_uri)
    if db_path is not None:
        _ensure_store(tracking_uri, db_path)
    mlflow.set_tracking_uri(tracking_uri)
    with _store_errors(db_path):  # the first call opens (and checks) the store
        missing = mlflow.get_experiment_by_name(experiment) is None
    if missing:
        artifacts = Path("mlruns").resolve().as_uri() if tracking_uri.startswith("sqlite") else None
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return mlflow


# --- the SQLite store: created atomically, a broken one named ---------------------------------

def _sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:`` URI (relative paths are relative to the cwd, as for SQLite);
    None for servers and in-memory stores, which are never created here."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    return Path(database) if database and database != ":memory:" else None


def _ensure_store(tracking_uri: str, db_path: Path) -> None:
    """Create a missing store atomically. MLflow creates and migrates a store in place, in many
    separately committed steps, so a kill meanwhile left a store that every later open failed on
    ('table _alembic_tmp_experiments already exists'); here MLflow works on a temporary file that
    is moved into place only once complete."""
    _remove_stale_temporaries(db_path)
    if db_path.exists():
        return
    from sqlalchemy.engine import make_url

    tmp = db_path.with_name(f"{db_path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _migrate(make_url(tracking_uri).set(database=str(tmp)).render_as_string(hide_password=False))
        _publish(tmp, db_path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _migrate(tmp_uri: str) -> None:
    """Let MLflow create its schema (and default experiment) in ``tmp_uri``; a store object of
    its own, not MLflow's per-URI cached one, so it really runs, and its connections are closed
    before the file is moved."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(tmp_uri, Path("mlruns").resolve().as_uri())
    store.engine.dispose()


def _publish(tmp: Path, db_path: Path) -> None:
    """Move the finished store to its name unless another process got there first (its store,
    perhaps already holding runs, is kept; ours is dropped). A hard link fails rather than
    replace an existing file; where links are not supported, an exists check and os.replace."""
    try:
        os.link(tmp, db_path)
    except FileExistsError:
        return
    except OSError:
        if not db_path.exists():
            os.replace(tmp, db_path)


def _remove_stale_temporaries(db_path: Path) -> None:
    """Remove the temporary stores (and journals) of creations on this host whose process is
    gone: a kill during creation leaves one behind."""
    prefix = f"{db_path.name}.tmp-{socket.gethostname()}-"
    for tmp in db_path.parent.glob(f"{glob.escape(prefix)}*"):
        match = re.fullmatch(r"(\d+)-[0-9a-f]+(-journal)?", tmp.name[len(prefix):])
        if match and _process_gone(int(match.group(1)), None):
            tmp.unlink(missing_ok=True)


@contextmanager
def _store_errors(db_path: Path | None) -> Iterator[None]:
    """Turn the failure to open an existing SQLite store into a one-line TrackingStoreError
    saying what to delete, instead of a 129-line traceback in every later stage. A locked or
    unreachable store is not broken: those errors pass unchanged, as do all of a server's."""
    if db_path is None:
        yield
        return
    import sqlalchemy.exc
    from alembic.util import CommandError
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, CommandError, MlflowException) as exc:
        cause = _first_line(exc)
        if "database is locked" in cause or "unable to open database file" in cause:
            raise
        raise TrackingStoreError(_broken_store_message(db_path, cause)) from exc


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without SQLAlchemy's '(sqlite3.OperationalError) ' prefix."""
    lines = str(exc).strip().splitlines()
    return re.sub(r"^\([\w.]+\) ", "", lines[0])[:200] if lines else type(exc).__name__


def _broken_store_message(db_path: Path, cause: str) -> str:
    """One line: which file, why it is unusable, what to do."""
    old = re.search(r"found version \w+, but expected \w+", cause)
    if "out-of-date database schema" in cause:
        return (f"MLflow tracking store {db_path} has an older schema ({old.group(0) if old else cause}): back it up "
                f"and run `mlflow db upgrade sqlite:///{db_path}`; or, if a stage killed while MLflow created it left "
                "it half-created and it holds no runs worth keeping, delete it (or move it away)")
    return (f"MLflow tracking store {db_path} is unusable ({cause}): it was left half-created by a stage killed "
            "while MLflow created it; delete it (or move it away) if it holds no runs worth keeping, and rerun")


# --- runs of killed stages ---------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc/<pid>/stat fields
    3 and 22; None where there is no /proc or no such process. The start time tells a reused pid
    from the process that recorded it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name (field 2) may hold spaces and ')'
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    """This process's pid namespace (containers sharing a host name may each have their own, where
    a pid names another process); None without /proc."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_tags() -> dict[str, str]:
    """The host and process of this stage run, for :func:`_end_stale_runs` to come."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    stat, namespace = _proc_stat(os.getpid()), _pid_namespace()
    if stat:
        tags[PID_START_TAG] = stat[1]
    if namespace:
        tags[PID_NS_TAG] = namespace
    return tags


def _ours_to_judge(tags: dict[str, str]) -> bool:
    """Whether the run's recorded process can be looked up from here: same host, same pid
    namespace where both are known, and a pid recorded at all."""
    namespace = tags.get(PID_NS_TAG)
    return (tags.get(HOST_TAG) == socket.gethostname() and (tags.get(PID_TAG) or "").isdigit()
            and (namespace is None or namespace == _pid_namespace()))


def _process_gone(pid: int, start: str | None) -> bool:
    """True only when certain: no such process, a zombie, or a process of that pid started at
    another time than the one recorded. Unknown (no permission to ask) counts as alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return False
    return stat[0] == "Z" or (start is not None and stat[1] != start)


def _end_stale_runs(mlflow: Any, experiment: str) -> None:
    """Mark KILLED the experiment's RUNNING runs whose stage was killed: runs recorded by this
    host whose process is gone. Runs of other hosts, of live processes and without these tags
    are never touched. A store refusing the search or the update does not stop the stage."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'RUNNING'",
                                  output_format="list")
        for run in runs:
            tags = run.data.tags
            if _ours_to_judge(tags) and _process_gone(int(tags[PID_TAG]), tags.get(PID_START_TAG)):
                MlflowClient().set_terminated(run.info.run_id, "KILLED")
                print(f"tracking: run {run.info.run_id} ({tags.get('mrt.stage', '?')}) marked KILLED: its process "
                      f"{tags[PID_TAG]} on {tags[HOST_TAG]} is gone", file=sys.stderr)
    except MlflowException as exc:
        print(f"tracking: runs of killed stages left RUNNING ({_first_line(exc)})", file=sys.stderr)


class _Silent:
    """What ``stage_run`` yields on processes other than 0: every logging call does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


@contextmanager
def stage_run(stage: str, tracking_uri: str, experiment: str, params: dict[str, Any], run_name: str | None = None,
              tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Open the MLflow run of one stage; yields the ``mlflow`` module for logging. One run of a
    stage (of an RL round: of that arm, seed and round) at a time per workspace: a second one
    exits 1 at once naming the first, as does a store that cannot be opened."""
    if launched_world()[0] != 0:  # a data-parallel stage: process 0 alone tracks (and holds the lock)
        yield _Silent()
        return
    name = run_name or stage
    lock = LOCKS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.lock"
    with exit_on((LockedError, TrackingStoreError), stage, 1), exclusive_lock(lock, f"{name} in this workspace"):
        mlflow = _configure(tracking_uri, experiment)
        _end_stale_runs(mlflow, experiment)
        group = os.environ.get(PIPELINE_RUN_ENV) or new_pipeline_run_id()
        parent = os.environ.get(PARENT_RUN_ENV)
        tags = {PIPELINE_TAG: group, "mrt.stage": stage, **_process_tags(), **(tags or {})}
        if parent:
            tags["mlflow.parentRunId"] = parent
        with mlflow.start_run(run_name=name, tags=tags):
            mlflow.log_params(flatten(params))
            yield mlflow


def start_parent_run(tracking_uri: str, experiment: str, group: str, name: str) -> str:
    """Create (and end) the parent run of a pipeline execution; returns its id."""
    mlflow = _configure(tracking_uri, experiment)
    run = mlflow.start_run(run_name=name, tags={PIPELINE_TAG: group, "mrt.stage": "pipeline"})
    mlflow.end_run()
    return run.info.run_id


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params are flat)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}

"""MLflow runs written to and read back from a temporary SQLite store."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mrt_lib import tracking
from mrt_lib.tracking import (
    HOST_TAG,
    PARENT_RUN_ENV,
    PID_NS_TAG,
    PID_START_TAG,
    PID_TAG,
    PIPELINE_RUN_ENV,
    PIPELINE_TAG,
    TrackingStoreError,
    _configure,
    flatten,
    stage_run,
    start_parent_run,
)

REPO = Path(__file__).resolve().parents[2]


def test_stage_runs_grouped_under_a_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = start_parent_run(uri, "exp", "group1", "pipeline")
    monkeypatch.setenv(PIPELINE_RUN_ENV, "group1")
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    for stage in ("build_dataset", "train_base"):
        with stage_run(stage, uri, "exp", {"section": {"lr": 0.5}}) as mlflow:
            mlflow.log_metric("loss", 1.25, step=3)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    runs = client.search_runs([exp.experiment_id], f"tags.`{PIPELINE_TAG}` = 'group1'")
    assert sorted(r.data.tags["mrt.stage"] for r in runs) == ["build_dataset", "pipeline", "train_base"]
    children = [r for r in runs if r.data.tags["mrt.stage"] != "pipeline"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in children)
    assert all(r.data.params["section.lr"] == "0.5" and r.data.metrics["loss"] == 1.25 for r in children)
    history = client.get_metric_history(children[0].info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(3, 1.25)]


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_an_explicit_mlflow_tracking_uri_wins_over_the_params_store(tmp_path, monkeypatch):
    # the team's shared store is given by the environment; the params' workspace store is unused
    monkeypatch.chdir(tmp_path)
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MRT_TRACKING_URI", shared)
    monkeypatch.setenv(PIPELINE_RUN_ENV, "g")
    with stage_run("report", "sqlite:///mlflow.db", "exp", {}) as mlflow:
        mlflow.log_metric("x", 1.0)
    assert (tmp_path / "shared.db").exists() and not (tmp_path / "mlflow.db").exists()
    exp = MlflowClient(shared).get_experiment_by_name("exp")
    assert len(MlflowClient(shared).search_runs([exp.experiment_id])) == 1


# --- the SQLite store: atomic creation, a half-created one named -------------------------------

# a child that opens a store and is SIGKILLed by itself right after MLflow's migration creates its
# batch-migration copy of experiments: the moment of the issue's "table _alembic_tmp_experiments
# already exists", reproduced without racing a timer
KILLED_DURING_MIGRATION = """
import os, signal, sys, sqlalchemy
from sqlalchemy import event

@event.listens_for(sqlalchemy.engine.Engine, "after_cursor_execute")
def kill(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("CREATE TABLE _ALEMBIC_TMP_EXPERIMENTS"):
        os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "mlflow":
    from mlflow.tracking import MlflowClient
    MlflowClient(sys.argv[2]).search_experiments()
else:
    from mrt_lib.tracking import _configure
    _configure(sys.argv[2], "exp")
"""


def store_uri(folder):
    # absolute: MLflow caches engines by URI string, so one relative URI would reach the first
    # test's file from every later test's folder
    return f"sqlite:///{folder / 'mlflow.db'}"


def kill_during_migration(opener, uri, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("MRT_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-c", KILLED_DURING_MIGRATION, opener, uri], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.e2e  # kills a process
def test_a_store_half_created_by_a_killed_mlflow_is_a_one_line_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = store_uri(tmp_path)
    kill_during_migration("mlflow", uri, tmp_path)  # MLflow alone: in place
    assert (tmp_path / "mlflow.db").exists()
    with pytest.raises(TrackingStoreError) as err:
        tracking._configure(uri, "exp")
    message = str(err.value)
    assert "\n" not in message and "mlflow.db" in message and "already exists" in message
    assert "half-created" in message and "delete it" in message
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # what a stage's entry point does with it
        with stage_run("report", uri, "exp", {}):
            pass
    assert exc.value.code == 1 and capsys.readouterr().err.strip().splitlines()[-1] == f"report: {message}"


@pytest.mark.e2e  # kills a process
def test_a_kill_while_the_store_is_created_leaves_no_store_and_the_next_stage_creates_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = store_uri(tmp_path)
    kill_during_migration("mrt", uri, tmp_path)
    assert not (tmp_path / "mlflow.db").exists()
    assert [p.name for p in tmp_path.glob("mlflow.db.tmp-*")]  # the killed child's temporary store
    with stage_run("report", uri, "exp", {}) as mlflow:
        mlflow.log_metric("x", 1.0)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mlflow.db")) == ["mlflow.db"]
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 1


def test_a_new_store_is_created_under_a_temporary_name_and_moved_into_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    real_publish = tracking._publish

    def publish(tmp, db_path):
        seen.append((tmp.name, tmp.stat().st_size > 0, db_path.exists()))
        real_publish(tmp, db_path)

    monkeypatch.setattr(tracking, "_publish", publish)
    uri = store_uri(tmp_path)
    _configure(uri, "exp")
    _configure(uri, "exp")  # exists: opened, not created again
    assert len(seen) == 1 and seen[0][0].startswith("mlflow.db.tmp-") and seen[0][1:] == (True, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]
    assert MlflowClient(uri).get_experiment_by_name("exp") is not None


def test_a_store_another_process_published_first_is_kept(tmp_path):
    ours, theirs = tmp_path / "mlflow.db.tmp-x", tmp_path / "mlflow.db"
    ours.write_text("ours")
    theirs.write_text("theirs, with runs")
    tracking._publish(ours, theirs)
    assert theirs.read_text() == "theirs, with runs"


# --- runs of killed stages ---------------------------------------------------------------------

def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_runs_of_gone_processes_on_this_host_are_marked_killed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = store_uri(tmp_path)
    _configure(uri, "exp")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp").experiment_id
    host, me, gone = socket.gethostname(), tracking._process_tags(), str(dead_pid())
    cases = {
        "dead": {HOST_TAG: host, PID_TAG: gone},
        "alive": me,
        "other_host": {HOST_TAG: "elsewhere.invalid", PID_TAG: gone},
        "other_pid_namespace": {HOST_TAG: host, PID_TAG: gone, PID_NS_TAG: "pid:[1]"},
        "untagged": {},
    }
    if PID_START_TAG in me:  # /proc: a live pid started at another time is a reused pid
        cases["reused_pid"] = {**me, PID_START_TAG: str(int(me[PID_START_TAG]) + 1)}
    runs = {name: client.create_run(exp, tags=tags).info.run_id for name, tags in cases.items()}
    with stage_run("report", uri, "exp", {}) as mlflow:
        own = mlflow.active_run()
        assert own.data.tags[HOST_TAG] == host and own.data.tags[PID_TAG] == str(os.getpid())
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    expected_killed = {"dead", "reused_pid"} & set(cases)
    assert {name for name, s in status.items() if s == "KILLED"} == expected_killed
    assert all(status[name] == "RUNNING" for name in ("alive", "other_host", "other_pid_namespace", "untagged"))
    err = capsys.readouterr().err
    assert runs["dead"] in err and "KILLED" in err and runs["alive"] not in err


def test_process_gone():
    assert tracking._process_gone(dead_pid(), None)
    assert not tracking._process_gone(os.getpid(), tracking._process_tags().get(PID_START_TAG))


def test_a_store_with_an_older_schema_is_named_with_the_upgrade_command():
    cause = ("Detected out-of-date database schema (found version 451aebb31d03, but expected dc11669786a5). "
             "Take a backup of your database, then run 'mlflow db upgrade <database_uri>' ...")
    message = tracking._broken_store_message(Path("ws/mlflow.db"), cause)
    assert "(found version 451aebb31d03, but expected dc11669786a5): back" in message
    assert "`mlflow db upgrade sqlite:///ws/mlflow.db`" in message and "\n" not in message

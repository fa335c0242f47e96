"""The orchestrator's checks before any job starts (no server needed): a cluster pool needs an
image, a remote and a tracking server the pods can reach; the command line needs a server."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from flows.fanout import _absolute_store, absolute_location, check_cluster_inputs
from mrt_lib.config import ConfigError
from tests.conftest import REPO

POOL = SimpleNamespace(pool_type="kubernetes", pool_name="mrt-gpu")
GOOD = dict(image="registry/mrt-pipeline:abc1234", remote="s3://bucket/mrt", tracking="http://mlflow:5000")


def test_a_cluster_fan_out_with_what_pods_can_reach_passes():
    check_cluster_inputs(POOL, "abc1234" * 5, **GOOD)


@pytest.mark.parametrize("key, value, message", [
    ("image", None, "give the stage jobs' image .*mrt-pipeline:abc1234"),
    ("remote", "/data/remote", "is a local path"),
    ("tracking", "sqlite:////repo/mlflow.db", "is this machine's; give an MLflow server"),
    ("tracking", "/repo/mlruns", "is this machine's"),
])
def test_a_cluster_fan_out_refuses_what_pods_cannot_reach(key, value, message):
    with pytest.raises(ConfigError, match=message):
        check_cluster_inputs(POOL, "abc1234" * 5, **{**GOOD, key: value})


def test_the_workspace_store_is_made_absolute_for_the_jobs(tmp_path):
    assert _absolute_store("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert _absolute_store("sqlite:////abs/mlflow.db", tmp_path) == "sqlite:////abs/mlflow.db"
    assert _absolute_store("http://mlflow:5000", tmp_path) == "http://mlflow:5000"


def test_a_local_remote_is_made_absolute_a_url_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_location("remote") == str(tmp_path.resolve() / "remote")  # DVC would store it relative
    assert absolute_location("s3://bucket/mrt") == "s3://bucket/mrt"
    assert absolute_location(None) == ""


def test_the_command_line_needs_a_server_and_says_how_to_start_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "-m", "flows.fanout"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "set PREFECT_API_URL" in proc.stderr and "make stage-worker" in proc.stderr


def test_a_profile_outside_the_repository_is_refused_before_anything_is_written(tmp_path):
    from flows.fanout import mrt_fanout
    from tests.conftest import SMOKE_PARAMS

    outside = tmp_path / "params_elsewhere.yaml"
    outside.write_text(SMOKE_PARAMS.read_text())
    with pytest.raises(ConfigError, match="not a file of the repository"):
        mrt_fanout.fn(profile=str(outside), repo_dir=str(REPO), remote=str(tmp_path / "remote"))
    assert not (REPO / "runs" / "elsewhere").exists()  # refused before a workspace was made

"""End to end on the smoke profile: the DVC path and the Prefect path give the same outputs,
a second ``dvc repro`` runs nothing, and every stage's MLflow run is grouped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.pipeline import STAGES
from tests.conftest import copy_project

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def sh(args, cwd, **env):
    full = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **env)
    proc = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def init_repo(path: Path) -> Path:
    copy_project(path)
    sh(["git", "init", "-q"], path)
    sh([str(BIN / "dvc"), "init", "-q"], path)
    return path


def stage_runs(repo: Path):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mrt-smoke")
    return client.search_runs([exp.experiment_id])


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    repo = init_repo(tmp_path_factory.mktemp("dvc"))
    first = sh([str(BIN / "dvc"), "repro"], repo, MRT_PIPELINE_RUN="g-dvc")
    return repo, first


def test_dvc_repro_runs_every_stage_then_nothing(dvc_repo):
    repo, first = dvc_repo
    order = [first.index(f"Running stage '{stage}'") for stage in STAGES]
    assert order == sorted(order)  # every stage ran, in the flow's order
    second = sh([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in second
    assert (repo / "dvc.lock").exists() and (repo / "metrics" / "evaluate.json").exists()


def test_dvc_stages_grouped_in_mlflow(dvc_repo):
    repo, _ = dvc_repo
    runs = stage_runs(repo)
    assert sorted(r.data.tags["mrt.stage"] for r in runs) == sorted(STAGES)
    assert {r.data.tags["mrt.pipeline_run"] for r in runs} == {"g-dvc"}
    evaluate = next(r for r in runs if r.data.tags["mrt.stage"] == "evaluate")
    assert "base.B12.accuracy" in evaluate.data.metrics and "warmstart.B12.accuracy" in evaluate.data.metrics


def test_prefect_flow_gives_the_same_outputs(dvc_repo, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import mrt_pipeline

    repo_dvc, _ = dvc_repo
    repo = init_repo(tmp_path / "prefect")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(tmp_path / "prefect-results")
    with prefect_test_harness(server_startup_timeout=180):
        mrt_pipeline(repo_dir=str(repo))
    for rel in ("metrics/evaluate.json", "data/dataset/meta.json", "plots/accuracy_vs_budget.json",
                "data/backtracks/meta.json"):
        assert json.loads((repo / rel).read_text()) == json.loads((repo_dvc / rel).read_text()), rel
    # same stages, same order, recorded in the same dvc.lock
    lock_a = (repo / "dvc.lock").read_text()
    assert lock_a == (repo_dvc / "dvc.lock").read_text()
    runs = stage_runs(repo)
    parent = next(r for r in runs if r.data.tags["mrt.stage"] == "pipeline")
    children = [r for r in runs if r.data.tags["mrt.stage"] != "pipeline"]
    assert sorted(r.data.tags["mrt.stage"] for r in children) == sorted(STAGES)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)

"""End to end on the smoke profile: the DVC path and the Prefect path give the same outputs,
a second ``dvc repro`` runs nothing, and every stage's MLflow run is grouped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.pipeline import pipeline_stages
from tests.conftest import REPO, SMOKE_PARAMS, copy_project

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]  # DVC pipelines and a Prefect server


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


def logged_stages(repo: Path) -> list[str]:
    """The stage of every MLflow run but the Prefect parent: one per stage, one per RL round
    (rl_start only names a starting point and logs nothing)."""
    return sorted(r.data.tags["mrt.stage"] for r in stage_runs(repo) if r.data.tags["mrt.stage"] != "pipeline")


EXPECTED = sorted(["build_dataset", "train_base", "synthesize_backtracks", "sft_warmstart", "build_star_data",
                   *["rl_round"] * 4, "evaluate", "report"])  # smoke: 2 arms x 2 seeds x 1 round


def test_dvc_repro_runs_every_stage_then_nothing(dvc_repo):
    repo, first = dvc_repo
    stages = pipeline_stages(str(repo))
    assert len(stages) == 15 and "rl_round@mrt_dense-1-round0" in stages
    order = [first.index(f"Running stage '{stage}'") for stage in stages]
    assert sorted(order) == sorted(set(order))  # every stage ran once; the flow's order respects the graph
    assert all(first.index("Running stage 'sft_warmstart'") < first.index(f"Running stage '{s}'")
               < first.index("Running stage 'evaluate'") for s in stages if s.startswith("rl_"))
    second = sh([str(BIN / "dvc"), "repro"], repo)
    assert "Running stage" not in second
    assert (repo / "dvc.lock").exists() and (repo / "metrics" / "evaluate.json").exists()


def test_dvc_stages_grouped_in_mlflow(dvc_repo):
    repo, _ = dvc_repo
    runs = stage_runs(repo)
    assert logged_stages(repo) == EXPECTED
    assert {r.data.tags["mrt.pipeline_run"] for r in runs} == {"g-dvc"}
    evaluate = next(r for r in runs if r.data.tags["mrt.stage"] == "evaluate")
    for model in ("base", "warmstart", "grpo", "mrt_dense", "grpo/s0/r1"):
        assert f"{model}.B12.accuracy" in evaluate.data.metrics
    rounds = {(r.data.tags["mrt.arm"], r.data.tags["mrt.round"]) for r in runs
              if r.data.tags["mrt.stage"] == "rl_round"}
    assert rounds == {("grpo", "1"), ("mrt_dense", "1")}  # one round, two seeds each


def test_prefect_flow_on_a_profile_workspace_gives_the_same_outputs(dvc_repo, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import mrt_pipeline

    repo_dvc, _ = dvc_repo
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(tmp_path / "prefect-results")
    with prefect_test_harness(server_startup_timeout=180):
        # its own DVC cache: restored stages would log nothing, and this test checks the logging
        run = mrt_pipeline(str(SMOKE_PARAMS), str(REPO), str(tmp_path / "prefect"), share_cache=False)
    repo = tmp_path / "prefect"
    for rel in ("metrics/evaluate.json", "data/dataset/meta.json", "plots/accuracy_vs_budget.json",
                "data/backtracks/meta.json", "rl/mrt_dense/s0/r1/rollouts.jsonl", "reports/comparison.md"):
        assert (repo / rel).read_text() == (repo_dvc / rel).read_text(), rel
    assert run["workspace"] == str(repo)
    # same stages, same order, recorded in the same dvc.lock
    lock_a = (repo / "dvc.lock").read_text()
    assert lock_a == (repo_dvc / "dvc.lock").read_text()
    runs = stage_runs(repo)
    parent = next(r for r in runs if r.data.tags["mrt.stage"] == "pipeline")
    children = [r for r in runs if r.data.tags["mrt.stage"] != "pipeline"]
    assert logged_stages(repo) == EXPECTED
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)

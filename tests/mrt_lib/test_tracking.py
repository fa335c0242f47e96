"""MLflow runs written to and read back from a temporary SQLite store."""

from mlflow.tracking import MlflowClient

from mrt_lib.tracking import PARENT_RUN_ENV, PIPELINE_RUN_ENV, PIPELINE_TAG, flatten, stage_run, start_parent_run


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

"""The registered policy model of scheduled retraining, in MLflow's model registry.

A candidate's weights are copied into the artifacts of a run of their own and the version's
source is that run's artifact URI, never a workspace path (candidate workspaces are removed);
``MlflowClient.create_model_version`` with that explicit source is used because
``mlflow.register_model("runs:/...")`` fails for plain logged files and leaves an empty
registered model behind. Aliases: ``@champion`` (what ``models:/<name>@champion`` loads) and
``@challenger`` (the last candidate the gate kept out).
"""

from __future__ import annotations

from pathlib import Path

CHAMPION, CHALLENGER = "champion", "challenger"
ARTIFACT_PATH = "policy"


def registry_client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment_id(client, experiment: str, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(experiment)
    return found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifacts)


def register_candidate(tracking_uri: str, name: str, model_dir: Path, tags: dict[str, str],
                       experiment: str = "mrt-registry", artifacts: str | None = None):
    """A new version of registered model ``name`` holding a copy of ``model_dir`` (a saved
    Hugging Face model), tagged with ``tags`` (commit, params and data hashes, pipeline run id,
    DVC path of the weights). Returns the ``ModelVersion``."""
    from mlflow.exceptions import MlflowException

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no saved model to register")
    client = registry_client(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="MRT policy: champion and challengers of retraining")
    run = client.create_run(_experiment_id(client, experiment, artifacts), run_name=f"register {name}",
                            tags={"mrt.stage": "register", **tags})
    try:
        client.log_artifacts(run.info.run_id, str(model_dir), ARTIFACT_PATH)
    except Exception:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return client.create_model_version(name, f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run.info.run_id,
                                       tags=tags)


def version_by_alias(tracking_uri: str, name: str, alias: str):
    """The version ``alias`` points at, or None (no such model, or the alias is unset)."""
    from mlflow.exceptions import MlflowException

    try:
        return registry_client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(tracking_uri: str, name: str, alias: str, version: str | int) -> None:
    registry_client(tracking_uri).set_registered_model_alias(name, alias, str(version))


def download(tracking_uri: str, name: str, alias: str, dest: Path) -> Path:
    """The weights of ``<name>@<alias>`` downloaded into ``dest``: a folder ``from_pretrained``
    loads. (The alias is resolved with this store's client: ``models:/`` URIs resolve against the
    process-wide registry URI, which a stage must not change.)"""
    import mlflow.artifacts

    version = version_by_alias(tracking_uri, name, alias)
    if version is None:
        raise LookupError(f"registered model {name!r} has no @{alias} in {tracking_uri}")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dest),
                                                    tracking_uri=tracking_uri))

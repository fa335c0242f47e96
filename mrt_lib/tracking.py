"""MLflow tracking: one run per stage, grouped per pipeline execution.

Runs of one execution share the tag ``mrt.pipeline_run`` (``MRT_PIPELINE_RUN`` in the
environment; ``make run`` and the Prefect flow set it) and, when ``MRT_PARENT_RUN_ID`` is set,
are nested under that parent run. A stage run alone gets a fresh group id.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PIPELINE_RUN_ENV = "MRT_PIPELINE_RUN"
PARENT_RUN_ENV = "MRT_PARENT_RUN_ID"
PIPELINE_TAG = "mrt.pipeline_run"


TRACKING_URI_ENV = "MRT_TRACKING_URI"


def new_pipeline_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _configure(tracking_uri: str, experiment: str):
    import mlflow

    # an explicit MRT_TRACKING_URI (a shared server, a store elsewhere) wins over the params'
    # workspace store; not MLFLOW_TRACKING_URI, which mlflow.set_tracking_uri itself writes into
    # the environment (so every child process would inherit the last store used)
    tracking_uri = os.environ.get(TRACKING_URI_ENV) or tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = Path("mlruns").resolve().as_uri() if tracking_uri.startswith("sqlite") else None
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return mlflow


@contextmanager
def stage_run(stage: str, tracking_uri: str, experiment: str, params: dict[str, Any], run_name: str | None = None,
              tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Open the MLflow run of one stage; yields the ``mlflow`` module for logging."""
    mlflow = _configure(tracking_uri, experiment)
    group = os.environ.get(PIPELINE_RUN_ENV) or new_pipeline_run_id()
    parent = os.environ.get(PARENT_RUN_ENV)
    tags = {PIPELINE_TAG: group, "mrt.stage": stage, **(tags or {})}
    if parent:
        tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(run_name=run_name or stage, tags=tags):
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

"""``prefect.yaml`` checked offline: Prefect's own model of the file accepts it, it holds no
absolute path, every deployment's flow imports with the name the deployment is registered
under, and its parameters (a profile that loads) pass the flow's typed signature."""

import re
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import load_flow_from_entrypoint

from mrt_lib.config import load_params
from tests.conftest import REPO

RAW = yaml.safe_load((REPO / "prefect.yaml").read_text())
MODEL = PrefectYamlModel.model_validate(RAW)
# deployment -> (its pool, whether it writes a workspace: then one run at a time)
DEPLOYMENTS = {"mrt-pipeline/local": ("mrt-process", True), "mrt-pipeline/headline": ("mrt-process", True),
               "mrt-retrain/nightly": ("mrt-process", True), "mrt-fanout/local": ("mrt-process", True),
               "mrt-fanout/cluster": ("mrt-process", True), "mrt-stage/local": ("mrt-stages", False),
               "mrt-stage/gpu": ("mrt-gpu", False)}
ENTRYPOINTS = {"mrt-pipeline": "flows/pipeline.py:mrt_pipeline", "mrt-retrain": "flows/retrain.py:mrt_retrain",
               "mrt-fanout": "flows/fanout.py:mrt_fanout", "mrt-stage": "flows/stage.py:mrt_stage"}


def full_name(dep) -> str:
    flow = next(f for f, e in ENTRYPOINTS.items() if e == dep.entrypoint)
    return f"{flow}/{dep.name}"


def strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)
    elif isinstance(obj, str):
        yield obj


def test_no_absolute_path_the_clone_comes_from_the_worker():
    absolute = [s for s in strings(RAW) if s.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\", s) or str(REPO) in s]
    assert absolute == []
    pull = RAW["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    assert pull == "{{ $MRT_REPO }}"  # resolved by the worker at run time (Makefile: make worker)


def test_the_deployments_the_team_needs():
    deps = {full_name(d): d for d in MODEL.deployments}
    assert set(deps) == set(DEPLOYMENTS)
    for name, d in deps.items():
        pool, one_at_a_time = DEPLOYMENTS[name]
        assert d.work_pool.name == pool
        if one_at_a_time:
            assert d.concurrency_limit.limit == 1 and d.concurrency_limit.collision_strategy == "ENQUEUE"
        else:  # stage jobs: as many at once as the pool allows (each in its own checkout)
            assert d.concurrency_limit is None
    (nightly,) = deps["mrt-retrain/nightly"].schedules
    assert nightly.cron == "0 3 * * *" and nightly.active is False  # off until a team turns it on


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_deployment_has_a_flow_that_imports_and_takes_its_parameters(name, monkeypatch):
    monkeypatch.chdir(REPO)
    dep = next(d for d in MODEL.deployments if full_name(d) == name)
    flow = load_flow_from_entrypoint(dep.entrypoint)
    assert flow.name == name.split("/")[0]
    if flow.name == "mrt-stage":  # started by the fan-out with every parameter it needs
        checked = flow.validate_parameters({"stage": "report", "commit": "0" * 40})
        assert checked["profile"] == "params.yaml"
        with pytest.raises(Exception, match="stage"):
            flow.validate_parameters({"commit": "0" * 40})
        return
    checked = flow.validate_parameters(dict(dep.parameters))
    assert isinstance(checked["profile"], str)
    load_params(Path(REPO) / checked["profile"])  # the profile it names is a valid params file
    if "deployment" in checked:  # a fan-out names a stage deployment of this file
        assert checked["deployment"] in DEPLOYMENTS and checked["deployment"].startswith("mrt-stage/")
    with pytest.raises(Exception, match="profile"):
        flow.validate_parameters({"profile": ["not", "a", "path"]})  # typed: a wrong type is refused


def test_no_flow_module_shadows_the_standard_library():
    """Prefect loads a deployment's entrypoint with its folder first on sys.path, so a
    ``flows/profile.py`` would be imported as the standard library's ``profile`` (which
    cProfile, and so torch, imports): measured, the retraining flow crashed at import."""
    import sys

    names = {p.stem for p in (REPO / "flows").glob("*.py")}
    assert names & set(sys.stdlib_module_names) == set()

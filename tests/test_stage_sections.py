"""Each stage reads only the params sections it names (``SECTIONS``), and those are the sections
of its params in dvc.yaml: a stage that read an untracked section would be served stale results
by DVC's cache. (``runtime`` is read by the entry points only: threads and the MLflow store.)"""

import importlib
from pathlib import Path

import pytest
import yaml

from mrt_lib.config import Params, for_stage

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(s for s in STAGES if s not in ("rl_start", "rl_start_matched")))
def test_stage_sections_are_its_dvc_params(stage):
    module = STAGES[stage]["cmd"].split("-m ")[1].split()[0]  # rl_matched runs tasks.rl_round --matched
    sections = importlib.import_module(module).SECTIONS
    tracked = {p.split(".")[0] for p in STAGES[stage].get("params", [])} - {"runtime"}
    assert set(sections) == tracked
    assert len(STAGES) == 11


def test_a_stage_view_refuses_other_sections():
    view = for_stage(Params(), ("env", "rl"))
    assert view.rl.train_budget == Params().rl.train_budget
    with pytest.raises(AttributeError, match="not 'evaluate': add it to the stage's SECTIONS"):
        _ = view.evaluate
    with pytest.raises(AttributeError):
        for_stage(view, ("env", "grader"))
    assert for_stage(view, ("rl",)).model_dump_json() != for_stage(view, ("env",)).model_dump_json()

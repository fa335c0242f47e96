"""Scheduled retraining's bookkeeping: what counts as a change, the gate's decisions applied to a
real SQLite registry (first champion, better, worse, tie within the margin, missing metric),
and the candidate workspaces kept."""

import json
import shutil

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mrt_lib.champion import decide
from mrt_lib.config import load_params, read_params_file
from mrt_lib.model_registry import CHALLENGER, CHAMPION, register_candidate, version_by_alias
from mrt_lib.retraining import (
    apply_verdict,
    artifact_root,
    changes,
    code_hash,
    data_hash,
    fingerprints,
    housekeeping,
    params_hash,
    version_tags,
)
from tests.conftest import SMOKE_PARAMS, copy_project
from tests.tiny_qwen2 import build_tiny_qwen2


def test_code_hash_sees_an_edit_and_ignores_caches(tmp_path):
    root = copy_project(tmp_path / "p")
    before = code_hash(root)
    (root / "mrt_lib" / "__pycache__").mkdir(exist_ok=True)
    (root / "mrt_lib" / "__pycache__" / "x.py").write_text("cached = 1\n")
    assert code_hash(root) == before
    (root / "tasks" / "report.py").write_text((root / "tasks" / "report.py").read_text() + "\n# edit\n")
    assert code_hash(root) != before


def test_params_hash_ignores_the_gate_settings_only():
    raw = read_params_file(SMOKE_PARAMS)
    gate = dict(raw, retrain={"gate_margin": 0.5})
    trained = dict(raw, rl=dict(raw["rl"], lr=0.002))
    assert params_hash(gate) == params_hash(raw) != params_hash(trained)


def test_data_hash_reads_local_files_by_content(tmp_path):
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / name).write_text('{"problem": "1+1?", "answer": "2"}\n')
    raw = read_params_file(SMOKE_PARAMS)
    params = load_params_dict(raw, tmp_path)
    embedded, note = data_hash(params, tmp_path)
    assert note == "generated from params"
    math = {"env": {"kind": "math"}, "policy": {"init": "pretrained", "model": "m"},
            "build_dataset": {"source": {"kind": "files", "files": {"train": ["train.jsonl"], "test": ["test.jsonl"]}}}}
    params = load_params_dict(math, tmp_path)
    first, note = data_hash(params, tmp_path)
    assert note == "local inputs by content, hub datasets by revision" and first != embedded
    (tmp_path / "train.jsonl").write_text('{"problem": "1+2?", "answer": "3"}\n')
    assert data_hash(params, tmp_path)[0] != first


def load_params_dict(raw, folder):
    import yaml

    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_changes_names_what_differs_and_a_missing_tag_counts():
    current = {"code": "c", "params": "p", "data": "d"}
    tags = version_tags(current)
    assert changes(current, tags) == []
    assert changes(dict(current, data="d2"), tags) == ["data"]
    assert changes(current, {k: v for k, v in tags.items() if k != "mrt.code_hash"}) == ["code"]


def test_housekeeping_keeps_the_champion_and_the_newest_challengers(tmp_path):
    for name in ("20261201T010000Z-a", "20261202T010000Z-b", "20261203T010000Z-c", "20261204T010000Z-d"):
        (tmp_path / name).mkdir()
    (tmp_path / ".mrt" / "locks").mkdir(parents=True)  # the lock of the running retraining: never removed
    removed = housekeeping(tmp_path, "20261201T010000Z-a", keep_challengers=2)
    assert [p.name for p in removed] == ["20261202T010000Z-b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mrt", "20261201T010000Z-a", "20261203T010000Z-c",
                                                          "20261204T010000Z-d"]
    assert [p.name for p in housekeeping(tmp_path, None, keep_challengers=0)] == [
        "20261201T010000Z-a", "20261203T010000Z-c", "20261204T010000Z-d"]


@pytest.fixture
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = build_tiny_qwen2(tmp_path / "model", ["What is 1+1? 2"], seed=0)

    def new_version(tag: str) -> str:
        return str(register_candidate(uri, "mrt-policy", model, {"mrt.candidate": tag},
                                      artifacts=artifact_root(uri)).version)
    return uri, new_version


def gate(uri, version, champion, challenger, decisions, margin=0.01):
    verdict = decide("regret", margin, champion, challenger)
    return apply_verdict(uri, "mrt-policy", version, verdict, decisions, f"cand-{version}", artifact_root(uri),
                         budget=8)


def alias(uri, name):
    found = version_by_alias(uri, "mrt-policy", name)
    return None if found is None else str(found.version)


def test_the_gate_on_hand_made_cases_in_a_real_registry(registry, tmp_path):
    uri, new_version = registry
    decisions = tmp_path / "decisions"
    rng = np.random.default_rng(0)
    champ = list(0.5 + 0.01 * rng.standard_normal(20))
    # first candidate: champion at once
    d = gate(uri, new_version("1"), None, champ, decisions)
    assert (d["promote"], d["alias"], d["previous_champion"], alias(uri, CHAMPION)) == (True, "champion", None, "1")
    # better by 0.1 on every problem: promoted, the previous champion recorded
    better = list(np.array(champ) - 0.1 + 0.005 * rng.standard_normal(20))
    d = gate(uri, new_version("2"), champ, better, decisions)
    assert (d["promote"], alias(uri, CHAMPION), d["previous_champion"]) == (True, "2", "1")
    assert d["compared"]["gain"] == pytest.approx(0.1, abs=0.005) and d["compared"]["gain_low"] > 0
    # worse: @challenger, the champion stays
    d = gate(uri, new_version("3"), better, champ, decisions)
    assert (d["promote"], alias(uri, CHAMPION), alias(uri, CHALLENGER)) == (False, "2", "3")
    assert "worse by 0.09" in d["reason"] or "worse by 0.10" in d["reason"]
    # a tie within the margin: kept out
    tie = [v - 0.004 for v in better]
    d = gate(uri, new_version("4"), better, tie, decisions)
    assert (d["promote"], alias(uri, CHAMPION), alias(uri, CHALLENGER)) == (False, "2", "4")
    assert "within the margin 0.01" in d["reason"]
    # the challenger has no such metric: kept out, said so
    d = gate(uri, new_version("5"), better, None, decisions)
    assert (d["promote"], alias(uri, CHAMPION), alias(uri, CHALLENGER)) == (False, "2", "5")
    assert "has no regret" in d["reason"]
    # every decision in a file and in MLflow, the version tagged with its verdict
    assert sorted(p.name for p in decisions.iterdir()) == [*(f"cand-{i}.json" for i in range(1, 6)), "last.json"]
    assert json.loads((decisions / "last.json").read_text())["version"] == "5"
    client = MlflowClient(uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mrt-retrain").experiment_id])
    assert sorted(r.data.tags["mrt.verdict"] for r in runs) == ["kept out"] * 3 + ["promoted"] * 2
    two = next(r for r in runs if r.data.tags["mrt.model_version"] == "2")
    assert two.data.metrics["gate.gain"] == pytest.approx(0.1, abs=0.005)
    assert client.get_model_version("mrt-policy", "3").tags["mrt.verdict"] == "kept out"
    shutil.rmtree(tmp_path / "model")  # the versions hold copies
    assert (tmp_path / "mlruns").is_dir()


def test_fingerprints_of_the_smoke_profile_are_stable(tmp_path):
    root = copy_project(tmp_path / "p")
    params = load_params(root / "params.yaml")
    raw = read_params_file(root / "params.yaml")
    hashes, note = fingerprints(params, raw, root)
    assert fingerprints(params, raw, root) == (hashes, note) and note == "generated from params"
    assert sorted(hashes) == ["code", "data", "params"]

"""The registered policy in a real SQLite registry: versions hold copies of the weights, aliases
move, and ``models:/<name>@champion`` loads with ``from_pretrained``."""

import shutil

import torch
from transformers import AutoModelForCausalLM

from mrt_lib.model_registry import CHAMPION, download, register_candidate, set_alias, version_by_alias
from tests.tiny_qwen2 import build_tiny_qwen2


def test_register_move_the_alias_and_load_the_champion(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "mlruns").as_uri()
    first = build_tiny_qwen2(tmp_path / "ws1" / "model", ["What is 1+1? 2"], seed=0)
    second = build_tiny_qwen2(tmp_path / "ws2" / "model", ["What is 1+1? 2"], seed=1)
    assert version_by_alias(uri, "mrt-policy", CHAMPION) is None  # no model yet
    tags = {"mrt.git_commit": "abc", "mrt.params_hash": "p1", "mrt.data_hash": "d1"}
    v1 = register_candidate(uri, "mrt-policy", first, tags,
                            artifacts=artifacts)
    set_alias(uri, "mrt-policy", CHAMPION, v1.version)
    v2 = register_candidate(uri, "mrt-policy", second,
                            tags | {"mrt.params_hash": "p2"}, artifacts=artifacts)
    assert (str(v1.version), str(v2.version)) == ("1", "2") and v2.tags["mrt.params_hash"] == "p2"
    assert not v2.source.startswith(str(tmp_path / "ws2"))  # a copy in MLflow's artifacts, not the workspace
    shutil.rmtree(tmp_path / "ws1")
    shutil.rmtree(tmp_path / "ws2")  # candidate workspaces are cleaned up; the versions stay loadable
    assert str(version_by_alias(uri, "mrt-policy", CHAMPION).version) == "1"
    set_alias(uri, "mrt-policy", CHAMPION, v2.version)
    folder = download(uri, "mrt-policy", CHAMPION, tmp_path / "dl")
    model = AutoModelForCausalLM.from_pretrained(folder)
    reference = build_tiny_qwen2(tmp_path / "again", ["What is 1+1? 2"], seed=1)
    again = AutoModelForCausalLM.from_pretrained(reference)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # what a user types, with the registry given by the environment
    import mlflow.artifacts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    user = mlflow.artifacts.download_artifacts(artifact_uri="models:/mrt-policy@champion", dst_path=str(tmp_path / "u"))
    mine = AutoModelForCausalLM.from_pretrained(user)
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), again.state_dict().values()))

"""The resume contract: a state is used only with its own fingerprint, discarded otherwise, and
the fingerprint moves with params, inputs and the stage's code."""

import shutil
from pathlib import Path

from mrt_lib.resume import FINGERPRINT_FILE, ResumeState, code_version, fingerprint

REPO = Path(__file__).resolve().parents[2]


def test_fingerprint_is_canonical_and_sees_every_part():
    assert fingerprint(a=1, b={"x": 1, "y": 2}) == fingerprint(b={"y": 2, "x": 1}, a=1)
    assert fingerprint(a=1, dataset="h1") != fingerprint(a=1, dataset="h2")
    assert fingerprint(a=1.0) != fingerprint(a=2.0)


def test_a_state_with_another_fingerprint_is_discarded(tmp_path, capsys):
    old = ResumeState(tmp_path / "ckpt", "old", "train_base")
    folder = old.open()
    (folder / "state.pt").write_text("weights")
    assert old.usable() and (folder / FINGERPRINT_FILE).read_text().strip() == "old"
    new = ResumeState(tmp_path / "ckpt", "new", "train_base")
    assert not new.usable()
    assert not folder.exists()  # nothing of the stale state is left to load
    assert "train_base: discarding the resume state" in capsys.readouterr().out
    # a folder without a fingerprint (e.g. a state from before the contract) is discarded too
    (tmp_path / "bare").mkdir()
    assert not ResumeState(tmp_path / "bare", "x", "s").usable() and not (tmp_path / "bare").exists()
    assert not ResumeState(tmp_path / "absent", "x", "s").usable()


def test_code_version_follows_the_stage_code_listed_in_dvc_yaml(tmp_path):
    for name in ("mrt_core", "mrt_lib", "tasks", "flows"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    before = {s: code_version(s, tmp_path) for s in ("train_base", "report")}
    assert before["train_base"] == code_version("train_base", REPO)
    with (tmp_path / "tasks" / "train_base.py").open("a") as fh:
        fh.write("\n# a change to the stage's code\n")
    assert code_version("train_base", tmp_path) != before["train_base"]
    assert code_version("report", tmp_path) == before["report"]  # another stage's code: unchanged

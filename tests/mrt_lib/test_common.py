"""Entry-point environment and the messages for missing pipeline folders."""

import os
from pathlib import Path

import huggingface_hub.constants
import pytest

from mrt_lib.common import OFFLINE_ENV, QUIET_ENV, entry_environment, is_hub_id, missing_model_message

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch):
    for key in (*QUIET_ENV, *OFFLINE_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


def test_entry_points_turn_telemetry_and_the_hub_off(clean_env):
    entry_environment()
    assert os.environ["MLFLOW_ENABLE_TELEMETRY"] == "false" and os.environ["DO_NOT_TRACK"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.is_offline_mode()  # read by transformers at call time


def test_a_run_that_needs_the_hub_keeps_it_and_a_users_choice_wins(clean_env):
    clean_env.setenv("MLFLOW_ENABLE_TELEMETRY", "true")
    entry_environment(needs_hub=True)
    assert os.environ["MLFLOW_ENABLE_TELEMETRY"] == "true"  # setdefault: the user's own setting stays
    assert "HF_HUB_OFFLINE" not in os.environ and not huggingface_hub.constants.is_offline_mode()
    clean_env.setenv("HF_HUB_OFFLINE", "0")
    entry_environment()
    assert not huggingface_hub.constants.is_offline_mode()  # explicitly online: left alone


def test_hub_ids_are_names_that_are_not_local(tmp_path):
    (tmp_path / "model").mkdir()
    assert is_hub_id("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    assert not is_hub_id(str(tmp_path / "model")) and not is_hub_id(None) and not is_hub_id("")


@pytest.mark.parametrize("path, producer", [("models/base", "train_base"), ("models/warmstart", "sft_warmstart"),
                                            ("rl/grpo/s0/r1/model", "rl_round")])
def test_a_missing_model_names_the_stage_that_writes_it(path, producer):
    assert missing_model_message(path) == f"{path} holds no model: run {producer} first (dvc repro {producer})"


def hold(path):
    """Hold ``path``'s flock on a descriptor of our own, as another process would."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"pid 4242 on elsewhere", 0)
    return fd


def test_an_exclusive_lock_names_its_holder_and_is_reentrant(tmp_path):
    from mrt_lib.common import LockedError, exclusive_lock

    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, "x"):
        with exclusive_lock(lock, "x"):  # the same process again: no-op
            pass
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")
    fd = hold(lock)
    try:
        with pytest.raises(LockedError, match=r"x is already running \(pid 4242 on elsewhere\)"):
            with exclusive_lock(lock, "x"):
                pass
    finally:
        os.close(fd)
    with exclusive_lock(lock, "x"):  # released with its descriptor (or its process)
        pass


def test_a_second_run_of_a_stage_in_one_workspace_is_refused(tmp_path, monkeypatch, capsys):
    from mrt_lib.common import LOCKS
    from tasks import build_dataset

    monkeypatch.chdir(tmp_path)
    fd = hold(tmp_path / LOCKS / "build_dataset.lock")
    try:
        with pytest.raises(SystemExit) as exc:
            build_dataset.main(["--params", str(REPO / "params.yaml")])
    finally:
        os.close(fd)
    assert exc.value.code == 1
    assert "build_dataset: build_dataset in this workspace is already running (pid 4242" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_stale_temporary_sibling_is_removed_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from mrt_lib.common import _temp_prefix, atomic_path

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    target = tmp_path / "out"
    dead = tmp_path / f"{_temp_prefix('out')}{gone.pid}-abc"
    live = tmp_path / f"{_temp_prefix('out')}{os.getpid()}-def"
    other = tmp_path / f".out.tmp-another-host-{gone.pid}-ghi"
    for folder in (dead, live, other):
        (folder / "out").mkdir(parents=True)
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    assert target.read_text() == "x"
    assert not dead.exists() and live.exists() and other.exists()

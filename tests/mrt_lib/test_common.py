"""Entry-point environment and the messages for missing pipeline folders."""

import os

import huggingface_hub.constants
import pytest

from mrt_lib.common import OFFLINE_ENV, QUIET_ENV, entry_environment, is_hub_id, missing_model_message


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

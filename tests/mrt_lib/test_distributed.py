"""The data-parallel helpers on one process (the 2-process runs are in tests/test_data_parallel.py)."""

import pytest

from mrt_lib import distributed
from mrt_lib.distributed import WorldError, all_sum, check_world, gather, launch_command, relaunch, shard


def test_shards_are_contiguous_equal_and_cover_everything():
    assert [shard(8, r, 2) for r in range(2)] == [range(0, 4), range(4, 8)]
    assert [list(shard(6, r, 3)) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert shard(5, 0, 1) == range(0, 5)


def test_an_uneven_split_is_refused_naming_the_fix():
    with pytest.raises(WorldError, match="3 items cannot be split evenly over 2 processes.*resources.processes"):
        shard(3, 0, 2)


def test_outside_a_group_gather_and_sum_are_the_identity():
    assert gather(("a", "b")) == ["a", "b"]
    assert all_sum([1, 2.5]) == [1.0, 2.5]


def test_a_wrong_world_is_refused_with_the_launch_command():
    check_world("rl_round", 2, 2)
    wanted = "resources.processes is 2 but 1 process.*ACCELERATE_USE_CPU=1 accelerate launch --num_processes 2 -m"
    with pytest.raises(WorldError, match=wanted + " tasks.rl_round"):
        check_world("rl_round", 2, 1)


def test_the_launch_command_forms_a_gloo_group_on_cpu(monkeypatch):
    monkeypatch.delenv(distributed.CONFIG_ENV, raising=False)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    cmd, env = launch_command("tasks.rl_round", ["--arm", "grpo"], 2)
    assert cmd[1:4] == ["launch", "--num_processes", "2"] and "--multi_gpu" in cmd
    assert cmd[-4:] == ["-m", "tasks.rl_round", "--arm", "grpo"]
    # measured: without it the two processes each report no distributed type
    assert env["ACCELERATE_USE_CPU"] == "1" and env[distributed.LAUNCHED_ENV] == "1"


def test_an_accelerate_config_replaces_the_default_flags(monkeypatch):
    monkeypatch.setenv(distributed.CONFIG_ENV, "infra/accelerate/zero3_8gpu.yaml")
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    cmd, env = launch_command("tasks.sft_warmstart", [], 8)
    assert cmd[cmd.index("--config_file") + 1] == "infra/accelerate/zero3_8gpu.yaml"
    assert "--multi_gpu" not in cmd and "ACCELERATE_USE_CPU" not in env


def test_relaunch_does_nothing_for_one_process_or_inside_a_launch(monkeypatch):
    def fail(*args):
        raise AssertionError("must not exec")

    monkeypatch.setattr(distributed.os, "execvpe", fail)
    monkeypatch.delenv(distributed.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    relaunch("tasks.rl_round", [], 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    relaunch("tasks.rl_round", [], 2)


def test_relaunch_execs_the_launcher_in_place(monkeypatch):
    seen = {}
    monkeypatch.setattr(distributed.os, "execvpe", lambda f, cmd, env: seen.update(cmd=cmd, env=env))
    monkeypatch.delenv(distributed.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    relaunch("tasks.train_base", ["--params", "p.yaml"], 2)
    assert seen["cmd"][-4:] == ["-m", "tasks.train_base", "--params", "p.yaml"]


def test_launch_as_refuses_an_uneven_split_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        distributed.launch_as("rl_round", [], 2, 3)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("rl_round: 3 items cannot be split evenly over 2 processes")


def test_a_process_other_than_0_tracks_nothing_and_takes_no_lock(monkeypatch, tmp_path):
    from mrt_lib.tracking import stage_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANK", "1")
    with stage_run("rl_round", "sqlite:///mlflow.db", "x", {"a": 1}) as mlflow:
        assert mlflow.log_metrics({"loss": 1.0}, step=1) is None
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".mrt").exists()

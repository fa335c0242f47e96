"""Real kills (SIGKILL) at named points, then a re-run: what a stage leaves behind never reaches
the outputs. Each stage runs as its own process in a workspace of its own and kills itself
where ``MRT_TEST_KILL_AT`` says (``mrt_lib.common.kill_point``): deterministic, no sleeps.

The pattern of the resume contract: killed with a resume state on disk, a param is changed,
the stage re-runs, and its output equals a clean run of the new params (the stale state is
discarded, not resumed). With the params unchanged, the resumed output equals an uninterrupted
run's, byte for byte."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mrt_lib.common import KILL_AT_ENV, Paths, model_hash
from tests.conftest import copy_outputs, copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent


def stage(ws: Path, module: str, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ws, env=env, capture_output=True, text=True)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


def set_params(ws: Path, **dotted) -> None:
    """Change values of the workspace's params.yaml (``a__b=v`` sets ``a.b``)."""
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    for key, value in dotted.items():
        *parents, last = key.split("__")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def workspace(root: Path, smoke=None, *outputs: str) -> Path:
    """The project's code and smoke params in ``root``, with copies of ``outputs`` of the smoke run."""
    copy_project(root)
    if outputs:
        copy_outputs(smoke[1], root, *outputs)
    return root


def test_train_base_killed_at_a_checkpoint_then_changed_trains_the_new_params(tmp_path):
    cut = workspace(tmp_path / "cut")
    ok(stage(cut, "tasks.build_dataset"))
    killed(stage(cut, "tasks.train_base", kill_at="train_base.checkpoint@2"))  # after the step-16 checkpoint
    assert (cut / "checkpoints" / "train_base" / "state.pt").exists() and not (cut / "models" / "base").exists()
    set_params(cut, train_base__lr=0.004)
    rerun = ok(stage(cut, "tasks.train_base"))
    assert "discarding the resume state" in rerun.stdout + rerun.stderr
    assert not (cut / "checkpoints" / "train_base").exists()  # a completed stage removes its state

    clean = workspace(tmp_path / "clean")
    set_params(clean, train_base__lr=0.004)
    ok(stage(clean, "tasks.build_dataset"))
    ok(stage(clean, "tasks.train_base"))
    assert model_hash(cut / "models" / "base") == model_hash(clean / "models" / "base")


def test_sft_warmstart_killed_after_a_checkpoint_then_changed_trains_the_new_params(trained_smoke, tmp_path):
    names = ("dataset", "base_model", "backtracks")
    cut = workspace(tmp_path / "cut", trained_smoke, *names)
    killed(stage(cut, "tasks.sft_warmstart", kill_at="sft_warmstart.checkpoint"))  # after checkpoint-2
    assert list((cut / "checkpoints" / "sft_warmstart").glob("checkpoint-*"))
    set_params(cut, sft_warmstart__lr=0.002)
    ok(stage(cut, "tasks.sft_warmstart"))
    assert not (cut / "checkpoints" / "sft_warmstart").exists()

    clean = workspace(tmp_path / "clean", trained_smoke, *names)
    set_params(clean, sft_warmstart__lr=0.002)
    ok(stage(clean, "tasks.sft_warmstart"))
    assert model_hash(cut / "models" / "warmstart") == model_hash(clean / "models" / "warmstart")


RL = {"rl__arms": ["grpo"], "rl__seeds": [0], "rl__steps_per_round": 4, "rl__save_every": 2,
      "evaluate__models": ["base", "warmstart"]}
RL_ROUND = ("tasks.rl_round", "--arm", "grpo", "--seed", "0", "--round", "1")


def rl_workspace(root: Path, smoke, **changes) -> Path:
    ws = workspace(root, smoke, "dataset", "base_model", "warmstart_model")
    set_params(ws, **RL, **changes)
    ok(stage(ws, "tasks.rl_start", "--arm", "grpo", "--seed", "0"))
    return ws


def round_outputs(ws: Path) -> dict[str, str]:
    out = Paths(ws).rl_round("grpo", 0, 1)
    return {"metrics.json": (out / "metrics.json").read_text(), "rollouts.jsonl": (out / "rollouts.jsonl").read_text(),
            "weights": model_hash(out / "model")}


def test_rl_round_killed_after_a_saved_step_resumes_to_the_uninterrupted_bytes(trained_smoke, tmp_path):
    cut = rl_workspace(tmp_path / "cut", trained_smoke)
    killed(stage(cut, *RL_ROUND, kill_at="rl_round.state"))  # after the step-2 state
    state = json.loads((cut / "checkpoints" / "rl" / "grpo" / "s0" / "r1" / "state.json").read_text())
    assert state["step"] == 2
    ok(stage(cut, *RL_ROUND))
    whole = rl_workspace(tmp_path / "whole", trained_smoke)
    ok(stage(whole, *RL_ROUND))
    assert round_outputs(cut) == round_outputs(whole)


def test_rl_round_killed_then_changed_runs_the_new_params(trained_smoke, tmp_path):
    cut = rl_workspace(tmp_path / "cut", trained_smoke)
    killed(stage(cut, *RL_ROUND, kill_at="rl_round.state"))
    set_params(cut, rl__lr=0.002)
    ok(stage(cut, *RL_ROUND))
    clean = rl_workspace(tmp_path / "clean", trained_smoke, rl__lr=0.002)
    ok(stage(clean, *RL_ROUND))
    assert round_outputs(cut) == round_outputs(clean)


def test_a_kill_inside_an_atomic_write_leaves_a_temp_the_next_write_removes_and_dvc_ignores(tmp_path):
    ws = workspace(tmp_path / "ws")
    killed(stage(ws, "tasks.build_dataset", kill_at="atomic_path.dataset"))
    temps = list((ws / "data").glob(".dataset.tmp-*"))
    assert len(temps) == 1 and not (ws / "data" / "dataset").exists()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    ok(subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=ws, capture_output=True, text=True))
    assert ".*.tmp-*" in (ws / ".dvcignore").read_text()  # the project's, kept by dvc init
    ignored = subprocess.run([str(BIN / "dvc"), "check-ignore", str(temps[0].relative_to(ws))], cwd=ws,
                             capture_output=True, text=True)
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr  # never hashed into a stage's outputs
    ok(stage(ws, "tasks.build_dataset"))
    assert not list((ws / "data").glob(".dataset.tmp-*"))
    clean = workspace(tmp_path / "clean")
    ok(stage(clean, "tasks.build_dataset"))
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "meta.json"):
        assert (ws / "data" / "dataset" / name).read_bytes() == (clean / "data" / "dataset" / name).read_bytes()


FLOW = """
from prefect import flow
from mrt_lib.prefect_server import ephemeral_api, note_flow_run

@flow(name="mrt-kill-test")
def body():
    note_flow_run()  # MRT_TEST_KILL_AT=flow.started kills the process right after it
    return "done"

with ephemeral_api():
    print(body())
"""
READ_RUNS = """
from prefect import get_client
from mrt_lib.prefect_server import ephemeral_api

with ephemeral_api():
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs():
            print(run.name, run.state.type.value)
"""


def flow_process(tmp_path, code: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    # output to files, not pipes: an orphaned server would keep an inherited pipe open
    with open(tmp_path / "flow.out", "w") as out, open(tmp_path / "flow.log", "a") as log:
        proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=out, stderr=log, timeout=600)
    proc.stdout = (tmp_path / "flow.out").read_text()
    return proc


def test_a_killed_flow_leaves_a_server_and_a_running_run_the_next_start_cleans_up(tmp_path):
    killed(flow_process(tmp_path, FLOW, kill_at="flow.started"))
    (record,) = (tmp_path / "prefect" / "mrt-ephemeral").glob("*.json")
    data = json.loads(record.read_text())
    server, (run_id,) = data["server"], data["flow_runs"]
    assert Path(f"/proc/{server}").exists()  # orphaned: still serving
    proc = flow_process(tmp_path, READ_RUNS)  # the next flow process
    assert proc.returncode == 0, (tmp_path / "flow.log").read_text()[-3000:]
    states = dict(line.split() for line in proc.stdout.splitlines())
    assert list(states.values()) == ["CRASHED"], states  # not RUNNING forever
    log = (tmp_path / "flow.log").read_text()
    assert f"stopped Prefect's temporary server (pid {server})" in log and f"marked flow run {run_id} crashed" in log
    for _ in range(100):  # the orphan exits (and is reaped by init)
        if not Path(f"/proc/{server}").exists() or Path(f"/proc/{server}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the orphaned server {server} still runs")
    assert not record.exists()

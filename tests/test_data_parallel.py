"""Data-parallel stages on 2 gloo processes (CPU): each stage launches itself under
``accelerate launch`` when ``resources.processes`` is 2, every process does half of the work,
and the update equals the one-process update on the same global batch."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from mrt_lib.common import HOLD_AT_ENV, Paths
from tests.test_kills import BIN, RL, RL_ROUND, ok, rl_workspace, round_outputs, set_params, stage, workspace

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
ONE_STEP = {"rl__steps_per_round": 1, "rl__save_every": 1}


def set_processes(ws: Path, n: int) -> None:
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw.setdefault("resources", {}).setdefault("default", {})["processes"] = n
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def one_step(root: Path, smoke) -> Path:
    ws = rl_workspace(root, smoke)
    set_params(ws, **ONE_STEP)
    return ws


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def rollout_tokens(ws: Path) -> list:
    out = Paths(ws).rl_round("grpo", 0, 1)
    rows = map(json.loads, (out / "rollouts.jsonl").read_text().splitlines())
    return [(r["problem_id"], r["prefix_text"], r["text"], r["roles"]) for r in rows]


def history(ws: Path) -> list[dict]:
    return json.loads((Paths(ws).rl_round("grpo", 0, 1) / "metrics.json").read_text())["steps"]


def test_one_rl_update_on_two_processes_equals_one_process_on_the_same_batch(trained_smoke, tmp_path):
    one, two, half = (one_step(tmp_path / name, trained_smoke) for name in ("one", "two", "half"))
    set_processes(two, 2)
    ok(stage(one, *RL_ROUND))
    ok(stage(two, *RL_ROUND))
    # the same prefixes, continuations and validation draws at any process count
    assert rollout_tokens(two) == rollout_tokens(one)
    steps = history(two)
    assert steps[0]["sampled_by_process"] == [8, 8]  # 4 prompts x G=4: 2 groups each
    assert "sampled_by_process" not in history(one)[0]
    start = weights(Paths(one).model("warmstart"))
    w1, w2 = weights(Paths(one).rl_round("grpo", 0, 1) / "model"), weights(Paths(two).rl_round("grpo", 0, 1) / "model")
    assert max_difference(w1, start) > 1e-4  # the update moved the weights
    assert max_difference(w1, w2) < 1e-6
    # the tolerance means something: an update on half of the step's batch lands far away
    set_params(half, rl__prompts_per_step=2)
    ok(stage(half, *RL_ROUND))
    assert max_difference(w1, weights(Paths(half).rl_round("grpo", 0, 1) / "model")) > 100 * 1e-6


def test_a_two_process_round_killed_after_a_saved_step_resumes_to_the_uninterrupted_bytes(trained_smoke,
                                                                                           tmp_path):
    cut = rl_workspace(tmp_path / "cut", trained_smoke)
    set_processes(cut, 2)
    proc = stage(cut, *RL_ROUND, kill_at="rl_round.state")  # every rank kills itself after the step-2 state
    assert proc.returncode != 0
    state = json.loads((cut / "checkpoints" / "rl" / "grpo" / "s0" / "r1" / "state.json").read_text())
    assert state["step"] == 2
    assert sorted(p.name for p in (cut / "checkpoints" / "rl" / "grpo" / "s0" / "r1" / "accelerate").glob(
        "random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]  # one per rank
    ok(stage(cut, *RL_ROUND))
    whole = rl_workspace(tmp_path / "whole", trained_smoke)
    set_processes(whole, 2)
    ok(stage(whole, *RL_ROUND))
    assert round_outputs(cut) == round_outputs(whole)


SFT_ONE_STEP = {"sft_warmstart__max_steps": 1, "sft_warmstart__warmup_steps": 0, "sft_warmstart__eval_every": 1,
                "sft_warmstart__save_every": 1}


def sft_workspace(root: Path, smoke, **changes) -> Path:
    ws = workspace(root, smoke, "dataset", "base_model", "backtracks")
    set_params(ws, **SFT_ONE_STEP, **changes)
    return ws


def test_one_sft_step_on_two_processes_equals_one_process_on_the_same_rows(trained_smoke, tmp_path):
    batch = trained_smoke[0].sft_warmstart.batch_size
    one, two = sft_workspace(tmp_path / "one", trained_smoke), sft_workspace(tmp_path / "two", trained_smoke)
    set_processes(two, 2)
    ok(stage(one, "tasks.sft_warmstart"))
    proc = ok(stage(two, "tasks.sft_warmstart"))
    assert proc.stdout.count("sft_warmstart: {") == 1  # process 0 alone reports
    base = weights(Paths(one).base_model)
    w1, w2 = weights(Paths(one).warmstart_model), weights(Paths(two).warmstart_model)
    assert max_difference(w1, base) > 1e-4
    assert max_difference(w1, w2) < 1e-6
    half = sft_workspace(tmp_path / "half", trained_smoke, sft_warmstart__batch_size=batch // 2)
    ok(stage(half, "tasks.sft_warmstart"))
    assert max_difference(w1, weights(Paths(half).warmstart_model)) > 100 * 1e-6


def test_train_base_on_two_processes_equals_one_process_on_the_same_batch(tmp_path):
    one, two, half = (workspace(tmp_path / name) for name in ("one", "two", "half"))
    ok(stage(one, "tasks.build_dataset"))
    for ws in (one, two, half):
        set_params(ws, train_base__steps=1, train_base__warmup_steps=0, train_base__eval_every=1,
                   train_base__checkpoint_every=1)
        if ws is not one:  # the same dataset (its build does not depend on train_base)
            shutil.copytree(one / "data" / "dataset", ws / "data" / "dataset")
    set_processes(two, 2)
    set_params(half, train_base__batch_size=16)
    for ws in (one, two, half):
        ok(stage(ws, "tasks.train_base"))
    w1, w2 = weights(Paths(one).base_model), weights(Paths(two).base_model)
    assert max_difference(w1, w2) < 1e-6
    assert max_difference(w1, weights(Paths(half).base_model)) > 100 * 1e-6  # the same init, half the rows


def test_each_rank_s_vllm_engine_gets_the_new_weights_after_every_update(trained_smoke, tmp_path):
    from mrt_lib.modeling import load_policy
    from tests.fake_vllm import LOG_ENV, weights_hash

    ws = rl_workspace(tmp_path / "ws", trained_smoke, rl__backend="vllm")
    set_processes(ws, 2)
    log = tmp_path / "syncs.jsonl"
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", MRT_FAKE_VLLM="1", **{LOG_ENV: str(log)},
               PYTHONPATH=os.pathsep.join([str(repo / "tests" / "fake_vllm_site"), str(repo)]))
    proc = subprocess.run([sys.executable, "-m", *RL_ROUND], cwd=ws, env=env, capture_output=True, text=True)
    ok(proc)
    syncs = [json.loads(line) for line in log.read_text().splitlines()]
    steps = RL["rl__steps_per_round"]
    by_rank = {r: [s for s in syncs if s["rank"] == r] for r in (0, 1)}
    assert [s["sync"] for s in by_rank[0]] == [s["sync"] for s in by_rank[1]] == list(range(1, steps + 1))
    # after every update both engines hold the same new weights; after the last, the round's output
    assert [s["weights"] for s in by_rank[0]] == [s["weights"] for s in by_rank[1]]
    assert len({s["weights"] for s in by_rank[0]}) == steps
    final, _ = load_policy(Paths(ws).rl_round("grpo", 0, 1) / "model")
    assert by_rank[0][-1]["weights"] == weights_hash(final)


def rank_pids(ws: Path) -> list[int]:
    """The processes running a stage in ``ws`` (the launched ranks: their cwd is the workspace)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == ws.resolve() and \
                    b"tasks.rl_round" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_killing_the_launcher_takes_every_rank_with_it(trained_smoke, tmp_path):
    ws = rl_workspace(tmp_path / "ws", trained_smoke)
    set_processes(ws, 2)
    # every rank holds after its first saved step, so the kill lands mid-round whatever the speed
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **{HOLD_AT_ENV: "rl_round.state"})
    launcher = subprocess.Popen([sys.executable, "-m", *RL_ROUND], cwd=ws, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = ws / "checkpoints" / "rl" / "grpo" / "s0" / "r1" / "state.json"
    try:
        while not state.exists():  # the round has started on both ranks
            assert launcher.poll() is None, "the round ended before it saved a state"
            time.sleep(0.5)
        ranks = [p for p in rank_pids(ws) if p != launcher.pid]
        assert len(ranks) >= 2, ranks
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)  # what a stopped job or a killed DVC does
        launcher.wait()
    for _ in range(240):  # the parent-death signal ends them; they never run on to the outputs
        if not [p for p in ranks if Path(f"/proc/{p}").exists() and b"Z" not in _state(p)]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"ranks {ranks} outlived their launcher")
    assert not (Paths(ws).rl_round("grpo", 0, 1) / "metrics.json").exists()


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"

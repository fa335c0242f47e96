"""Team use for real: a Prefect server and a process worker started from Python (loopback, a
free port, a temporary PREFECT_HOME), ``prefect deploy --all`` on the repository's own
``prefect.yaml``, then ``prefect deployment run ... --watch`` on the smoke profile: in place,
in a profile workspace restored from the shared DVC cache, with a broken profile, and the
nightly retraining twice (a registered champion, then a skip). Server and worker are stopped
in every case."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, SMOKE_PARAMS, copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
BIN = Path(sys.executable).parent
WAIT_S = 240  # a server starts in 15-25 s on 2 cores; generous for a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after a grace period."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def team_repo(root: Path) -> Path:
    """A clone-like project: code, dvc.yaml, prefect.yaml, the smoke params as params.yaml and
    as a profile, a broken profile; committed (versions are tagged with the commit)."""
    repo = copy_project(root)
    shutil.copy(REPO / "prefect.yaml", repo / "prefect.yaml")
    (repo / "profiles").mkdir()
    shutil.copy(SMOKE_PARAMS, repo / "profiles" / "params_smoke.yaml")
    broken = yaml.safe_load(SMOKE_PARAMS.read_text())
    broken["rl"]["lr"] = "fast"
    (repo / "profiles" / "params_broken.yaml").write_text(yaml.safe_dump(broken))
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t",
                                                               "commit", "-qm", "project"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo, check=True)
    return repo


def committed_project(root: Path) -> Path:
    """``team_repo`` with its DVC config and git ignores committed too, as in a real clone (stage
    checkouts are clones of the commit)."""
    repo = team_repo(root)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    for args in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "dvc"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)
    return repo


@contextmanager
def local_team(root: Path, repo: Path, worker: list[str], log_level: str = "INFO") -> Iterator[dict]:
    """A Prefect server on a free loopback port (its home in ``root``), the pools and every
    deployment of ``repo``'s ``prefect.yaml``, and a process worker with ``worker`` (its pool
    options); stopped in every case. Yields the environment to talk to it, its API URL and the
    deploy command's result."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MRT_"))}
    env.update(PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_LOGGING_LEVEL=log_level, MRT_REPO=str(repo),
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    procs = []
    try:
        with open(root / "server.log", "wb") as log:  # files, not pipes: nothing blocks on a full pipe
            procs.append(subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                           str(port)], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        wait_healthy(api, procs[0], root / "server.log")
        create_pools(repo, env)
        # MRT_REPO unset while deploying: the worker's own value is read at run time (make deploy does the same)
        deployed = run(["prefect", "--no-prompt", "deploy", "--all"], repo,
                       {k: v for k, v in env.items() if k != "MRT_REPO"})
        with open(root / "worker.log", "wb") as log:
            procs.append(subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--type", "process", *worker],
                                          cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        yield {"env": env, "api": api, "deployed": deployed}
    finally:
        for proc in reversed(procs):
            stop(proc)
    assert all(p.poll() is not None for p in procs)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    repo = team_repo(root / "repo")
    with local_team(root, repo, ["--pool", "mrt-process"]) as server:
        yield {"repo": repo, "root": root, **server}


def create_pools(repo: Path, env: dict) -> None:
    """The pools ``make deploy`` creates: flows, stage jobs (a process pool, 2 at once) and the
    cluster's GPU pool (kubernetes, the repository's base job template; no worker here)."""
    run(["prefect", "work-pool", "create", "mrt-process", "--type", "process", "--overwrite"], repo, env)
    run(["prefect", "work-pool", "create", "mrt-stages", "--type", "process", "--overwrite"], repo, env)
    run(["prefect", "work-pool", "set-concurrency-limit", "mrt-stages", "2"], repo, env)
    run(["prefect", "work-pool", "create", "mrt-gpu", "--type", "kubernetes", "--overwrite", "--base-job-template",
         str(REPO / "infra" / "k8s" / "gpu-job-template.json")], repo, env)


def wait_healthy(api: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"no Prefect server after {WAIT_S} s:\n{log.read_text()[-3000:]}")


def run(args, cwd, env, ok=True, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def deployment_run(team, name: str, ok=True, **params) -> subprocess.CompletedProcess:
    args = ["prefect", "deployment", "run", name, "--watch"]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    return run(args, team["repo"], team["env"], ok=ok)


def flow_run_id(proc: subprocess.CompletedProcess) -> str:
    return re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout).group(1)


def run_logs(team, run_id: str) -> str:
    """The flow run's log records as the server has them (its own and its tasks')."""
    messages, offset = [], 0
    while True:
        page = httpx.post(f"{team['api']}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                             "sort": "TIMESTAMP_ASC", "limit": 200, "offset": offset},
                          timeout=30).json()
        messages += [r["message"] for r in page]
        if len(page) < 200:
            return "\n".join(messages)
        offset += 200


def run_state(team, run_id: str) -> dict:
    return httpx.get(f"{team['api']}/flow_runs/{run_id}", timeout=30).json()["state"]


def stage_runs(ws: Path):
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("mrt-smoke").experiment_id])


EXPECTED = sorted(["build_dataset", "train_base", "synthesize_backtracks", "sft_warmstart", "build_star_data",
                   *["rl_round"] * 4, "evaluate", "report"])
COMPARED = ("metrics/evaluate.json", "data/dataset/meta.json", "rl/mrt_dense/s0/r1/rollouts.jsonl",
            "reports/comparison.md", "dvc.lock")


def test_deploy_registers_every_deployment(team):
    out = team["deployed"].stdout
    for name in ("mrt-pipeline/local", "mrt-pipeline/headline", "mrt-retrain/nightly", "mrt-fanout/local",
                 "mrt-fanout/cluster", "mrt-stage/local", "mrt-stage/gpu"):
        assert name in out, out[-3000:]
    deps = httpx.post(f"{team['api']}/deployments/filter", json={}, timeout=30).json()
    assert len(deps) == 7
    nightly = next(d for d in deps if d["name"] == "nightly")
    assert [s["active"] for s in nightly["schedules"]] == [False]  # the schedule is there, paused
    workspaces = [d for d in deps if "stage" not in d["tags"]]  # stage jobs each have a checkout of their own
    assert len(workspaces) == 5
    assert all(d["global_concurrency_limit"]["limit"] == 1 for d in workspaces)
    assert all(d["concurrency_options"]["collision_strategy"] == "ENQUEUE" for d in workspaces)
    assert "{{ $MRT_REPO }}" in json.dumps(nightly["pull_steps"])  # the worker's MRT_REPO, at run time


def test_the_default_profile_runs_in_the_repository_like_make_flow(team):
    repo = team["repo"]
    proc = deployment_run(team, "mrt-pipeline/local")
    assert "Completed" in proc.stdout
    runs = stage_runs(repo)
    parent = next(r for r in runs if r.data.tags["mrt.stage"] == "pipeline")
    children = [r for r in runs if r.data.tags["mrt.stage"] != "pipeline"]
    assert sorted(r.data.tags["mrt.stage"] for r in children) == EXPECTED
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    logs = run_logs(team, flow_run_id(proc))
    assert "train_base: " in logs and "stage report: done" in logs  # each stage's output streamed in
    lock = (repo / "dvc.lock").read_text()
    again = run(["dvc", "repro"], repo, team["env"])
    assert "Running stage" not in again.stdout and (repo / "dvc.lock").read_text() == lock


def test_another_profile_runs_in_its_workspace_restored_from_the_shared_cache(team):
    repo = team["repo"]
    if not (repo / "dvc.lock").exists():
        pytest.skip("needs the in-place run")
    proc = deployment_run(team, "mrt-pipeline/local", profile="profiles/params_smoke.yaml")
    ws = repo / "runs" / "smoke"
    for rel in COMPARED:
        assert (ws / rel).read_text() == (repo / rel).read_text(), rel
    logs = run_logs(team, flow_run_id(proc))
    assert "Running stage" not in logs and "is cached" in logs  # nothing re-trained: DVC's run cache restored it


def test_a_broken_profile_fails_the_run_with_the_key_named(team):
    proc = deployment_run(team, "mrt-pipeline/local", ok=False, profile="profiles/params_broken.yaml")
    assert proc.returncode != 0
    state = run_state(team, flow_run_id(proc))
    assert state["type"] == "FAILED"
    assert "params_broken.yaml" in state["message"] + run_logs(team, flow_run_id(proc))
    assert "rl.lr" in run_logs(team, flow_run_id(proc))
    assert not (team["repo"] / "runs" / "broken").exists()  # refused before any workspace was made


def test_nightly_retraining_registers_a_champion_then_skips(team, tmp_path):
    repo = team["repo"]
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    first = deployment_run(team, "mrt-retrain/nightly", profile="profiles/params_smoke.yaml")
    decision = json.loads((repo / "runs" / "retrain" / "decisions" / "last.json").read_text())
    assert decision["promote"] and decision["alias"] == "champion" and decision["version"] == "1"
    assert "first candidate" in decision["reason"]
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("mrt-policy", "champion")
    for tag in ("mrt.git_commit", "mrt.params_hash", "mrt.data_hash", "mrt.code_hash", "mrt.pipeline_run",
                "mrt.dvc_path"):
        assert version.tags.get(tag), tag
    assert version.tags["mrt.dvc_path"] == "rl/mrt_dense/s0/r1/model"
    assert str(repo / "runs") not in version.source  # a copy in MLflow's artifacts
    # what a user types, in a fresh process (this one's MLflow URIs were set by earlier tests)
    user = ("import mlflow.artifacts; from transformers import AutoModelForCausalLM; "
            "folder = mlflow.artifacts.download_artifacts(artifact_uri='models:/mrt-policy@champion', "
            f"dst_path={str(tmp_path / 'champion')!r}); "
            "print(AutoModelForCausalLM.from_pretrained(folder).config.model_type)")
    loaded = subprocess.run([sys.executable, "-c", user], env=dict(team["env"], MLFLOW_TRACKING_URI=uri),
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.strip(), loaded.stderr[-3000:]
    assert "registered mrt-policy v1" in run_logs(team, flow_run_id(first))
    candidates = sorted(p.name for p in (repo / "runs" / "candidates").iterdir())
    second = deployment_run(team, "mrt-retrain/nightly", profile="profiles/params_smoke.yaml")
    assert "skipped: code, params and data are those of mrt-policy v1" in run_logs(team, flow_run_id(second))
    assert sorted(p.name for p in (repo / "runs" / "candidates").iterdir()) == candidates  # touched nothing
    assert [str(v.version) for v in client.search_model_versions("name='mrt-policy'")] == ["1"]
    # a changed param: a second candidate, evaluated against the champion on the same problems
    profile = repo / "profiles" / "params_smoke.yaml"
    profile.write_text(profile.read_text().replace("lr: 0.001", "lr: 0.002"))
    third = deployment_run(team, "mrt-retrain/nightly", profile="profiles/params_smoke.yaml")
    assert "changed since mrt-policy v1: params" in run_logs(team, flow_run_id(third))
    decision = json.loads((repo / "runs" / "retrain" / "decisions" / "last.json").read_text())
    assert decision["version"] == "2" and decision["previous_champion"] == "1"
    assert {"champion", "challenger", "gain", "gain_low", "gain_high"} <= set(decision["compared"])
    assert decision["n_problems"] == decision["compared"]["n_problems"] > 0
    holder = client.get_model_version_by_alias("mrt-policy", decision["alias"])
    assert str(holder.version) == "2"  # @champion if promoted, else @challenger
    champion = client.get_model_version_by_alias("mrt-policy", "champion")
    assert str(champion.version) == ("2" if decision["promote"] else "1")

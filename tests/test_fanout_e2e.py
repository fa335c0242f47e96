"""Fan-out for real: a Prefect server, a process pool standing in for the GPU pool (2 stage
jobs at once), a DVC remote in a directory, and the smoke profile (2 arms x 2 seeds, 15 stages).
The orchestrator (``python -m flows.fanout``) is stopped mid-fan-out with SIGTERM and run
again: every stage ran exactly once, each as its own flow run in its own checkout, and the
outputs and ``dvc.lock`` are byte-identical to a sequential ``dvc repro`` of the same commit.
Then a committed change that breaks one stage fails the orchestrator with its name."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.test_team import committed_project, local_team, run, run_logs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
COMPARED = ("dvc.lock", "metrics/evaluate.json", "data/dataset/meta.json", "rl/mrt_dense/s1/r1/rollouts.jsonl",
            "rl/grpo/s0/r1/model/model.safetensors", "reports/comparison.md")
N_STAGES = 15  # 5 upstream, rl_start and rl_round for 2 arms x 2 seeds, evaluate, report


def commit(repo: Path, message: str) -> None:
    for args in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Server, pools, every deployment and a worker on the stage pool (``--limit 2``), over a
    committed project whose DVC config and ignores are in the commit, as in a real clone."""
    root = tmp_path_factory.mktemp("fanout")
    repo = committed_project(root / "repo")
    with local_team(root, repo, ["--pool", "mrt-stages", "--limit", "2"]) as server:
        yield {"repo": repo, "root": root, "remote": root / "remote", **server}


def orchestrator(cluster, log_name: str) -> subprocess.Popen:
    log = open(cluster["root"] / log_name, "wb")
    return subprocess.Popen([sys.executable, "-m", "flows.fanout", "--remote", str(cluster["remote"]),
                             "--concurrency", "2"], cwd=cluster["repo"], env=cluster["env"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stage_runs(cluster) -> list[dict]:
    deps = httpx.post(f"{cluster['api']}/deployments/filter", json={}, timeout=30).json()
    stage_dep = next(d["id"] for d in deps if d["name"] == "local" and "stage" in d["tags"])
    return httpx.post(f"{cluster['api']}/flow_runs/filter",
                      json={"deployments": {"id": {"any_": [stage_dep]}}, "limit": 200}, timeout=30).json()


def states(runs) -> list[str]:
    return [r["state"]["type"] for r in runs]


def test_fan_out_killed_and_rerun_matches_a_sequential_repro(cluster):
    repo, root = cluster["repo"], cluster["root"]
    seq = root / "sequential"
    subprocess.run(["git", "clone", "-q", str(repo), str(seq)], check=True)
    reference = run(["dvc", "repro"], seq, cluster["env"])
    assert reference.returncode == 0

    first = orchestrator(cluster, "orchestrator-1.log")
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:  # stop it once some stages are done and others are running
        assert first.poll() is None, (root / "orchestrator-1.log").read_text()[-4000:]
        now = states(stage_runs(cluster))
        if now.count("COMPLETED") >= 3 and {"RUNNING", "PENDING", "SCHEDULED"} & set(now):
            break
        time.sleep(2)
    os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(120) != 0  # it stops at once, its stage jobs go on
    in_flight = [r for r in stage_runs(cluster) if r["state"]["type"] != "COMPLETED"]
    assert in_flight, "nothing was running when the orchestrator stopped"

    second = orchestrator(cluster, "orchestrator-2.log")
    assert second.wait(1800) == 0, (root / "orchestrator-2.log").read_text()[-6000:]
    out = (root / "orchestrator-2.log").read_text()
    assert "was started by an earlier orchestrator run" in out  # found by its key, not started twice

    runs = stage_runs(cluster)
    stages = [r["parameters"]["stage"] for r in runs]
    assert sorted(stages) == sorted(set(stages)) and len(stages) == N_STAGES  # one flow run per stage
    assert set(states(runs)) == {"COMPLETED"}
    assert {r["id"] for r in in_flight} <= {r["id"] for r in runs}  # the runs in flight at the stop were waited for
    for r in runs:  # each job ran its own stage only: the upstream ones came from the remote
        assert f"(ran: {r['parameters']['stage']})" in run_logs(cluster, r["id"])
    for path in COMPARED:
        assert (repo / path).read_bytes() == (seq / path).read_bytes(), path
    assert not list((repo / "runs" / ".checkouts").glob("*/*")), "a checkout was left behind"


def test_a_stage_that_fails_fails_the_orchestrator_with_its_name(cluster):
    repo = cluster["repo"]
    if not (repo / "dvc.lock").exists():
        pytest.skip("needs the fan-out of the test before")
    report = repo / "tasks" / "report.py"
    report.write_text('raise SystemExit("the report is broken on purpose")\n' + report.read_text())
    commit(repo, "break the report")
    before = len(stage_runs(cluster))
    proc = orchestrator(cluster, "orchestrator-3.log")
    assert proc.wait(900) != 0
    out = (cluster["root"] / "orchestrator-3.log").read_text()
    assert "report" in out and "1 stage(s) failed" in out, out[-4000:]
    runs = stage_runs(cluster)
    failed = [r for r in runs if r["state"]["type"] == "FAILED"]
    assert [r["parameters"]["stage"] for r in failed] == ["report"] and len(runs) == before + 1  # only it ran

    again = orchestrator(cluster, "orchestrator-4.log")  # the same commit again: the failure is retried
    assert again.wait(900) != 0
    runs = stage_runs(cluster)
    retried = [r for r in runs if r["state"]["type"] == "FAILED" and r["id"] != failed[0]["id"]]
    assert len(runs) == before + 2 and [r["idempotency_key"] for r in retried] == [f"{failed[0]['idempotency_key']}#2"]


def test_the_gpu_job_the_server_resolves_is_the_one_asked_for(cluster):
    """A flow run of ``mrt-stage/gpu`` created on the server with the job variables the
    orchestrator sends for an RL round, resolved as the Kubernetes worker resolves it (the pool's
    template from the server, the deployment's and the run's variables merged), then validated
    strictly. No worker runs it: nothing here can start a pod."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    from mrt_lib.config import load_params
    from mrt_lib.fanout import job_variables
    from mrt_lib.k8s_jobs import strict_manifest, validate_manifest

    resources = load_params(REPO / "params.yaml").resources.for_stage("rl_round@mrt_dense-0-round1")
    image = "registry.example.com/mrt-pipeline:abc1234"

    async def resolve():
        async with get_client() as client:
            pool = await client.read_work_pool("mrt-gpu")
            accepted = set(pool.base_job_template["variables"]["properties"])
            variables, dropped = job_variables(resources, image, accepted)
            assert dropped == []
            run = run_deployment("mrt-stage/gpu", parameters={"stage": "rl_round@mrt_dense-0-round1",
                                                              "commit": "0" * 40}, job_variables=variables,
                                 timeout=0, as_subflow=False)
            run = await run
            config = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
                run, client=client, work_pool=pool, worker_name="resolution-check")
            await client.delete_flow_run(run.id)
            return config.job_manifest

    with temporary_settings({PREFECT_API_URL: cluster["api"]}):
        manifest = run_coro_as_sync(resolve())
    validate_manifest(strict_manifest(manifest))
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image
    assert container["resources"]["limits"]["nvidia.com/gpu"] == resources.gpus
    assert container["resources"]["limits"]["memory"] == resources.memory
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    shm = next(v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
    assert shm["emptyDir"]["sizeLimit"] == resources.shm_size
    assert {"name": shm["name"], "mountPath": "/dev/shm"}.items() <= next(
        m for m in container["volumeMounts"] if m["name"] == shm["name"]).items()
    assert manifest["spec"]["backoffLimit"] == 0
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MRT_PROCESSES"] == str(resources.processes) and env["PREFECT__FLOW_RUN_ID"]

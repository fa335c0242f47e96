"""A flow stopped from outside (SIGTERM, or SIGINT as Ctrl-C sends it) while a stage runs ends
cleanly: the flow process exits, the stage's whole process group (DVC and the stage's Python)
is gone with it, and so is the flow's temporary Prefect server. Before, the stage ran on."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
BIN = Path(sys.executable).parent


def processes_in(folder: Path) -> list[tuple[int, str]]:
    """Live processes whose working directory is ``folder`` (the flow, its server, its stages)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == folder:
                found.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    return found


def wait_for(predicate, timeout_s: float, what: str, detail=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {detail()}")


@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
                         ids=["SIGTERM", "SIGINT", "Ctrl-C"])
def test_a_stopped_flow_takes_its_running_stage_and_server_with_it(tmp_path, sig, group):
    ws = copy_project(tmp_path / "ws").resolve()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=ws, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MRT_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = tmp_path / "flow.log"
    with open(log, "wb") as out:
        # a runner that started us in the background may have set SIGINT to ignored (inherited):
        # the flow gets the default disposition, as in a terminal
        flow = subprocess.Popen([sys.executable, "-m", "flows.pipeline"], cwd=ws, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: any("tasks.train_base" in cmd for _, cmd in processes_in(ws)) or flow.poll() is not None,
                 300, "train_base to start")
        assert flow.poll() is None, log.read_text()[-3000:]
        if group:  # what Ctrl-C in a terminal does: the flow and its server both get it
            os.killpg(flow.pid, sig)
        else:  # to the flow process only: its stage and server must follow on their own
            flow.send_signal(sig)
        flow.wait(120)
        wait_for(lambda: not processes_in(ws), 60, "every process of the flow to end",
                 lambda: f"{processes_in(ws)}\n{log.read_text()[-3000:]}")
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
        for pid, _ in processes_in(ws):
            os.kill(pid, signal.SIGKILL)
    assert flow.returncode != 0
    assert not (ws / "models" / "base").exists()  # the stage never finished
    assert (ws / ".prefect" / "prefect.db").exists()  # the workspace's own Prefect home

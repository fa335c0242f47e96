"""Prefect's temporary API server, owned by the process that runs a flow.

Locally the flows use Prefect's ephemeral mode: on first use, Prefect starts a temporary API
server in a subprocess and stops it at exit. A flow process killed with SIGKILL cannot stop
it, and the server runs on forever. ``ephemeral_api`` starts that same server up front (the
one Prefect would start: ``SubprocessASGIServer()``, so the flow's client uses it), records its
pid beside ours under ``PREFECT_HOME``, and stops it on exit; at the next start it stops the
servers whose recorded owner is gone. Nothing is managed when ``PREFECT_API_URL`` names a
server (a team's, or Prefect Cloud). Flow bodies call ``note_flow_run`` so that the runs of a
killed flow, which Prefect would show RUNNING forever, are marked CRASHED at the next start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mrt_lib.common import kill_point, pid_alive, write_json_atomic

SERVER_APP = "prefect.server.api.server:create_app"  # in the command line of Prefect's temporary server


class ServerUnreachable(RuntimeError):
    """``PREFECT_API_URL`` names a server that does not answer; the message says what to do."""


def check_server(api_url: str, timeout_s: float = 10.0) -> None:
    """Raises ``ServerUnreachable`` unless the Prefect API at ``api_url`` answers its health check."""
    import httpx

    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServerUnreachable(
            f"the Prefect server at PREFECT_API_URL={api_url} does not answer ({type(exc).__name__}: {exc}); "
            "start it (make server) or unset PREFECT_API_URL to run on a temporary local server") from None


def records_dir() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "mrt-ephemeral"


def _is_prefect_server(pid: int) -> bool:
    """Only a process whose command line is Prefect's temporary server is ever stopped (Linux;
    elsewhere nothing is, rather than risk a reused pid)."""
    try:
        return SERVER_APP in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _stop(pid: int, grace_s: float = 5.0) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid) and _is_prefect_server(pid):
        time.sleep(0.1)
    if pid_alive(pid) and _is_prefect_server(pid):
        os.kill(pid, signal.SIGKILL)


def _orphaned_records(folder: Path) -> list[tuple[Path, dict]]:
    """Records of flow processes of this host that are gone (another host's, or a live owner's,
    are left alone)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("host") == socket.gethostname() and not pid_alive(int(record["owner"])):
            out.append((path, record))
    return out


def stop_orphaned_servers(folder: Path | None = None) -> list[int]:
    """Stop the temporary servers recorded by flow processes of this host that are gone; returns
    their pids. Their records stay until ``crash_orphaned_runs`` has read their flow runs."""
    stopped = []
    for _, record in _orphaned_records(folder or records_dir()):
        server = int(record["server"])
        if pid_alive(server) and _is_prefect_server(server):
            _stop(server)
            stopped.append(server)
            print(f"stopped Prefect's temporary server (pid {server}) left by a killed flow (pid {record['owner']})",
                  file=sys.stderr)
    return stopped


def crash_orphaned_runs(folder: Path | None = None) -> list[str]:
    """Mark CRASHED the flow runs that killed flow processes of this host left unfinished (they
    would stay RUNNING forever), then drop those processes' records; returns the run ids. Needs
    the API (the next flow's own server): the runs live in Prefect's database."""
    from prefect import get_client
    from prefect.states import Crashed

    marked = []
    for path, record in _orphaned_records(folder or records_dir()):
        runs = record.get("flow_runs", [])
        try:
            with get_client(sync_client=True) as client:
                for run_id in runs:
                    state = client.read_flow_run(run_id).state
                    if state is not None and not state.is_final():
                        message = f"its process (pid {record['owner']}) was killed; found by the next flow"
                        client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                        marked.append(run_id)
                        print(f"marked flow run {run_id} crashed: {message}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must never stop the new flow
            print(f"could not mark the flow runs of killed pid {record['owner']} crashed: {exc}", file=sys.stderr)
        path.unlink(missing_ok=True)
    return marked


def _record() -> Path:
    return records_dir() / f"{socket.gethostname()}-{os.getpid()}.json"


def note_flow_run() -> None:
    """First thing in a flow's body: add its run id to this process's record, so that a kill
    leaves a run the next start can mark CRASHED. Nothing to do without a record (a server
    named by ``PREFECT_API_URL``, or a flow called from another one's process)."""
    from prefect.runtime import flow_run

    record = _record()
    if record.exists() and flow_run.id:
        data = json.loads(record.read_text())
        data["flow_runs"] = [*data.get("flow_runs", []), str(flow_run.id)]
        write_json_atomic(record, data)
    kill_point("flow.started")


@contextmanager
def ephemeral_api() -> Iterator[str | None]:
    """For a flow's entry point: the API URL of this process's own temporary server (None when
    ``PREFECT_API_URL`` names a server, which is then used as it is, once it answers). Servers and flow runs left
    by killed flows of this host are cleaned up first."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        check_server(PREFECT_API_URL.value())
        yield None
        return
    folder = records_dir()
    stop_orphaned_servers(folder)
    server = SubprocessASGIServer()
    with _children_in_own_session():
        server.start()
    crash_orphaned_runs(folder)
    record = _record()
    write_json_atomic(record, {"host": socket.gethostname(), "owner": os.getpid(),
                               "server": server.server_process.pid, "port": server.port})
    try:
        yield server.api_url
    finally:
        _drain_logs()  # the flow's last log lines go out while the server still listens
        server.stop()
        record.unlink(missing_ok=True)


@contextmanager
def _children_in_own_session() -> Iterator[None]:
    """Processes started meanwhile get a session of their own. For the temporary server: Ctrl-C
    in a terminal sends SIGINT to the whole foreground process group, and a server in the flow's
    group died with it while the flow, still stopping, retried its API calls for minutes
    (measured). In its own session only this process stops it (or the next start, if this one is
    killed). Prefect starts it with ``subprocess.Popen`` and takes no such option."""
    real = subprocess.Popen

    class Popen(real):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    subprocess.Popen = Popen
    try:
        yield
    finally:
        subprocess.Popen = real


def _drain_logs() -> None:
    try:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    except Exception:  # noqa: BLE001 - logs are best effort; stopping the server is not
        pass

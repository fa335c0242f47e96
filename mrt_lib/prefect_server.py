"""Prefect's temporary API server, owned by the process that runs a flow.

Locally the flows use Prefect's ephemeral mode: on first use, Prefect starts a temporary API
server in a subprocess and stops it at exit. A flow process killed with SIGKILL cannot stop
it, and the server runs on forever. ``ephemeral_api`` starts that same server up front (the
one Prefect would start: ``SubprocessASGIServer()``, so the flow's client uses it), records its
pid beside ours under ``PREFECT_HOME``, and stops it on exit; at the next start it stops the
servers whose recorded owner is gone. Nothing is managed when ``PREFECT_API_URL`` names a
server (a team's, or Prefect Cloud).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mrt_lib.common import kill_point, pid_alive, write_json_atomic

SERVER_APP = "prefect.server.api.server:create_app"  # in the command line of Prefect's temporary server


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


def stop_orphaned_servers(folder: Path | None = None) -> list[int]:
    """Stop the temporary servers recorded by flow processes of this host that are gone; returns
    their pids. A record whose owner lives, or of another host, is left alone."""
    folder = folder or records_dir()
    stopped = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("host") != socket.gethostname() or pid_alive(int(record["owner"])):
            continue
        server = int(record["server"])
        if pid_alive(server) and _is_prefect_server(server):
            _stop(server)
            stopped.append(server)
            print(f"stopped Prefect's temporary server (pid {server}) left by a killed flow (pid {record['owner']})",
                  file=sys.stderr)
        path.unlink(missing_ok=True)
    return stopped


@contextmanager
def ephemeral_api() -> Iterator[str | None]:
    """For a flow's entry point: the API URL of this process's own temporary server (None when
    ``PREFECT_API_URL`` names a server, which is then used as it is)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        yield None
        return
    folder = records_dir()
    stop_orphaned_servers(folder)
    server = SubprocessASGIServer()
    server.start()
    record = folder / f"{socket.gethostname()}-{os.getpid()}.json"
    write_json_atomic(record, {"host": socket.gethostname(), "owner": os.getpid(),
                               "server": server.server_process.pid, "port": server.port})
    kill_point("flow.server_started")
    try:
        yield server.api_url
    finally:
        server.stop()
        record.unlink(missing_ok=True)

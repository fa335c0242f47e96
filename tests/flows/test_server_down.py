"""A team's server that is down is one clear line naming what to do, not minutes of retries
and a traceback: for a flow from the command line and for ``make status``."""

import socket

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import pipeline, status
from mrt_lib.prefect_server import ServerUnreachable, check_server
from tests.conftest import REPO


@pytest.fixture
def dead_api():
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def test_check_server_names_the_url_and_the_fix(dead_api):
    expected = r"PREFECT_API_URL=http://127\.0\.0\.1:\d+/api does not answer.*make server"
    with pytest.raises(ServerUnreachable, match=expected):
        check_server(dead_api, timeout_s=5)


def test_a_flow_against_a_dead_server_exits_1_before_any_work(dead_api, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(["--profile", str(REPO / "tests" / "params_smoke.yaml"), "--workdir", str(tmp_path / "ws")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "does not answer" in err and "make server" in err and "Traceback" not in err
    assert not (tmp_path / "ws").exists()


def test_status_against_a_dead_server_still_prints_the_champion(dead_api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRT_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(SystemExit) as exit_info:
        status.main(["--repo-dir", str(REPO)])
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert "does not answer" in out.err
    assert "mrt-policy@champion: none" in out.out

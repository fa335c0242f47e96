"""Every flow's command line reaches its flow: a missing params file is a config error (exit 2,
one line) before anything is written, not a TypeError on the way there."""

import pytest
from prefect import flow

from flows import profile_run, retrain, rl_tuning
from flows.pipeline import run_flow


@pytest.mark.parametrize("main,argv", [
    (rl_tuning.main, ["--params", "{tmp}/missing.yaml", "--root", "{tmp}", "--arms", "grpo", "--out", "{tmp}/o.json"]),
    (profile_run.main, ["{tmp}/missing.yaml", "--workdir", "{tmp}/ws"]),
    (retrain.main, ["--profile", "{tmp}/missing.yaml", "--repo-dir", "{tmp}"]),
], ids=["rl_tuning", "profile_run", "retrain"])
def test_a_missing_params_file_is_a_config_error(main, argv, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in argv])
    assert exit_info.value.code == 2, capsys.readouterr()
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, not even a Prefect home


@flow(name="mrt-test-home")
def where_is_home() -> str:
    from prefect.settings import PREFECT_HOME

    return str(PREFECT_HOME.value())


def test_a_new_workspace_gets_its_own_prefect_home(tmp_path, monkeypatch):
    """A profile's workspace that does not exist yet (``make headline`` on a fresh clone): the
    temporary server's database is created in its ``.prefect/``."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    ws = tmp_path / "runs" / "new"
    assert run_flow(where_is_home, ws) == str(ws.resolve() / ".prefect")
    assert (ws / ".prefect" / "prefect.db").is_file()

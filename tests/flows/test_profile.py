"""The profile flow's workspace: a second run of a profile never touches a running one's code."""

import os

import pytest

from flows.pipeline import mrt_pipeline
from mrt_lib.common import LOCKS, LockedError
from tests.conftest import REPO
from tests.mrt_lib.test_common import hold


def test_a_second_run_of_a_profile_leaves_the_running_workspace_alone(tmp_path):
    ws = tmp_path / "ws"
    (ws / "mrt_core").mkdir(parents=True)
    (ws / "mrt_core" / "marker.py").write_text("# the running run's code\n")
    fd = hold(ws / LOCKS / "workspace.lock")
    try:
        with pytest.raises(LockedError, match="is already running"):
            mrt_pipeline.fn(str(REPO / "tests" / "params_smoke.yaml"), str(REPO), str(ws))  # the flow's body, no engine
    finally:
        os.close(fd)
    assert sorted(p.name for p in (ws / "mrt_core").iterdir()) == ["marker.py"]  # not re-copied
    assert not (ws / "params.yaml").exists()

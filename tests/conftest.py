"""Shared fixtures. Everything runs offline: no hub downloads, no telemetry."""

import os
import shutil
from pathlib import Path

import pytest

from mrt_lib.common import OFFLINE_ENV, QUIET_ENV  # what every entry point sets

for key, value in {**QUIET_ENV, **OFFLINE_ENV}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
SMOKE_PARAMS = REPO / "tests" / "params_smoke.yaml"


@pytest.fixture
def smoke_params():
    from mrt_lib.config import load_params

    return load_params(SMOKE_PARAMS)


@pytest.fixture
def paths(tmp_path):
    from mrt_lib.common import Paths

    return Paths(root=tmp_path)


@pytest.fixture(scope="session")
def trained_smoke(tmp_path_factory):
    """Dataset, base model, backtrack traces, warm-start model and the RL rounds of the smoke
    profile, made once per session (tests that write must work on a copy: see ``copy_outputs``)."""
    from mrt_lib.common import Paths, setup_process
    from mrt_lib.config import load_params
    from tasks.build_dataset import run_build_dataset
    from tasks.sft_warmstart import run_sft_warmstart
    from tasks.synthesize_backtracks import run_synthesize_backtracks
    from tasks.train_base import run_train_base

    params = load_params(SMOKE_PARAMS)
    setup_process(params.runtime.torch_threads, 0)
    paths = Paths(root=tmp_path_factory.mktemp("smoke"))
    run_build_dataset(params, paths)
    summary = run_train_base(params, paths)
    run_synthesize_backtracks(params, paths)
    run_sft_warmstart(params, paths)
    run_rl(params, paths)
    return params, paths, summary


def run_rl(params, paths) -> None:
    """Every RL stage of the params, as DVC expands the matrix: start, then the rounds in order."""
    from tasks.rl_round import run_rl_round
    from tasks.rl_start import run_rl_start

    for arm in params.rl.arms:
        for seed in params.rl.seeds:
            run_rl_start(params.rl.start, paths, arm, seed)
            for link in params.rl.rounds:
                run_rl_round(params, paths, arm, seed, link.n)


def copy_outputs(paths, dest: Path, *names: str):
    """A fresh ``Paths`` under ``dest`` holding copies of the named outputs of ``paths``."""
    from mrt_lib.common import Paths

    other = Paths(root=dest)
    for name in names:
        shutil.copytree(getattr(paths, name), getattr(other, name))
    return other


def copy_project(dest: Path) -> Path:
    """The project's pipeline files in a fresh directory (code, dvc.yaml, smoke params)."""
    from mrt_lib.layout import PACKAGES

    for name in PACKAGES:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    shutil.copy(REPO / ".dvcignore", dest / ".dvcignore")
    shutil.copy(SMOKE_PARAMS, dest / "params.yaml")
    return dest

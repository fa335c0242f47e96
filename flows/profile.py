"""Run the pipeline under another params profile, in a workspace of its own.

A profile is a complete params file (``profiles/params_*.yaml``), e.g. the headline experiment.
Its workspace (``runs/<name>/`` by default, git-ignored) gets a fresh copy of the pipeline code,
``dvc.yaml`` and the profile as ``params.yaml``, then the same Prefect flow runs every stage
through DVC there. Re-running skips what is done and resumes an interrupted RL round; a code
change re-runs what depends on it. Outputs, ``dvc.lock`` and ``mlflow.db`` stay in the workspace,
so the main pipeline's are never touched.

    python -m flows.profile profiles/params_headline.yaml      # or: make headline
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import yaml
from prefect import flow, task

from flows.pipeline import _dvc, mrt_pipeline, run_flow, workspace_lock
from mrt_lib.common import entry_environment, write_text_atomic
from mrt_lib.config import load_params_or_exit, read_params_file
from mrt_lib.layout import PACKAGES
from mrt_lib.prefect_server import note_flow_run

REPO = Path(__file__).resolve().parents[1]


def workspace_name(profile: Path) -> str:
    """``params_headline.yaml`` -> ``headline``."""
    return profile.stem.removeprefix("params_") or profile.stem


@task(name="prepare-workspace", cache_policy=None)
def prepare_workspace(profile: str, workdir: str) -> str:
    """Copy the code, ``dvc.yaml`` and the profile (as ``params.yaml``, its ``inherit`` chain
    resolved) into ``workdir``, and make it a DVC repository on first use. Returns the
    workspace path."""
    ws = Path(workdir)
    ws.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        shutil.rmtree(ws / name, ignore_errors=True)
        shutil.copytree(REPO / name, ws / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")
    # the profile resolved (its `inherit` chain merged): DVC reads one complete params.yaml
    write_text_atomic(ws / "params.yaml", yaml.safe_dump(read_params_file(profile), sort_keys=False,
                                                         allow_unicode=True))
    if not (ws / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    if not (ws / ".dvc").exists():
        subprocess.run([_dvc(), "init", "-q"], cwd=ws, check=True)
    shutil.copy(REPO / ".dvcignore", ws / ".dvcignore")  # after init, which writes a bare one
    return str(ws)


@flow(name="mrt-profile", log_prints=True)
def run_profile(profile: str, workdir: str | None = None) -> str:
    """Run every stage of the pipeline under ``profile`` in its workspace; returns the path of
    the report's comparison of the RL arms."""
    note_flow_run()
    path = Path(profile)
    load_params_or_exit(path)  # a bad profile stops here, before any workspace is made
    workdir = workdir or str(REPO / "runs" / workspace_name(path))
    with workspace_lock(workdir):  # before the copy: a second run must not replace the code of a running one
        ws = prepare_workspace(str(path), workdir)
        mrt_pipeline(repo_dir=ws)
    report = Path(ws) / "reports" / "comparison.md"
    print(f"profile {path.name}: report in {Path(ws) / 'reports'}")
    return str(report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a complete params file, e.g. profiles/params_headline.yaml")
    parser.add_argument("--workdir", default=None, help="workspace (default runs/<profile name>)")
    args = parser.parse_args(argv)
    entry_environment(needs_hub=True)  # telemetry off; each stage decides about the hub for itself
    run_flow(run_profile, profile=args.profile, workdir=args.workdir)


if __name__ == "__main__":
    main()

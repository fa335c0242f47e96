"""Where a pipeline run writes: the repository itself, or a profile's workspace of its own.

The default profile (the repository's ``params.yaml``) runs in the repository, like ``make
flow`` and ``dvc repro``. Any other profile P runs in ``runs/<P>/`` (``params_headline.yaml``
-> ``runs/headline``): a fresh copy of the pipeline code, ``dvc.yaml`` and the profile as
``params.yaml`` (its ``inherit`` chain resolved), a DVC repository of its own whose cache (and
so DVC's run cache) is the repository's, so an upstream stage whose params equal the default's
is restored from the cache instead of re-run. One flow at a time per workspace (a file lock).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import task

from mrt_lib.common import LOCKS, exclusive_lock, write_text_atomic
from mrt_lib.config import read_params_file
from mrt_lib.layout import PACKAGES

DEFAULT_PROFILE = "params.yaml"


def dvc_executable() -> str:
    """The ``dvc`` beside this Python (the project's virtual environment), else the one on PATH."""
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else (shutil.which("dvc") or "dvc")


def workspace_name(profile: str | Path) -> str:
    """``params_headline.yaml`` -> ``headline``."""
    profile = Path(profile)
    return profile.stem.removeprefix("params_") or profile.stem


def profile_path(profile: str, repo_dir: str | Path) -> Path:
    """``profile`` as a path: relative ones are relative to the repository."""
    path = Path(profile)
    return (path if path.is_absolute() else Path(repo_dir) / path).resolve()


def runs_in_place(profile: str, repo_dir: str | Path, workdir: str | None) -> bool:
    """The repository's own ``params.yaml`` with no workspace asked for: the run is ``make flow``."""
    return workdir is None and profile_path(profile, repo_dir) == (Path(repo_dir) / DEFAULT_PROFILE).resolve()


def workspace_for(profile: str, repo_dir: str | Path, workdir: str | None = None) -> Path:
    """The folder a run of ``profile`` writes to."""
    if runs_in_place(profile, repo_dir, workdir):
        return Path(repo_dir).resolve()
    return Path(workdir).resolve() if workdir else Path(repo_dir).resolve() / "runs" / workspace_name(profile)


def workspace_lock(workspace: str | Path):
    """One flow at a time per workspace (re-entrant within a process)."""
    return exclusive_lock(Path(workspace) / LOCKS / "workspace.lock", f"a pipeline flow in {Path(workspace).resolve()}")


@task(name="prepare-workspace", cache_policy=None)
def prepare_workspace(profile: str, workdir: str, repo_dir: str = ".", share_cache: bool = True) -> str:
    """Copy the code, ``dvc.yaml`` and the profile (as ``params.yaml``, its ``inherit`` chain
    resolved) from ``repo_dir`` into ``workdir``, and make it a DVC repository on first use,
    using the repository's DVC cache when ``share_cache``. Returns the workspace path."""
    repo, ws = Path(repo_dir).resolve(), Path(workdir)
    ws.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        shutil.rmtree(ws / name, ignore_errors=True)
        shutil.copytree(repo / name, ws / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "dvc.yaml", ws / "dvc.yaml")
    # the profile resolved (its `inherit` chain merged): DVC reads one complete params.yaml
    write_text_atomic(ws / "params.yaml", yaml.safe_dump(read_params_file(profile_path(profile, repo)),
                                                         sort_keys=False, allow_unicode=True))
    if not (ws / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    if not (ws / ".dvc").exists():
        subprocess.run([dvc_executable(), "init", "-q"], cwd=ws, check=True)
    shutil.copy(repo / ".dvcignore", ws / ".dvcignore")  # after init, which writes a bare one
    share_dvc_cache(ws, repo if share_cache else None)
    return str(ws)


def share_dvc_cache(ws: Path, repo: Path | None) -> None:
    """Point the workspace's DVC cache at ``repo``'s (its local, untracked config: the path is
    this machine's), or back at its own with ``None``. DVC's run cache lives in the cache, so a
    stage run anywhere with the same command, deps and params is restored, not re-run."""
    if repo is not None and (repo / ".dvc").is_dir():
        args = ["cache.dir", str(repo / ".dvc" / "cache")]
    else:
        args = ["--unset", "cache.dir"]
    proc = subprocess.run([dvc_executable(), "config", "--local", *args], cwd=ws, capture_output=True, text=True)
    if proc.returncode != 0 and args[0] != "--unset":  # unsetting what was never set is fine
        raise RuntimeError(f"dvc config --local {' '.join(args)} failed in {ws}: {proc.stderr.strip()}")

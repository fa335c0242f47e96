"""A stage job's own checkout of one commit, and the DVC remote it exchanges data through.

Fan-out runs every stage in a checkout of its own (never two ``dvc repro`` in one workspace:
DVC's lock makes one fail and drops its stage from ``dvc.lock``). A checkout is a
``git clone --shared`` of the commit (the objects stay in the source repository, so it costs
the working tree only); its data comes from the remote (``dvc repro --pull``) and goes back
there (``dvc push --run-cache``). Because stages run the committed code, fanning out with
uncommitted changes to code or params is refused: they would not be what ran.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mrt_lib.config import ConfigError
from mrt_lib.layout import PACKAGES

# what a stage's result depends on besides data: code, the stage graph, params and DVC's ignores
TRACKED = (*PACKAGES, "dvc.yaml", "params.yaml", ".dvcignore")


class UncommittedChanges(ConfigError):
    """The working tree differs from its commit where a stage job would see it."""


def git(repo: str | Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def head_commit(repo: str | Path) -> str:
    """The commit the stage jobs run; a repository without one is refused with what to do."""
    try:
        return git(repo, "rev-parse", "--verify", "HEAD^{commit}")
    except RuntimeError:
        raise ConfigError(f"{Path(repo).resolve()} is not a git repository with a commit: fan-out runs every "
                          "stage from a commit (git init; git add; git commit)") from None


def uncommitted(repo: str | Path, paths: tuple[str, ...]) -> list[str]:
    """Files under ``paths`` that differ from HEAD: modified, staged, deleted or untracked (not
    ignored). ``git status --porcelain`` lines, sorted."""
    existing = [p for p in paths if (Path(repo) / p).exists() or git(repo, "ls-files", "--", p)]
    if not existing:
        return []
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *existing], cwd=repo,
                          capture_output=True, text=True, check=True)  # not stripped: " M" and "M " differ
    return sorted(line for line in proc.stdout.splitlines() if line.strip())


def refuse_uncommitted(repo: str | Path, profile: str) -> str:
    """HEAD, or ``UncommittedChanges`` listing what to commit first."""
    commit = head_commit(repo)
    if subprocess.run(["git", "cat-file", "-e", f"HEAD:{profile}"], cwd=repo, capture_output=True).returncode != 0:
        raise UncommittedChanges(f"profile {profile} is not in commit {commit[:12]} (untracked or ignored): every "
                                 "stage job reads it at the commit, so add and commit it first")
    changed = uncommitted(repo, (*TRACKED, profile))
    if changed:
        listed = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise UncommittedChanges(f"uncommitted changes in {Path(repo).resolve()} ({listed}): every stage job runs "
                                 f"commit {commit[:12]}, so commit (or stash) them first")
    return commit


def make_checkout(source: str | Path, commit: str, dest: str | Path) -> Path:
    """``dest`` holding ``commit`` of ``source``. One already there at that commit is kept (a
    stage job retried after a kill resumes from the state it left); anything else is replaced."""
    dest = Path(dest)
    if (dest / ".git").exists():
        try:
            # code and graph untouched (params.yaml is the profile's and dvc.lock DVC's: both change)
            if git(dest, "rev-parse", "HEAD") == commit and not git(dest, "status", "--porcelain",
                                                                    "--untracked-files=no", "--", *PACKAGES,
                                                                    "dvc.yaml"):
                return dest
        except RuntimeError:
            pass
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shared = ["--shared"] if Path(str(source)).exists() else []  # a local source: share its objects
    git(dest.parent, "clone", "-q", "--no-checkout", *shared, str(source), str(partial))
    try:
        git(partial, "checkout", "-q", "--detach", commit)
    except RuntimeError:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"commit {commit[:12]} is not in {source}: on a cluster the image must be built from the "
                           "commit the orchestrator runs (docs/CLUSTER.md)") from None
    partial.rename(dest)  # a kill mid-clone leaves a .partial, never a half checkout under the real name
    return dest


def set_dvc_remote(workspace: str | Path, url: str, dvc: str = "dvc", name: str = "mrt") -> None:
    """Make ``url`` the workspace's default DVC remote (its local config: the URL may be this
    machine's path)."""
    args = ["remote", "add", "--local", "--force", "--default", name, url]
    proc = subprocess.run([dvc, *args], cwd=workspace, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {workspace}: {proc.stderr.strip()}")


def default_dvc_remote(workspace: str | Path, dvc: str = "dvc") -> str | None:
    """The URL of the workspace's default DVC remote, or None."""
    name = subprocess.run([dvc, "remote", "default"], cwd=workspace, capture_output=True, text=True).stdout.strip()
    if not name:
        return None
    proc = subprocess.run([dvc, "config", f"remote.{name}.url"], cwd=workspace, capture_output=True, text=True)
    return proc.stdout.strip() or None

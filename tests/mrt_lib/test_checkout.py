"""Stage checkouts: uncommitted code or params refused with what to do, a checkout of the
commit made (and kept for a resumed job only when it is still that commit), the DVC remote set."""

import subprocess
import sys
from pathlib import Path

import pytest

from mrt_lib.checkout import (
    UncommittedChanges,
    default_dvc_remote,
    head_commit,
    make_checkout,
    refuse_uncommitted,
    set_dvc_remote,
)
from mrt_lib.config import ConfigError

DVC = str(Path(sys.executable).parent / "dvc")


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "mrt_lib").mkdir(parents=True)
    (repo / "mrt_lib" / "x.py").write_text("X = 1\n")
    (repo / "params.yaml").write_text("a: 1\n")
    (repo / "notes.txt").write_text("not pipeline code\n")
    (repo / ".gitignore").write_text("__pycache__/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    return repo


def test_a_clean_tree_gives_its_commit(repo):
    (repo / "notes.txt").write_text("edited: not something a stage reads\n")
    (repo / "mrt_lib" / "__pycache__").mkdir()
    (repo / "mrt_lib" / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    assert refuse_uncommitted(repo, "params.yaml") == head_commit(repo) == git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("change, named", [
    ("modified code", r" M mrt_lib/x\.py"), ("untracked code", r"\?\? mrt_lib/new\.py"),
    ("staged params", r"M  params\.yaml"), ("deleted code", r" D mrt_lib/x\.py"),
])
def test_uncommitted_code_or_params_is_refused_naming_the_files(repo, change, named):
    if change == "modified code":
        (repo / "mrt_lib" / "x.py").write_text("X = 2\n")
    elif change == "untracked code":
        (repo / "mrt_lib" / "new.py").write_text("")
    elif change == "staged params":
        (repo / "params.yaml").write_text("a: 2\n")
        git(repo, "add", "params.yaml")
    else:
        (repo / "mrt_lib" / "x.py").unlink()
    with pytest.raises(UncommittedChanges, match=rf"uncommitted changes .*\({named}\).*commit \(or stash\) them"):
        refuse_uncommitted(repo, "params.yaml")


def test_a_profile_that_is_not_in_the_commit_is_refused(repo):
    (repo / ".gitignore").write_text("__pycache__/\nprofiles/\n")
    git(repo, "commit", "-qam", "ignore profiles")
    (repo / "profiles").mkdir()
    (repo / "profiles" / "params_local.yaml").write_text("a: 3\n")  # ignored: git status would not show it
    with pytest.raises(UncommittedChanges, match="profile profiles/params_local.yaml is not in commit"):
        refuse_uncommitted(repo, "profiles/params_local.yaml")


def test_no_commit_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a git repository with a commit"):
        head_commit(tmp_path)


def test_a_checkout_holds_the_commit_and_is_kept_only_while_it_is_that_commit(repo, tmp_path):
    first = head_commit(repo)
    (repo / "mrt_lib" / "x.py").write_text("X = 2\n")
    git(repo, "commit", "-qam", "two")
    second = head_commit(repo)
    dest = tmp_path / "co" / "stage"
    make_checkout(repo, first, dest)
    assert (dest / "mrt_lib" / "x.py").read_text() == "X = 1\n"
    (dest / "state.txt").write_text("a resumed job's state")  # untracked: outputs, checkpoints
    make_checkout(repo, first, dest)
    assert (dest / "state.txt").exists()  # the same commit: kept
    make_checkout(repo, second, dest)
    assert (dest / "mrt_lib" / "x.py").read_text() == "X = 2\n" and not (dest / "state.txt").exists()
    (dest / "mrt_lib" / "x.py").write_text("tampered\n")
    make_checkout(repo, second, dest)
    assert (dest / "mrt_lib" / "x.py").read_text() == "X = 2\n"  # edited code: replaced
    assert not list(dest.parent.glob("*.partial"))


def test_the_remote_becomes_the_default_in_the_local_config(repo, tmp_path):
    subprocess.run([DVC, "init", "-q"], cwd=repo, check=True)
    assert default_dvc_remote(repo, DVC) is None
    set_dvc_remote(repo, str(tmp_path / "remote"), DVC)
    assert default_dvc_remote(repo, DVC) == str(tmp_path / "remote")
    assert "remote" not in (repo / ".dvc" / "config").read_text()  # committed config untouched
    set_dvc_remote(repo, str(tmp_path / "other"), DVC)
    assert default_dvc_remote(repo, DVC) == str(tmp_path / "other")


def test_a_commit_the_source_lacks_is_named(repo, tmp_path):
    with pytest.raises(RuntimeError, match="commit 0123456789ab is not in"):
        make_checkout(repo, "0123456789ab" + "0" * 28, tmp_path / "co")
    assert not (tmp_path / "co").exists() and not list(tmp_path.glob("*.partial"))

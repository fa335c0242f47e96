"""The install is reproducible: ``constraints.txt`` pins every dependency (``make setup``
installs with it), and the environment the tests run in is the pinned one."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
UNPINNED = {"torch", "vllm"}  # torch: installed first by make setup (CPU or CUDA build); vllm: GPU only


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()).groups()
            out[canonicalize_name(name)] = version
    return out


def direct_dependencies() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def test_every_dependency_is_pinned_but_torch():
    pinned = pins()
    assert not (direct_dependencies() - UNPINNED) - pinned.keys()
    assert not UNPINNED & pinned.keys()  # a pinned torch would pull the wrong build on the other kind of machine


def test_the_tests_run_on_the_pinned_versions():
    """Fails after an upgrade that did not refresh constraints.txt (make constraints), or in an
    environment not made by make setup; the numbers in the docs were measured on the pins."""
    pinned = pins()
    off = {name: (metadata.version(name), pinned[name]) for name in direct_dependencies() - UNPINNED
           if metadata.version(name) != pinned[name]}
    assert not off, f"installed vs pinned: {off}; run make setup (or make constraints after a deliberate upgrade)"

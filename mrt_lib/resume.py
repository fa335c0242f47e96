"""The one resume contract of the long stages (base training, warm-start SFT, RL rounds).

A stage's resume state lives in one folder under ``checkpoints/`` (outside DVC's outputs, which
DVC deletes before it re-runs a stage) and carries the fingerprint of everything that determines
the stage's output: its params, the hashes of the data and models it reads, and the code version
(a hash of the stage's code dependencies as ``dvc.yaml`` lists them, since a profile workspace
has no git commit). A state with another fingerprint, or none, is discarded with a logged line
before anything is loaded from it; a completed stage removes its state. States are written to a
temporary sibling and renamed (``mrt_lib.common.atomic_path``), so a kill never leaves half a
state behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrt_lib.common import write_text_atomic
from mrt_lib.layout import PACKAGES

FINGERPRINT_FILE = "fingerprint.txt"
CODE_ROOT = Path(__file__).resolve().parents[1]  # the repository or profile workspace the code runs from


class UnsafeStateError(RuntimeError):
    """A resume state holding more than tensors and plain data (a crafted or foreign pickle):
    refused by the libraries' ``weights_only`` loads, never run."""


def unsafe_state(resume: "ResumeState", exc: Exception) -> UnsafeStateError:
    """Remove a refused state (loading it may already have changed the model in memory, so the
    stage stops instead of starting over in the same process) and say what happened."""
    resume.clear()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnsafeStateError(f"the resume state in {resume.folder} holds more than tensors and plain data ({first}); "
                            f"it was not loaded and has been removed: run the stage again to start over")


def fingerprint(**parts: Any) -> str:
    """A hash of ``parts`` as canonical JSON (keys sorted): equal parts, equal fingerprints."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def code_version(stage: str, root: Path = CODE_ROOT) -> str:
    """A hash of the code ``stage`` depends on: the files and folders of its ``deps`` in
    ``root/dvc.yaml`` that are project code (every ``.py`` under a folder, in sorted order), or
    every package of the project where there is no ``dvc.yaml``."""
    dvc_yaml = root / "dvc.yaml"
    if dvc_yaml.exists():
        deps = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]["deps"]
        code = [d for d in deps if d.split("/")[0] in PACKAGES]
    else:
        code = list(PACKAGES)
    digest = hashlib.sha256()
    for dep in sorted(code):
        path = root / dep
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f.relative_to(root).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ResumeState:
    """The resume state of one stage run: ``folder`` and the ``fingerprint`` it must carry."""

    folder: Path
    fingerprint: str
    stage: str

    def usable(self) -> bool:
        """True when a state with this fingerprint is there. A state with another fingerprint (or
        none) is removed, saying so, so nothing of it (a best snapshot included) can reach an
        output."""
        if not self.folder.exists():
            return False
        mark = self.folder / FINGERPRINT_FILE
        if mark.exists() and mark.read_text().strip() == self.fingerprint:
            return True
        print(f"{self.stage}: discarding the resume state in {self.folder}: made with other params, inputs or code")
        self.clear()
        return False

    def open(self) -> Path:
        """The folder, created and marked with the fingerprint (for trainers that write their own
        checkpoints into it); an unusable state there is discarded first."""
        self.usable()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mark(self.folder)
        return self.folder

    def mark(self, folder: Path) -> None:
        """Write the fingerprint into ``folder`` (a state being assembled before its rename)."""
        write_text_atomic(folder / FINGERPRINT_FILE, self.fingerprint + "\n")

    def clear(self) -> None:
        """Remove the state: the stage completed, or the state is stale."""
        shutil.rmtree(self.folder, ignore_errors=True)

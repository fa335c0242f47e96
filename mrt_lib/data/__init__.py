"""The dataset every stage reads: its schema, and loading a split (``data/dataset/<split>.jsonl``,
written by the ``build_dataset`` stage)."""

from __future__ import annotations

from mrt_core.envs.base import Problem
from mrt_lib.common import Paths, read_json, read_jsonl

SCHEMA_VERSION = 1
SCHEMA = {
    "id": "string, unique problem id",
    "prompt": "string, the rendered prompt the model sees",
    "answer": "string, the hidden reference answer",
    "env": "string, environment family that renders and checks the problem",
    "split": "string, one of train|val|test",
}
SPLITS = ("train", "val", "test")
BAD_REASONS = ("unreadable", "missing_problem", "missing_answer", "unparseable_answer", "too_long")
REPORT_LIMIT = 200  # rows listed by number in meta.json per report (counts are always complete)


class SourceError(RuntimeError):
    """The configured source cannot be read (missing file, unknown dataset, missing column)."""


class DatasetError(RuntimeError):
    """The source was read but its rows fail a check (too many bad rows, contamination with
    ``action: fail``, duplicate ids); the message names the rows and the setting to change."""


def load_split(paths: Paths, split: str) -> list[dict]:
    """Rows of one split; a clear error if the dataset stage has not run."""
    path = paths.dataset / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the build_dataset stage first (dvc repro build_dataset)")
    return read_jsonl(path)


def load_problems(paths: Paths, split: str) -> list[Problem]:
    """The problems of one split, as ``Problem`` objects."""
    return [Problem(id=r["id"], prompt=r["prompt"], answer=r["answer"]) for r in load_split(paths, split)]


def dataset_hash(paths: Paths) -> str:
    """The content hash of the built dataset (``meta.json``): what the splits hold, for the
    fingerprints of the stages that read them."""
    return read_json(paths.dataset / "meta.json")["content_hash"]

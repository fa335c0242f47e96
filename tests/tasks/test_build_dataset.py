"""Determinism and disjointness of the dataset stage."""

from mrt_lib.common import Paths
from tasks.build_dataset import SPLITS, load_split, run_build_dataset


def test_same_seed_same_hash_and_bytes(smoke_params, tmp_path):
    a, b = Paths(tmp_path / "a"), Paths(tmp_path / "b")
    meta_a, meta_b = run_build_dataset(smoke_params, a), run_build_dataset(smoke_params, b)
    assert meta_a["content_hash"] == meta_b["content_hash"]
    for split in SPLITS:
        assert (a.dataset / f"{split}.jsonl").read_bytes() == (b.dataset / f"{split}.jsonl").read_bytes()


def test_other_seed_other_hash(smoke_params, tmp_path):
    other = smoke_params.model_copy(update={"build_dataset": smoke_params.build_dataset.model_copy(update={"seed": 1})})
    assert run_build_dataset(smoke_params, Paths(tmp_path / "a"))["content_hash"] != run_build_dataset(
        other, Paths(tmp_path / "b"))["content_hash"]


def test_splits_are_disjoint_and_cover_the_space(smoke_params, paths):
    meta = run_build_dataset(smoke_params, paths)
    ids = {split: {r["id"] for r in load_split(paths, split)} for split in SPLITS}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(map(len, ids.values())) == meta["problem_space"] == 16  # 4 values ** 2 digits
    assert meta["counts"] == {"train": 12, "val": 2, "test": 2}
    row = load_split(paths, "test")[0]
    assert set(row) == set(meta["schema"]) and row["prompt"] == "Q2:"

"""Stage ``build_dataset``: the embedded environment's problems, split train/val/test.

The code space (V ** D codes) is enumerated, shuffled with ``build_dataset.seed`` and cut into
disjoint splits. Each split is a JSONL file with the schema in ``SCHEMA``; ``meta.json`` records
counts and a content hash of the three files (same seed, same hash).

    python -m tasks.build_dataset            # what dvc.yaml runs
"""

from __future__ import annotations

import random

from mrt_core.envs.base import Problem
from mrt_core.envs.code_search import CodeSearchEnv
from tasks.common import Paths, atomic_path, jsonl_text, read_jsonl, setup_process, sha256_text, write_json_atomic
from tasks.config import Params, stage_params
from tasks.tracking import stage_run

SCHEMA_VERSION = 1
SCHEMA = {
    "id": "string, unique problem id",
    "prompt": "string, the rendered prompt the model sees",
    "answer": "string, the hidden reference answer",
    "env": "string, environment family that renders and checks the problem",
    "split": "string, one of train|val|test",
}
SPLITS = ("train", "val", "test")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Disjoint index lists covering ``range(n)``, shuffled with ``seed``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val, n_test = max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
    if n_val + n_test >= n:
        raise ValueError(f"problem space of {n} is too small for the val/test fractions")
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def build_rows(params: Params) -> dict[str, list[dict]]:
    env = CodeSearchEnv(params.env.spec())
    cfg = params.build_dataset
    splits = split_indices(env.spec.problem_space(), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    rows = {}
    for split, indices in splits.items():
        problems = [env.make_problem(i) for i in indices]
        rows[split] = [
            {"id": p.id, "prompt": p.prompt, "answer": p.answer, "env": params.env.kind, "split": split}
            for p in problems
        ]
    return rows


def run_build_dataset(params: Params, paths: Paths) -> dict:
    """Write ``train/val/test.jsonl`` and ``meta.json`` under ``paths.dataset``; returns meta."""
    rows = build_rows(params)
    texts = {split: jsonl_text(rows[split]) for split in SPLITS}
    meta = {
        "schema_version": SCHEMA_VERSION,
        "schema": SCHEMA,
        "env": params.env.kind,
        "problem_space": params.env.spec().problem_space(),
        "counts": {split: len(rows[split]) for split in SPLITS},
        "content_hash": sha256_text("".join(texts[s] for s in SPLITS)),
    }
    with atomic_path(paths.dataset) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            (tmp / f"{split}.jsonl").write_text(texts[split])
        write_json_atomic(tmp / "meta.json", meta)
    return meta


def load_split(paths: Paths, split: str) -> list[dict]:
    """Rows of one split; a clear error if the dataset stage has not run."""
    path = paths.dataset / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the build_dataset stage first (dvc repro build_dataset)")
    return read_jsonl(path)


def load_problems(paths: Paths, split: str) -> list[Problem]:
    """The problems of one split, as ``Problem`` objects."""
    return [Problem(id=r["id"], prompt=r["prompt"], answer=r["answer"]) for r in load_split(paths, split)]


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    setup_process(params.runtime.torch_threads, params.build_dataset.seed)
    with stage_run("build_dataset", params.runtime.tracking_uri, params.runtime.experiment,
                   {"build_dataset": params.build_dataset.model_dump(), "env": params.env.model_dump()}) as mlflow:
        meta = run_build_dataset(params, Paths())
        mlflow.log_metrics({f"n_{k}": v for k, v in meta["counts"].items()} | {"problem_space": meta["problem_space"]})
        mlflow.set_tag("dataset.content_hash", meta["content_hash"])
        mlflow.log_artifact(str(Paths().dataset / "meta.json"))
    print(f"build_dataset: {meta['counts']} hash={meta['content_hash'][:12]}")


if __name__ == "__main__":
    main()

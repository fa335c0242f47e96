"""Stage ``build_dataset``: problems split train/val/test, from the source ``build_dataset.source``.

- ``embedded`` (default): the code space (V ** D codes) is enumerated, shuffled with
  ``build_dataset.seed`` and cut into disjoint splits.
- ``hf`` / ``files``: text problems (math) from a Hugging Face dataset (hub id or a
  ``save_to_disk`` folder) or local JSONL/Parquet files, with a column mapping. Rows are
  cleaned (``mrt_core.envs.problem_text``), duplicates within a split removed, train/eval
  contamination (exact and word n-gram) found and handled by ``contamination.action``, and
  bad rows (unreadable, no problem, no answer, unbalanced answer) counted with their row
  numbers; past ``max_bad_share`` the stage fails (exit 1) and writes nothing. The prompt is
  the problem rendered with the ``template`` section.

Each split is a JSONL file with the schema in ``SCHEMA``; ``meta.json`` records counts, a
content hash of the three files (same inputs, same hash) and, for text sources, the cleaning
report.

    python -m tasks.build_dataset            # what dvc.yaml runs
"""

from __future__ import annotations

import sys

from mrt_lib.common import (
    Paths,
    atomic_path,
    entry_environment,
    is_hub_id,
    jsonl_text,
    setup_process,
    sha256_text,
    write_json_atomic,
)
from mrt_lib.config import Params, StageConfig, for_stage, stage_params
from mrt_lib.data import SCHEMA, SCHEMA_VERSION, SPLITS, DatasetError, SourceError, load_split  # noqa: F401
from mrt_lib.envs import family
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "template", "build_dataset")


def run_build_dataset(params: Params, paths: Paths) -> dict:
    """Write ``train/val/test.jsonl`` and ``meta.json`` under ``paths.dataset``; returns meta.
    Raises ``SourceError`` or ``DatasetError`` before anything is written."""
    params = for_stage(params, SECTIONS)
    texts, meta = make_dataset(params)
    write_dataset(paths, texts, meta)
    return meta


def make_dataset(params: StageConfig) -> tuple[dict[str, str], dict]:
    """The JSONL text of each split and the meta record, computed without writing anything:
    the environment family makes the rows (and says what else meta.json records)."""
    rows, extra = family(params.env.kind).dataset_rows(params.env, params.build_dataset, params.template)
    texts = {split: jsonl_text(rows[split]) for split in SPLITS}
    meta = {
        "schema_version": SCHEMA_VERSION,
        "schema": SCHEMA,
        "env": params.env.kind,
        "counts": {split: len(rows[split]) for split in SPLITS},
        "content_hash": sha256_text("".join(texts[s] for s in SPLITS)),
    } | extra
    return texts, meta


def write_dataset(paths: Paths, texts: dict[str, str], meta: dict) -> None:
    """Write the splits and meta.json atomically (all or nothing)."""
    with atomic_path(paths.dataset) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            (tmp / f"{split}.jsonl").write_text(texts[split])
        write_json_atomic(tmp / "meta.json", meta)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    entry_environment(needs_hub=any(is_hub_id(name) for name in params.build_dataset.source.dataset_names()))
    setup_process(params.runtime.torch_threads, params.build_dataset.seed)
    logged = {name: getattr(params, name).model_dump() for name in family(params.env.kind).dataset_sections}
    try:  # before the MLflow run: a bad source leaves nothing behind, not even a failed run
        texts, meta = make_dataset(params)
    except (SourceError, DatasetError) as exc:
        print(f"build_dataset: {exc}", file=sys.stderr)
        raise SystemExit(2 if isinstance(exc, SourceError) else 1) from None
    with stage_run("build_dataset", params.runtime.tracking_uri, params.runtime.experiment, logged) as mlflow:
        write_dataset(Paths(), texts, meta)
        metrics = {f"n_{k}": v for k, v in meta["counts"].items()}
        if "problem_space" in meta:
            metrics["problem_space"] = meta["problem_space"]
        if "cleaning" in meta:
            cleaning = meta["cleaning"]
            metrics |= {"bad_rows": cleaning["bad"]["count"], "bad_share": cleaning["bad"]["share"],
                        "duplicates": sum(d["removed"] for d in cleaning["duplicates"].values()),
                        "contaminated_dropped": sum(cleaning["contamination"]["dropped"].values())}
        mlflow.log_metrics(metrics)
        mlflow.set_tag("dataset.content_hash", meta["content_hash"])
        mlflow.log_artifact(str(Paths().dataset / "meta.json"))
    print(f"build_dataset: {meta['counts']} hash={meta['content_hash'][:12]}")


if __name__ == "__main__":
    main()

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

import hashlib
import json
import random
import sys
from pathlib import Path

from mrt_core.envs.answers import braces_balanced, last_boxed
from mrt_core.envs.base import Problem
from mrt_core.envs.code_search import CodeSearchEnv
from mrt_core.envs.problem_text import clean_answer, clean_text, contamination, duplicate_indices, match_key
from mrt_core.envs.templates import render_prompt
from tasks.common import (
    Paths,
    atomic_path,
    derive_seed,
    jsonl_text,
    read_jsonl,
    setup_process,
    sha256_text,
    write_json_atomic,
)
from tasks.config import ColumnsConfig, FilesSource, HFSource, HFSplitConfig, Params, stage_params
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
BAD_REASONS = ("unreadable", "missing_problem", "missing_answer", "unparseable_answer")
REPORT_LIMIT = 200  # rows listed by number in meta.json per report (counts are always complete)


class SourceError(RuntimeError):
    """The configured source cannot be read (missing file, unknown dataset, missing column)."""


class DatasetError(RuntimeError):
    """The source was read but its rows fail a check (too many bad rows, contamination with
    ``action: fail``, duplicate ids); the message names the rows and the setting to change."""


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
    """Write ``train/val/test.jsonl`` and ``meta.json`` under ``paths.dataset``; returns meta.
    Raises ``SourceError`` or ``DatasetError`` before anything is written."""
    texts, meta = make_dataset(params)
    write_dataset(paths, texts, meta)
    return meta


def make_dataset(params: Params) -> tuple[dict[str, str], dict]:
    """The JSONL text of each split and the meta record, computed without writing anything."""
    if params.build_dataset.source.kind == "embedded":
        rows = build_rows(params)
        extra = {"problem_space": params.env.spec().problem_space()}
    else:
        rows, report = build_text_rows(params)
        extra = {"source": params.build_dataset.source.model_dump(), "cleaning": report}
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


# --- text problems (hf and files sources) ------------------------------------------------------
def read_source(source: HFSource | FilesSource) -> dict[str, list[tuple[dict | None, str]]]:
    """Raw records per split, in source order: ``(record, where)``, ``record`` None for a line
    that is not a JSON object. ``where`` names the file and line (or dataset split and row)."""
    if source.kind == "files":
        return {split: [r for path in source.files[split] for r in _read_file(Path(path))]
                for split in SPLITS if split in source.files}
    return {split: _read_hf(source.split_config(split)) for split in SPLITS if split in source.splits}


def _read_file(path: Path) -> list[tuple[dict | None, str]]:
    if not path.exists():
        raise SourceError(f"{path}: no such file (build_dataset.source.files; paths are relative to the "
                          "working directory)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only text sources need it

        return [(r, f"{path}:row {i}") for i, r in enumerate(pq.read_table(path).to_pylist())]
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        out.append((record if isinstance(record, dict) else None, f"{path}:{n}"))
    return out


def _read_hf(spec: HFSplitConfig) -> list[tuple[dict | None, str]]:
    import datasets  # imported here: the embedded default never pays for it

    where, split = Path(spec.dataset), spec.split
    try:
        if where.is_dir():  # written by save_to_disk: a Dataset, or a DatasetDict holding the split
            ds = datasets.load_from_disk(str(where))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise SourceError(f"{where} has splits {sorted(ds)}, not {split!r} (build_dataset.source.splits)")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(spec.dataset, spec.config_name, split=split, revision=spec.revision)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loading failure is reported with the dataset named
        raise SourceError(f"cannot load {spec.dataset!r} split {split!r}: {type(exc).__name__}: {exc}") from exc
    cols = spec.columns
    wanted = [c for c in (cols.problem, cols.answer, cols.solution, cols.id) if c and c in ds.column_names]
    return [(r, f"{spec.dataset}[{split}]:row {i}") for i, r in enumerate(ds.select_columns(wanted).to_list())]


def extract_row(record: dict | None, columns: ColumnsConfig) -> tuple[dict | None, str | None]:
    """``({"problem", "answer", "source_id"}, None)`` for a good record, ``(None, reason)`` for a
    bad one (reasons: ``BAD_REASONS``). The answer column wins; where it is absent or empty the
    last ``\\boxed{}`` of the solution column is the answer."""
    if record is None:
        return None, "unreadable"
    problem = record.get(columns.problem)
    if not isinstance(problem, str) or not clean_text(problem):
        return None, "missing_problem"
    answer = _text(record.get(columns.answer)) if columns.answer else ""
    if not answer and columns.solution:
        solution = _text(record.get(columns.solution))
        answer = last_boxed(solution) or ""
        if not answer and "\\boxed" in solution:
            return None, "unparseable_answer"  # a box that never closes
    answer = clean_answer(answer) if answer else ""
    if not answer:
        return None, "missing_answer"
    if not braces_balanced(answer):
        return None, "unparseable_answer"
    source_id = _text(record.get(columns.id)) if columns.id else ""
    return {"problem": clean_text(problem), "answer": answer, "source_id": source_id}, None


def _text(value) -> str:
    """A cell as text: numbers (e.g. AIME answers stored as integers) become their decimal form."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    return value.strip() if isinstance(value, str) else ""


def build_text_rows(params: Params) -> tuple[dict[str, list[dict]], dict]:
    """Rows of the three splits and the cleaning report, for an hf or files source."""
    cfg = params.build_dataset
    source = cfg.source
    raw = read_source(source)
    _check_columns(raw, source)
    good: dict[str, list[dict]] = {}
    bad: list[dict] = []
    for split, records in raw.items():
        good[split] = []
        columns = source.columns_for(split)
        for row, (record, where) in enumerate(records):
            item, reason = extract_row(record, columns)
            if item is None:
                bad.append({"split": split, "row": row, "where": where, "reason": reason})
            else:
                good[split].append(item | {"row": row, "where": where})
    n_read = sum(len(r) for r in raw.values())
    report = {"rows_read": {split: len(raw.get(split, [])) for split in SPLITS}, "bad": _bad_report(bad, n_read, cfg)}
    if report["bad"]["share"] > cfg.max_bad_share:
        raise DatasetError(_bad_message(report["bad"], cfg.max_bad_share))
    report["duplicates"] = _dedupe(good)
    if "val" not in good:
        good["train"], good["val"] = _cut_val(good["train"], cfg.val_fraction, cfg.seed)
        report["val_cut_from_train"] = len(good["val"])
    report["contamination"] = _decontaminate(good, cfg)
    report["sampled_out"] = _sample(good, cfg.max_rows, cfg.seed)
    empty = [split for split in SPLITS if not good[split]]
    if empty:
        raise DatasetError(f"split(s) {empty} are empty after cleaning ({report['bad']['count']} bad rows, "
                           f"contamination dropped {report['contamination']['dropped']}): check the source and "
                           "build_dataset.max_rows / contamination settings")
    report["ids"] = _assign_ids(good, {split: bool(source.columns_for(split).id) for split in raw})
    template = params.template.spec()
    return {split: _output_rows(good[split], split, template, params.env.kind) for split in SPLITS}, report


def _check_columns(raw: dict[str, list], source: HFSource | FilesSource) -> None:
    """A problem column absent from a whole split is a mapping error, not 100% bad rows."""
    for split, records in raw.items():
        columns = source.columns_for(split)
        present = set().union(*(r.keys() for r, _ in records if r is not None)) if records else set()
        if records and present and columns.problem not in present:
            raise SourceError(f"split {split!r} has no column {columns.problem!r} (columns: {sorted(present)}): "
                              "set build_dataset.source.columns.problem")
        answer_cols = [c for c in (columns.answer, columns.solution) if c]
        if records and present and not present & set(answer_cols):
            raise SourceError(f"split {split!r} has none of the answer columns {answer_cols} (columns: "
                              f"{sorted(present)}): set build_dataset.source.columns.answer or .solution")


def _bad_report(bad: list[dict], n_read: int, cfg) -> dict:
    return {
        "count": len(bad),
        "share": len(bad) / max(n_read, 1),
        "max_share": cfg.max_bad_share,
        "by_reason": {reason: sum(b["reason"] == reason for b in bad) for reason in BAD_REASONS},
        "rows": bad[:REPORT_LIMIT],
    }


def _bad_message(report: dict, limit: float) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in report["by_reason"].items() if v)
    shown = "; ".join(f"{b['split']} row {b['row']} ({b['where']}): {b['reason']}" for b in report["rows"][:10])
    return (f"{report['count']} bad rows ({report['share']:.1%}) exceed build_dataset.max_bad_share={limit} "
            f"[{reasons}]. First ones: {shown}. Fix the source or the column mapping "
            "(build_dataset.source.columns), or raise max_bad_share to drop them knowingly.")


def _dedupe(good: dict[str, list[dict]]) -> dict:
    """Remove repeated problems within each split (first kept); counts and the removed rows."""
    out = {}
    for split, items in good.items():
        dupes = set(duplicate_indices([match_key(i["problem"]) for i in items]))
        out[split] = {"removed": len(dupes), "rows": [items[i]["where"] for i in sorted(dupes)][:REPORT_LIMIT]}
        good[split] = [item for i, item in enumerate(items) if i not in dupes]
    return out


def _cut_val(train: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    order = list(range(len(train)))
    random.Random(derive_seed("val", seed)).shuffle(order)
    chosen = set(order[: max(1, round(len(train) * fraction))])
    if len(chosen) >= len(train):
        raise DatasetError(f"{len(train)} training problems are too few to cut a val split from")
    return [t for i, t in enumerate(train) if i not in chosen], [t for i, t in enumerate(train) if i in chosen]


def _decontaminate(good: dict[str, list[dict]], cfg) -> dict:
    """Find every problem of a later split (val, test) in an earlier one (train, val) and, with
    ``action: drop``, remove it from the earlier split, so the evaluation sets stay whole."""
    c = cfg.contamination
    report: dict = {"ngram": c.ngram, "threshold": c.threshold, "action": c.action, "pairs": {}}
    dropped: dict[str, set[int]] = {split: set() for split in SPLITS}
    for early, late in (("train", "val"), ("train", "test"), ("val", "test")):
        found = contamination([match_key(i["problem"]) for i in good[late]],
                              [match_key(i["problem"]) for i in good[early]], c.ngram, c.threshold)
        report["pairs"][f"{early}/{late}"] = {
            "exact": sum(o.kind == "exact" for o in found),
            "ngram": sum(o.kind == "ngram" for o in found),
            f"{late}_problems": len({o.eval_index for o in found}),
            f"{early}_problems": len({o.train_index for o in found}),
            "examples": [{late: good[late][o.eval_index]["where"], early: good[early][o.train_index]["where"],
                          "kind": o.kind, "score": round(o.score, 4)} for o in found[:REPORT_LIMIT]],
        }
        dropped[early] |= {o.train_index for o in found}
    total = sum(len(d) for d in dropped.values())
    if total and c.action == "fail":
        raise DatasetError(f"contamination found ({_pairs_summary(report)}) and build_dataset.contamination.action"
                           "=fail; set action to drop or report to go on")
    if c.action == "drop":
        for split, indices in dropped.items():
            good[split] = [item for i, item in enumerate(good[split]) if i not in indices]
    report["dropped"] = {split: len(dropped[split]) if c.action == "drop" else 0 for split in SPLITS}
    return report


def _pairs_summary(report: dict) -> str:
    return ", ".join(f"{k}: {v['exact']} exact, {v['ngram']} n-gram" for k, v in report["pairs"].items())


def _sample(good: dict[str, list[dict]], max_rows: dict[str, int], seed: int) -> dict[str, int]:
    """Keep at most ``max_rows[split]`` rows (a seeded sample, source order kept)."""
    out = {}
    for split in SPLITS:
        limit, items = max_rows.get(split), good[split]
        if limit is None or len(items) <= limit:
            out[split] = 0
            continue
        keep = set(random.Random(derive_seed("sample", split, seed)).sample(range(len(items)), limit))
        good[split] = [item for i, item in enumerate(items) if i in keep]
        out[split] = len(items) - limit
    return out


def _assign_ids(good: dict[str, list[dict]], from_column: dict[str, bool]) -> dict[str, str]:
    """Set each item's ``id``: the source id column (must be present and unique), or a hash of
    the problem's comparison key (unique after dedupe; a problem kept in two splits under
    ``action: report`` gets the split appended the second time). ``from_column`` per source
    split (val cut from train follows train). Returns how each split's ids were made."""
    seen: dict[str, str] = {}
    how = {}
    for split in SPLITS:
        column = from_column.get(split, from_column["train"])
        how[split] = "column" if column else "hash"
        for item in good[split]:
            if column:
                pid = item["source_id"]
                if not pid or pid in seen:
                    problem = "missing" if not pid else f"also used in {seen[pid]}"
                    raise DatasetError(f"id {pid!r} of {split} problem at {item['where']} is {problem}: ids from "
                                       "build_dataset.source.columns.id must be unique; set it to null to hash")
            else:
                pid = "m" + hashlib.sha256(match_key(item["problem"]).encode()).hexdigest()[:12]
                if pid in seen:
                    pid = f"{pid}-{split}"
            seen[pid] = split
            item["id"] = pid
    return how


def _output_rows(items: list[dict], split: str, template, env_kind: str) -> list[dict]:
    return [{"id": i["id"], "prompt": render_prompt(template, i["problem"]), "answer": i["answer"], "env": env_kind,
             "split": split} for i in items]


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
    logged = {"build_dataset": params.build_dataset.model_dump(), "env": params.env.model_dump()}
    if params.env.kind == "math":
        logged["template"] = params.template.model_dump()
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

"""Text problems (math) from a Hugging Face dataset (hub id or a ``save_to_disk`` folder) or
local JSONL/Parquet files, with a column mapping: rows cleaned (``mrt_core.envs.problem_text``),
duplicates within a split removed, train/eval contamination (exact and word n-gram) found and
handled by ``contamination.action``, bad rows counted with their row numbers (past
``max_bad_share`` a ``DatasetError``)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import unicodedata
from collections import Counter
from pathlib import Path

from mrt_core.envs.answers import braces_balanced, last_boxed
from mrt_core.envs.problem_text import clean_answer, clean_text, contamination, duplicate_indices, match_key
from mrt_core.envs.templates import MathTemplate, render_prompt
from mrt_lib.common import derive_seed
from mrt_lib.config import BuildDatasetConfig, ColumnsConfig, FilesSource, HFSource, HFSplitConfig
from mrt_lib.data import BAD_REASONS, REPORT_LIMIT, SPLITS, DatasetError, SourceError


def read_source(source: HFSource | FilesSource) -> dict[str, list[tuple[dict | None, str]]]:
    """Raw records per split, in source order: ``(record, where)``, ``record`` None for a line
    that is not a JSON object. ``where`` names the file and line (or dataset split and row)."""
    if isinstance(source, FilesSource):
        return {split: [r for path in source.files[split] for r in _read_file(Path(path))]
                for split in SPLITS if split in source.files}
    return {split: _read_hf(source.split_config(split)) for split in SPLITS if split in source.splits}


def _read_file(path: Path) -> list[tuple[dict | None, str]]:
    if not path.exists():
        raise SourceError(f"{path}: no such file (build_dataset.source.files; paths are relative to the "
                          "working directory)")
    if not path.is_file():
        raise SourceError(f"{path}: not a file (build_dataset.source.files names files, not folders)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # only text sources need it

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several kinds for a bad file)
            raise SourceError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        return [(r, f"{path}:row {i}") for i, r in enumerate(table.to_pylist())]
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:  # a line that is not UTF-8 is one bad row (counted with its file and line), not a crash
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a byte-order mark may open the file
            record = json.loads(line, object_pairs_hook=_unique_keys) if line.strip() else ...
            if record is not ...:  # a lone surrogate (\ud800) is no text
                json.dumps(record, ensure_ascii=False).encode("utf-8")
        except ValueError:  # not JSON, a key given twice, an integer past Python's digit limit, not Unicode
            record = None
        if record is ...:
            continue
        out.append((record if isinstance(record, dict) else None, f"{path}:{n}"))
    return out


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose key is given twice is ambiguous (JSON's last-wins would pick one)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key given twice")
    return out


def _visible(text: str) -> bool:
    """Some character that is not whitespace, a control, format (zero-width, bidi) or unassigned one."""
    return any(not c.isspace() and unicodedata.category(c)[0] not in "CZ" for c in text)


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


def extract_row(record: dict | None, columns: ColumnsConfig, max_problem_chars: int = 20_000,
                max_answer_chars: int = 500) -> tuple[dict | None, str | None]:
    """``({"problem", "answer", "source_id"}, None)`` for a good record, ``(None, reason)`` for a
    bad one (reasons: ``BAD_REASONS``). The answer column wins; where it is absent or empty the
    last ``\\boxed{}`` of the solution column is the answer. A number that is not finite (JSON's
    ``NaN``, ``Infinity``) is no answer; a problem or answer longer than its cap is ``too_long``
    (every grade against a megabyte answer would time out)."""
    if record is None:
        return None, "unreadable"
    problem = record.get(columns.problem)
    if not isinstance(problem, str) or not _visible(problem):
        return None, "missing_problem"
    raw_answer = record.get(columns.answer) if columns.answer else None
    if isinstance(raw_answer, float) and not math.isfinite(raw_answer):
        return None, "unparseable_answer"
    answer = _text(raw_answer) if columns.answer else ""
    if not answer and columns.solution:
        solution = _text(record.get(columns.solution))
        answer = last_boxed(solution) or ""
        if not answer and "\\boxed" in solution:
            return None, "unparseable_answer"  # a box that never closes
    answer = clean_answer(answer) if answer else ""
    if not _visible(answer):
        return None, "missing_answer"
    if not braces_balanced(answer):
        return None, "unparseable_answer"
    if len(clean_text(problem)) > max_problem_chars or len(answer) > max_answer_chars:
        return None, "too_long"
    source_id = _text(record.get(columns.id)) if columns.id else ""
    return {"problem": clean_text(problem), "answer": answer, "source_id": source_id}, None


def _text(value) -> str:
    """A cell as text: numbers (e.g. AIME answers stored as integers) become their decimal form."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    return value.strip() if isinstance(value, str) else ""


def build_text_rows(cfg: BuildDatasetConfig, template: MathTemplate,
                    env_kind: str) -> tuple[dict[str, list[dict]], dict]:
    """Rows of the three splits and the cleaning report, for an hf or files source."""
    source = cfg.source
    raw = read_source(source)
    _check_columns(raw, source)
    good: dict[str, list[dict]] = {}
    bad: list[dict] = []
    for split, records in raw.items():
        good[split] = []
        columns = source.columns_for(split)
        for row, (record, where) in enumerate(records):
            item, reason = extract_row(record, columns, cfg.max_problem_chars, cfg.max_answer_chars)
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
    return {split: _output_rows(good[split], split, template, env_kind) for split in SPLITS}, report


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
            **{how: Counter(o.kind for o in found)[how] for how in ("exact", "ngram")},
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

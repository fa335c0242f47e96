"""build_dataset from text sources (local JSONL/Parquet files and a Hugging Face dataset saved to
disk), on the math fixture set. Expected numbers are counted by hand from tests/fixtures/math:

train.jsonl: 35 lines = 28 clean problems + 2 duplicates of them (one exact, one differing in case,
width and spaces) + 1 near-copy of test problem te10 + 3 bad rows (solution without a box, a box
that never closes, an empty problem) + 1 line that is not JSON (line 21).
test.jsonl: 13 rows = 10 clean + te10 (8-gram share 14/23 with train line 32) + te11 (the same
problem as train line 1 after normalisation) + 1 row with an empty answer.
"""

import json
from pathlib import Path

import pytest
import yaml

from mrt_lib.common import Paths
from mrt_lib.config import load_params
from tasks import build_dataset
from tasks.build_dataset import SPLITS, DatasetError, SourceError, load_split, run_build_dataset

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "math"
DEFAULT_HASH = "1ae74b0b239901243a4d44f0c8a1de9168f89f5fd02d4cbcd4e839d2cd9bbf5d"  # data/dataset of `make run`
COLUMNS = {"problem": "problem", "answer": "answer", "solution": "solution", "id": "id"}


def math_params(tmp_path, source: dict, **build):
    raw = {
        "env": {"kind": "math"},
        "policy": {"init": "pretrained", "model": "tiny"},
        "evaluate": {"budgets": [64, 128], "extrapolation_budgets": []},
        "template": {"prompt": "Q: {problem}\n<think>\n"},
        "build_dataset": {"max_bad_share": 0.15, "source": source} | build,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path), path


def files_source(train=("train.jsonl",), test=("test.jsonl",)):
    return {"kind": "files", "columns": COLUMNS,
            "files": {"train": [str(FIXTURES / f) for f in train], "test": [str(FIXTURES / f) for f in test]}}


def test_the_default_dataset_is_unchanged(tmp_path):
    meta = run_build_dataset(load_params(REPO / "params.yaml"), Paths(tmp_path))
    assert meta["content_hash"] == DEFAULT_HASH
    assert "cleaning" not in meta and meta["env"] == "code_search"


def test_files_source_cleans_dedupes_and_decontaminates(tmp_path):
    params, _ = math_params(tmp_path, files_source())
    paths = Paths(tmp_path)
    meta = run_build_dataset(params, paths)
    c = meta["cleaning"]
    assert c["rows_read"] == {"train": 35, "val": 0, "test": 13}
    assert c["bad"]["count"] == 5 and c["bad"]["share"] == pytest.approx(5 / 48)
    assert c["bad"]["by_reason"] == {"unreadable": 1, "missing_problem": 1, "missing_answer": 2,
                                     "unparseable_answer": 1, "too_long": 0}
    assert [(b["split"], b["where"].rsplit("/", 1)[1], b["reason"]) for b in c["bad"]["rows"]] == [
        ("train", "train.jsonl:21", "unreadable"), ("train", "train.jsonl:33", "missing_answer"),
        ("train", "train.jsonl:34", "unparseable_answer"), ("train", "train.jsonl:35", "missing_problem"),
        ("test", "test.jsonl:13", "missing_answer")]
    assert c["duplicates"]["train"]["removed"] == 2 and c["duplicates"]["test"]["removed"] == 0
    # 31 good train rows - 2 duplicates = 29; val = round(29 * 0.125) = 4; 2 contaminated train rows dropped
    assert c["val_cut_from_train"] == 4
    pair = c["contamination"]["pairs"]["train/test"]
    assert (pair["exact"], pair["ngram"]) == (1, 1)
    near = next(e for e in pair["examples"] if e["kind"] == "ngram")
    assert near["score"] == pytest.approx(14 / 23, abs=1e-4)
    assert near["test"].endswith("test.jsonl:11") and near["train"].endswith("train.jsonl:32")
    assert c["contamination"]["dropped"] == {"train": 2, "val": 0, "test": 0}
    assert meta["counts"] == {"train": 23, "val": 4, "test": 12}
    rows = {split: load_split(paths, split) for split in SPLITS}
    assert all(set(r) == set(meta["schema"]) and r["env"] == "math" for s in SPLITS for r in rows[s])
    te = {r["id"]: r for r in rows["test"]}
    assert te["te05"]["answer"] == "\\{-2, 2\\}"
    assert te["te05"]["prompt"] == "Q: Find all real $x$ with $x^2 = 4$.\n<think>\n"
    train_ids = {r["id"] for r in rows["train"] + rows["val"]}
    assert "tr-contaminated" not in train_ids and "tr00" not in train_ids  # dropped, the test split stays whole
    assert "tr-dup-exact" not in train_ids and "tr01" in train_ids
    answers = {r["id"]: r["answer"] for r in rows["train"] + rows["val"]}
    assert answers["tr02"] == "\\frac{3}{4}" and answers["tr07"] == "\\{-3, 3\\}"  # last box, nested braces


def test_same_inputs_same_bytes(tmp_path):
    params, _ = math_params(tmp_path, files_source())
    a, b = run_build_dataset(params, Paths(tmp_path / "a")), run_build_dataset(params, Paths(tmp_path / "b"))
    assert a["content_hash"] == b["content_hash"]


def test_hf_datasets_saved_to_disk_give_the_same_rows(tmp_path):
    """Train from one saved DatasetDict, test from another saved Dataset with other column names
    (as training on one set and testing on MATH-500 would)."""
    datasets = pytest.importorskip("datasets")

    def records(name):  # the parseable lines: a Dataset cannot hold the broken one
        out = []
        for line in (FIXTURES / name).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    train = datasets.Dataset.from_list([{c: r.get(c) for c in ("id", "problem", "solution")}
                                        for r in records("train.jsonl")])
    datasets.DatasetDict({"train": train}).save_to_disk(str(tmp_path / "train_set"))
    test = datasets.Dataset.from_list([{"Question": r["problem"], "Final": r["answer"], "uid": r["id"]}
                                       for r in records("test.jsonl")])
    test.save_to_disk(str(tmp_path / "test_set"))
    hf_params, _ = math_params(tmp_path, {
        "kind": "hf", "dataset": str(tmp_path / "train_set"), "columns": COLUMNS,
        "splits": {"train": "train", "test": {"split": "test", "dataset": str(tmp_path / "test_set"),
                                              "columns": {"problem": "Question", "answer": "Final", "id": "uid"}}}})
    files_params, _ = math_params(tmp_path, files_source())
    hf_meta = run_build_dataset(hf_params, Paths(tmp_path / "from_hf"))
    files_meta = run_build_dataset(files_params, Paths(tmp_path / "from_files"))
    assert hf_meta["cleaning"]["bad"]["by_reason"]["unreadable"] == 0 and hf_meta["cleaning"]["bad"]["count"] == 4
    assert hf_meta["cleaning"]["bad"]["rows"][-1]["where"] == f"{tmp_path / 'test_set'}[test]:row 12"
    assert hf_meta["counts"] == files_meta["counts"] and hf_meta["content_hash"] == files_meta["content_hash"]


def test_parquet_files_give_the_same_rows(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    rows = [json.loads(line) for line in (FIXTURES / "test.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    source = files_source()
    source["files"]["test"] = [str(tmp_path / "test.parquet")]
    parquet = run_build_dataset(math_params(tmp_path, source)[0], Paths(tmp_path / "pq"))
    jsonl = run_build_dataset(math_params(tmp_path, files_source())[0], Paths(tmp_path / "js"))
    assert parquet["content_hash"] == jsonl["content_hash"]
    assert parquet["cleaning"]["bad"]["rows"][-1]["where"].endswith("test.parquet:row 12")


def test_too_many_bad_rows_fail_the_stage_with_the_rows_named(tmp_path, monkeypatch, capsys):
    _, path = math_params(tmp_path, files_source(), max_bad_share=0.05)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--params", str(path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    for needle in ["5 bad rows (10.4%) exceed build_dataset.max_bad_share=0.05", "unreadable 1",
                   "train row 20 (", "train.jsonl:21): unreadable", "raise max_bad_share"]:
        assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no data/, no mlflow.db


def test_missing_file_is_a_source_error_exit_2(tmp_path, monkeypatch, capsys):
    _, path = math_params(tmp_path, files_source(test=("absent.jsonl",)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--params", str(path)])
    assert exc.value.code == 2 and "absent.jsonl: no such file" in capsys.readouterr().err


def test_wrong_column_mapping_is_named(tmp_path):
    source = files_source() | {"columns": COLUMNS | {"problem": "question"}}
    with pytest.raises(SourceError, match="no column 'question'.*columns.problem"):
        run_build_dataset(math_params(tmp_path, source)[0], Paths(tmp_path))


def test_contamination_actions(tmp_path):
    report = run_build_dataset(math_params(tmp_path, files_source(), contamination={"action": "report"})[0],
                               Paths(tmp_path / "r"))
    assert report["counts"]["train"] + report["counts"]["val"] == 29  # nothing dropped
    assert report["cleaning"]["contamination"]["dropped"] == {"train": 0, "val": 0, "test": 0}
    with pytest.raises(DatasetError, match="train/test: 1 exact, 1 n-gram"):
        run_build_dataset(math_params(tmp_path, files_source(), contamination={"action": "fail"})[0],
                          Paths(tmp_path / "f"))
    strict = run_build_dataset(math_params(tmp_path, files_source(), contamination={"threshold": 0.7})[0],
                               Paths(tmp_path / "s"))  # 14/23 < 0.7: only the exact match remains
    assert strict["cleaning"]["contamination"]["pairs"]["train/test"]["ngram"] == 0


def test_ids_hashed_without_an_id_column_and_rows_sampled(tmp_path):
    source = files_source() | {"columns": COLUMNS | {"id": None}}
    params, _ = math_params(tmp_path, source, max_rows={"train": 10})
    paths = Paths(tmp_path)
    meta = run_build_dataset(params, paths)
    assert meta["counts"]["train"] == 10 and meta["cleaning"]["sampled_out"]["train"] == 13
    ids = [r["id"] for s in SPLITS for r in load_split(paths, s)]
    assert len(ids) == len(set(ids)) and all(i.startswith("m") and len(i) == 13 for i in ids)


def test_duplicate_ids_from_the_column_are_an_error(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"id": "a", "problem": "p1", "answer": "1"}\n{"id": "a", "problem": "p2", '
                                      '"answer": "2"}\n{"id": "b", "problem": "p3", "answer": "3"}\n')
    source = {"kind": "files", "columns": COLUMNS, "files": {"train": [str(tmp_path / "t.jsonl")],
                                                            "test": [str(FIXTURES / "test.jsonl")]}}
    with pytest.raises(DatasetError, match="id 'a' .* also used in train"):
        run_build_dataset(math_params(tmp_path, source, val_fraction=0.3)[0], Paths(tmp_path))


def test_a_split_left_empty_is_an_error(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"problem": "What is 1+1?", "answer": ""}\n')
    source = files_source()
    source["files"]["test"] = [str(tmp_path / "t.jsonl")]
    with pytest.raises(DatasetError, match=r"split\(s\) \['test'\] are empty after cleaning"):
        run_build_dataset(math_params(tmp_path, source, max_bad_share=1.0)[0], Paths(tmp_path))


def test_a_line_that_is_not_utf8_is_one_bad_row_named_by_file_and_line(tmp_path):
    # the fixture's train file with a Latin-1 byte in a new line 36: one more unreadable row
    bad = tmp_path / "train_latin1.jsonl"
    bad.write_bytes((FIXTURES / "train.jsonl").read_bytes().rstrip(b"\n") + b'\n{"problem": "caf\xe9"}\n')
    params, _ = math_params(tmp_path, files_source(train=(str(bad),)))
    meta = run_build_dataset(params, Paths(tmp_path / "out"))
    c = meta["cleaning"]
    assert c["rows_read"]["train"] == 36 and c["bad"]["by_reason"]["unreadable"] == 2
    assert any(row["where"] == f"{bad}:36" and row["reason"] == "unreadable" for row in c["bad"]["rows"])


def test_a_folder_named_like_a_source_file_is_a_source_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "x.jsonl").mkdir()
    _, path = math_params(tmp_path, files_source(test=(str(tmp_path / "x.jsonl"),)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--params", str(path)])
    assert exc.value.code == 2 and "x.jsonl: not a file" in capsys.readouterr().err


@pytest.mark.parametrize("record, reason", [
    ({"problem": "p", "answer": float("nan")}, "unparseable_answer"),  # JSON NaN: not the answer "nan"
    ({"problem": "p", "answer": float("inf")}, "unparseable_answer"),
    ({"problem": "p", "answer": "1" * 501}, "too_long"),
    ({"problem": "x" * 20_001, "answer": "3"}, "too_long"),
])
def test_rows_no_answer_can_match_are_counted_bad(record, reason):
    from mrt_lib.config import ColumnsConfig
    from mrt_lib.data.text_sources import extract_row

    assert extract_row(record, ColumnsConfig(problem="problem", answer="answer")) == (None, reason)
    assert extract_row({"problem": "p", "answer": 3.5}, ColumnsConfig(problem="problem", answer="answer"))[0][
        "answer"] == "3.5"


def test_nan_answers_in_a_jsonl_source_are_bad_rows_not_references(tmp_path):
    src = tmp_path / "train_nan.jsonl"
    src.write_bytes((FIXTURES / "train.jsonl").read_bytes().rstrip(b"\n")
                    + b'\n{"problem": "What is 0/0?", "answer": NaN}\n{"problem": "Big?", "answer": Infinity}\n')
    params, _ = math_params(tmp_path, files_source(train=(str(src),)))
    meta = run_build_dataset(params, Paths(tmp_path / "out"))
    assert meta["cleaning"]["bad"]["by_reason"]["unparseable_answer"] == 1 + 2
    answers = {r["answer"] for split in SPLITS for r in load_split(Paths(tmp_path / "out"), split)}
    assert not answers & {"nan", "inf", "NaN", "Infinity"}

"""Config of the real-model path: build_dataset.source, template, grader, policy; one test per
kind of bad value, each checking the message names the key and the fix."""

from pathlib import Path

import pytest
import yaml

from mrt_lib.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[2]
MATH = {
    "env": {"kind": "math"},
    "policy": {"init": "pretrained", "model": "some/model"},
    "evaluate": {"budgets": [64, 128], "extrapolation_budgets": []},
    "build_dataset": {"source": {"kind": "files", "files": {"train": ["a.jsonl"], "test": ["b.parquet"]}}},
}


def load(tmp_path, raw):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def with_(**sections):
    raw = {k: dict(v) for k, v in MATH.items()}
    for key, value in sections.items():
        raw[key] = raw.get(key, {}) | value
    return raw


def test_a_math_profile_validates(tmp_path):
    params = load(tmp_path, MATH)
    assert params.build_dataset.source.kind == "files" and params.template.spec().style == "r1_think"


def test_hf_splits_resolve_to_their_own_dataset_or_the_source_s(tmp_path):
    source = {"kind": "hf", "dataset": "org/train-set", "revision": "abc", "columns": {"problem": "q", "answer": "a"},
              "splits": {"train": "train", "test": {"split": "test", "dataset": "org/MATH-500",
                                                   "columns": {"problem": "problem", "answer": "answer"}}}}
    hf = load(tmp_path, with_(build_dataset={"source": source})).build_dataset.source
    train, test = hf.split_config("train"), hf.split_config("test")
    assert (train.dataset, train.split, train.revision, train.columns.problem) == ("org/train-set", "train", "abc", "q")
    assert (test.dataset, test.split, test.revision, test.columns.problem) == ("org/MATH-500", "test", None, "problem")


def test_unknown_key_inside_a_source_lists_that_source_s_keys(tmp_path):
    raw = with_(build_dataset={"source": {"kind": "hf", "datasett": "x", "splits": {"train": "a", "test": "b"}}})
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, raw)
    msg = str(exc.value)
    assert "build_dataset.source.hf.datasett: unknown key; allowed keys here: columns, config_name, dataset, kind, " \
           "revision, splits" in msg
    orphan = with_(build_dataset={"source": {"kind": "hf", "splits": {"train": "a", "test": {"split": "t"}}}})
    with pytest.raises(ConfigError, match=r"splits \['train', 'test'\] name no dataset"):
        load(tmp_path, orphan)


@pytest.mark.parametrize("source, needle", [
    ({"kind": "hf", "dataset": "x", "splits": {"train": "train"}}, "missing split(s) ['test']"),
    ({"kind": "files", "files": {"train": ["a.csv"], "test": ["b.jsonl"]}},
     "['a.csv'] are neither .jsonl nor .parquet"),
    ({"kind": "files", "files": {"train": [], "test": ["b.jsonl"]}}, "files.train lists no file"),
    ({"kind": "csv"}, "does not match any of the expected tags: 'embedded', 'hf', 'files'"),
    ({"kind": "files", "files": {"train": ["a.jsonl"], "test": ["b.jsonl"]}, "columns": {"answer": None}},
     "set columns.answer or columns.solution"),
])
def test_bad_sources(tmp_path, source, needle):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, with_(build_dataset={"source": source}))
    assert needle in str(exc.value), str(exc.value)


@pytest.mark.parametrize("sections, needle", [
    ({"env": {"kind": "code_search"}}, "the embedded source makes code_search problems"),
    ({"policy": {"init": "scratch"}}, "env.kind=math needs policy.init=pretrained"),
    ({"policy": {"init": "pretrained", "model": None}}, "policy.init=pretrained needs policy.model"),
    ({"template": {"prompt": "no placeholder"}}, "prompt must contain {problem} exactly once"),
    ({"template": {"answer_pattern": "(unclosed"}}, "answer_pattern is not a valid regex"),
    ({"template": {"style": "socratic"}}, "template.style = 'socratic'"),
    ({"template": {"backtrack_text": "Backtrack"}}, "backtrack_text must contain {n} exactly once"),
    ({"grader": {"timeout_s": 0}}, "grader.timeout_s = 0"),
    ({"evaluate": {"budgets": [4096, 40000]}, "policy": {"init": "pretrained", "model": "m", "max_context": 32768}},
     "evaluate budget 40000 + template.max_answer_tokens=32 exceed policy.max_context=32768"),
    ({"build_dataset": {"max_rows": {"train": 0}, "source": MATH["build_dataset"]["source"]}},
     "max_rows must be positive"),
    ({"build_dataset": {"contamination": {"threshold": 0}, "source": MATH["build_dataset"]["source"]}},
     "build_dataset.contamination.threshold = 0"),
])
def test_bad_math_settings(tmp_path, sections, needle):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, with_(**sections))
    assert needle in str(exc.value), str(exc.value)


def test_a_code_search_profile_cannot_read_text_sources(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["build_dataset"]["source"] = MATH["build_dataset"]["source"]
    with pytest.raises(ConfigError, match="hf and files sources hold text problems"):
        load(tmp_path, raw)

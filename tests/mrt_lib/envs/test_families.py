"""Environment families: the registry matches the config's kinds, and each family gives the
stages what depends on the kind (rows, engine, tokenizer check, references)."""

import typing

import pytest

from mrt_lib.config import EnvConfig, Params
from mrt_lib.envs import REGISTRY, family
from mrt_lib.modeling import build_char_tokenizer


def test_the_registry_holds_exactly_the_kinds_the_config_allows():
    allowed = typing.get_args(EnvConfig.model_fields["kind"].annotation)
    assert sorted(REGISTRY) == sorted(allowed) == ["code_search", "math"]
    with pytest.raises(ValueError, match="unknown env.kind 'chess': one of code_search, math"):
        family("chess")
    assert family("code_search").backtracks and not family("math").backtracks


def test_code_search_rows_are_the_whole_code_space_split_disjointly():
    p = Params()
    rows, extra = family("code_search").dataset_rows(p.env, p.build_dataset, p.template)
    ids = {split: {r["id"] for r in rows[split]} for split in rows}
    # default: 3 digits over 8 symbols = 512 codes, 64 val and 64 test (fractions 0.125)
    assert extra == {"problem_space": 512}
    assert {k: len(v) for k, v in ids.items()} == {"train": 384, "val": 64, "test": 64}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert {r["env"] for split in rows.values() for r in split} == {"code_search"}


def test_reference_policies_and_tokenizer_checks_by_family():
    p = Params()
    names = [(n, stochastic) for n, _, stochastic in family("code_search").reference_policies(p.env, 0.3)]
    assert names == [("bisection", False), ("data_policy", True)]
    assert family("math").reference_policies(p.env, 0.3) == []
    family("code_search").check_tokenizer(build_char_tokenizer(p.env.spec().alphabet()), p.env, p.template)
    with pytest.raises(ValueError, match="cannot round-trip"):
        family("code_search").check_tokenizer(build_char_tokenizer("0123"), p.env, p.template)
    with pytest.raises(ValueError, match="template.think_close"):
        family("math").check_tokenizer(build_char_tokenizer("0123"), p.env, p.template)

"""Tokenizer round trip and the role-to-mask alignment."""

import pytest
from transformers import AutoTokenizer

from mrt_core.envs.base import Role, Segment
from mrt_core.envs.code_search import CodeSearchSpec
from mrt_lib.config import ModelConfig
from mrt_lib.modeling import build_char_tokenizer, build_model, check_round_trip, collate, encode_segments

ALPHABET = CodeSearchSpec().alphabet()
TRACE = "Q3:4>\n6<\n5=2=7=!A:527"


def test_alphabet_holds_every_env_string():
    assert ALPHABET == "\n!01234567:<=>?AQ^"  # sorted code points


def test_tokenizer_round_trip_after_save_and_auto_load(tmp_path):
    tok = build_char_tokenizer(ALPHABET)
    model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok, 0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # the call a hub id would use
    ids = loaded(TRACE, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(TRACE)  # one token per character, newlines included
    assert loaded.decode(ids) == TRACE
    check_round_trip(loaded, ALPHABET)


def test_round_trip_check_names_the_missing_character():
    tok = build_char_tokenizer("0123")
    with pytest.raises(ValueError, match="round-trip '7'"):
        check_round_trip(tok, "07")


def test_mask_counts_generated_tokens_only():
    segs = [
        Segment("Q3:", Role.PROMPT),
        Segment("4", Role.GENERATED),
        Segment(">\n", Role.ENV),
        Segment("A:", Role.FORCED),
        Segment("527", Role.GENERATED),
    ]
    ids, mask = encode_segments(build_char_tokenizer(ALPHABET), segs)
    assert len(ids) == 11
    assert mask == [False] * 3 + [True] + [False] * 4 + [True] * 3


def test_collate_pads_and_masks_labels():
    batch = collate([([5, 6, 7], [False, True, True]), ([8], [True])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]

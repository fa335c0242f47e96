"""Problem-text hygiene: stored and compared forms, duplicates, contamination (hand-computed)."""

import pytest

from mrt_core.envs.problem_text import (
    Overlap,
    clean_answer,
    clean_text,
    contamination,
    duplicate_indices,
    match_key,
    word_ngrams,
)


def test_clean_text_keeps_mathematics_and_lines():
    assert clean_text("  Find x²  \r\n\r\n\r\n\nif ½ = y.  ") == "Find x²\n\nif ½ = y."
    assert clean_text("e\u0301") == "\u00e9"  # NFC composes


@pytest.mark.parametrize("raw, cleaned", [
    ("$\\frac{1}{2}$", "\\frac{1}{2}"), ("  \\( 3 \\) ", "3"), ("\\[x\\]", "x"), ("$$5$$", "5"),
    ("1,\n 2", "1, 2"), ("$", "$"), ("$1$ and $2$", "1$ and $2"),
])
def test_clean_answer(raw, cleaned):
    assert clean_answer(raw) == cleaned


def test_match_key_folds_width_case_and_space():
    assert match_key("Ｆｉｎｄ  X\n\tnow") == match_key("find x now") == "find x now"


def test_word_ngrams_by_hand():
    assert word_ngrams("a b c", 2) == {("a", "b"), ("b", "c")}
    assert word_ngrams("x^{2}", 3) == {("x", "^", "{"), ("^", "{", "2"), ("{", "2", "}")}
    assert word_ngrams("a b", 3) == frozenset()
    with pytest.raises(ValueError, match=">= 1"):
        word_ngrams("a", 0)


def test_duplicate_indices_keep_the_first():
    assert duplicate_indices(["a", "b", "a", "c", "b", "a"]) == [2, 4, 5]


def test_contamination_exact_and_ngram():
    train = ["what is one plus two ?", "compute the sum of the first ten odd numbers", "a b c d e f"]
    evals = [
        "what is one plus two ?",  # exact
        "compute the sum of the first ten even numbers",  # 9 words, 5 five-grams; the first 3 are in train[1]
        "something else entirely , nothing shared here",  # clean
        "b c",  # too short for 5-grams, no exact match
    ]
    found = contamination(evals, train, n=5, threshold=0.5)
    assert found == [Overlap(0, 0, "exact", 1.0), Overlap(1, 1, "ngram", 3 / 5)]
    assert contamination(evals, train, n=5, threshold=0.7) == [Overlap(0, 0, "exact", 1.0)]


def test_contamination_lists_every_training_match_best_first():
    found = contamination(["a b c d", "q"], ["x a b c", "a b c d e", "b c d", "q"], n=3, threshold=0.5)
    # "a b c d" has the 3-grams (a b c), (b c d): train 1 holds both, trains 0 and 2 one each.
    assert found == [Overlap(0, 1, "ngram", 1.0), Overlap(0, 0, "ngram", 0.5), Overlap(0, 2, "ngram", 0.5),
                     Overlap(1, 3, "exact", 1.0)]


def test_contamination_threshold_must_be_a_share():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        contamination([], [], n=3, threshold=0)

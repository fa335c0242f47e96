"""Answer extraction: hand-written texts and the exact substring each must give."""

import pytest

from mrt_core.envs.answers import (
    answer_closed,
    braces_balanced,
    extract_answer,
    last_boxed,
    matching_brace,
    pattern_answer,
)


@pytest.mark.parametrize("text, expected", [
    ("so the answer is \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{2}", "2"),  # the last one
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are literal, not grouping
    ("\\boxed{a\\}b}", "a\\}b"),
    ("\\boxed{x\\\\}", "x\\\\"),  # an escaped backslash does not escape the closing brace
    ("\\boxed { 7 } ", "7"),  # spaces around
    ("\\boxed 5 apples", "5"),  # bare argument
    ("\\fbox{3}", "3"),
    ("$\\boxed{(0,1]}$", "(0,1]"),
    ("Final answer: \\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("\\boxed{" + "{" * 500 + "1" + "}" * 500 + "}", "{" * 500 + "1" + "}" * 500),  # deep nesting
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text", [
    "no box here",
    "",
    "\\boxed{}",  # empty
    "\\boxed{   }",
    "\\boxed{\\frac{1}{2}",  # cut off
    "\\boxed{1} and later \\boxed{2",  # the last box is cut off: no fallback to the earlier one
    "\\boxedx{3}",  # another command
    "\\boxed",
    "\\boxed{\\}",  # the only closing brace is escaped
    "\\boxed{" * 10_000,  # many unbalanced opens, linear time
])
def test_no_answer(text):
    assert last_boxed(text) is None
    assert extract_answer(text) is None


def test_matching_brace_positions():
    assert matching_brace("{a{b}c}", 0) == 6
    assert matching_brace("{a{b}c}", 2) == 4
    assert matching_brace("{a", 0) is None
    with pytest.raises(ValueError, match="not an opening brace"):
        matching_brace("a{", 0)


@pytest.mark.parametrize("pattern, text, expected", [
    (r"Answer: (\S+)", "Answer: 3 ... Answer: 5", "5"),  # group 1, last match
    (r"Answer: (?P<answer>[^\n]+)", "Answer:   x + 1  \nmore", "x + 1"),  # named group, stripped
    (r"\d+", "a 12 b 34", "34"),  # whole match
    (r"Answer: (\S*)", "Answer: ", None),  # empty
    (r"Answer: (\S+)", "nothing", None),
])
def test_pattern_answer(pattern, text, expected):
    assert pattern_answer(text, pattern) == expected
    assert extract_answer(text, pattern) == expected


def test_missing_text_is_no_answer():
    assert extract_answer(None) is None
    assert extract_answer("", r"(\d)") is None


@pytest.mark.parametrize("text, closed", [
    ("Final answer: \\boxed{", False),
    ("Final answer: \\boxed{\\frac{1}{2", False),
    ("Final answer: \\boxed{\\frac{1}{2}", False),
    ("Final answer: \\boxed{\\frac{1}{2}}", True),
    ("Final answer: \\boxed{\\}", False),
    ("no box", False),
])
def test_answer_closed(text, closed):
    assert answer_closed(text) is closed


@pytest.mark.parametrize("text, balanced", [
    ("\\frac{1}{2}", True), ("\\{1, 2\\}", True), ("{", False), ("}{", False), ("a}", False), ("", True),
    ("\\}", True), ("{\\}", False),
])
def test_braces_balanced(text, balanced):
    assert braces_balanced(text) is balanced

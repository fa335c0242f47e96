"""Episodes (METHOD.md, Objects): hand-worked segmentations and join-is-identity properties."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrt_core.envs.base import Role
from mrt_core.envs.code_search import CodeSearchEnv, CodeSearchSpec, TraceConfig, base_guess_fn, synthesize_trace
from mrt_core.episodes import (
    DEFAULT_REFLECTION_MARKERS,
    Boundary,
    Episode,
    SegmentedTrace,
    build_episodes,
    segment,
    segment_attempts,
    segment_backtrack,
    segment_reflection,
)

FAST = settings(max_examples=150, deadline=None)


def texts(trace: SegmentedTrace) -> list[str]:
    return [trace.episode_text(j) for j in range(len(trace.episodes))]


def split(text: str, boundaries, offsets=None) -> list[str]:
    return texts(segment("", text, offsets, boundaries))


# --- build_episodes and SegmentedTrace -------------------------------------------------------


def test_episodes_have_char_and_token_spans_and_markers():
    # one token per character; boundaries given unsorted, duplicated, at 0 and at len(text)
    eps = build_episodes("abcdef", None, [Boundary(4, "W"), Boundary(2), Boundary(4), Boundary(6, "end"), (0,)])
    assert eps == (
        Episode(0, 0, 2, 0, 2, None),
        Episode(1, 2, 4, 2, 4, None),
        Episode(2, 4, 6, 4, 6, "W"),  # the duplicate at 4 without a marker does not erase "W"
    )  # the boundary at 6 would open an empty episode: dropped


def test_boundary_inside_a_token_moves_with_the_token():
    # "abcde" as tokens "abc" (0,3) and "de" (3,5). A boundary at 4 falls inside "de", whose first
    # character (3) lies in the earlier episode [0, 4): the token stays there, the boundary snaps
    # forward to the next token start (5 = end of text), and the later episode is empty: dropped.
    offsets = [(0, 3), (3, 5)]
    assert build_episodes("abcde", offsets, [Boundary(4, "x")]) == (Episode(0, 0, 5, 0, 2, None),)
    # A boundary at 1 lies inside "abc", whose first character (0) is in episode [0, 1): "abc"
    # stays in episode 0 and episode 1 starts at "de".
    assert split("abcde", [Boundary(1)], offsets) == ["abc", "de"]
    assert build_episodes("abcde", offsets, [Boundary(3, "y")])[1] == Episode(1, 3, 5, 1, 2, "y")


def test_marker_at_the_start_names_the_first_episode():
    assert build_episodes("ab", None, [])[0].marker is None
    assert build_episodes("ab", None, [Boundary(0, "Backtrack")])[0].marker == "Backtrack"


def test_empty_text_has_no_episodes():
    trace = segment("Q3:", "", [], [Boundary(0)])
    assert trace.episodes == () and trace.join_text() == "" and trace.join_tokens() == ()


@pytest.mark.parametrize(
    "offsets, message",
    [
        ([(0, 2), (3, 5)], "must start at 2"),  # gap
        ([(0, 3), (2, 5)], "must start at 3"),  # overlap
        ([(1, 5)], "must start at 0"),  # does not start at 0
        ([(0, 2), (2, 2), (2, 5)], "non-empty"),  # zero-width token
        ([(0, 2), (2, 4)], "cover characters \\[0, 4\\) but the text has 5"),  # short
        ([(0, 2), (2, 6)], "cover characters \\[0, 6\\) but the text has 5"),  # long
    ],
)
def test_invalid_token_offsets_raise(offsets, message):
    with pytest.raises(ValueError, match=message):
        build_episodes("abcde", offsets, [])
    with pytest.raises(ValueError, match=message):
        segment("", "abcde", offsets, [])


def test_boundary_outside_text_raises():
    with pytest.raises(ValueError, match="outside the text"):
        build_episodes("abc", None, [Boundary(4)])
    with pytest.raises(ValueError, match="outside the text"):
        build_episodes("abc", None, [Boundary(-1)])


def test_prefix_end_and_joins():
    # "ab|cde|f" with tokens "ab" "cd" "e" "f"
    trace = segment("P:", "abcdef", [(0, 2), (2, 4), (4, 5), (5, 6)], [Boundary(2), Boundary(5)])
    assert texts(trace) == ["ab", "cde", "f"]
    assert [trace.prefix_end(j) for j in range(3)] == [(2, 1), (5, 3), (6, 4)]
    assert trace.join_text() == "abcdef" and trace.join_tokens() == (0, 1, 2, 3)
    with pytest.raises(IndexError):
        trace.prefix_end(3)
    with pytest.raises(IndexError):
        trace.prefix_end(-1)


def test_segmented_trace_rejects_episodes_that_do_not_tile():
    with pytest.raises(ValueError, match="tiling"):
        SegmentedTrace("", "abcd", ((0, 2), (2, 4)), (Episode(0, 0, 2, 0, 1), Episode(1, 3, 4, 1, 2)))
    with pytest.raises(ValueError, match="episodes end"):
        SegmentedTrace("", "abcd", ((0, 2), (2, 4)), (Episode(0, 0, 2, 0, 1),))


# --- segment_attempts -------------------------------------------------------------------------


def test_attempts_of_the_embedded_environment():
    assert split("4>\n6<\n5=2=7=!A:527", segment_attempts("4>\n6<\n5=2=7=!A:527", ("\n", "!"))) == [
        "4>\n",
        "6<\n",
        "5=2=7=!",
        "A:527",
    ]
    trace = "4>\n6<\n5=2=3>\n5=2=7=!A:527"
    assert split(trace, segment_attempts(trace, ("\n", "!"))) == ["4>\n", "6<\n", "5=2=3>\n", "5=2=7=!", "A:527"]


def test_attempts_never_cut_at_the_end_and_prefer_the_longest_end():
    assert segment_attempts("4>\n", ("\n",)) == []  # would open an empty episode
    assert segment_attempts("5=7=!", ("\n", "!")) == []
    assert segment_attempts("xaby", ("a", "ab")) == [Boundary(3)]  # "ab" wins over its prefix "a"
    with pytest.raises(ValueError, match="non-empty"):
        segment_attempts("abc", ("",))


def test_attempts_split_synthesized_traces_at_attempt_ends():
    spec = CodeSearchSpec()
    env = CodeSearchEnv(spec)
    rng = random.Random(0)
    for index in range(0, 512, 37):
        problem = env.make_problem(index)
        segments = synthesize_trace(env, problem, base_guess_fn(spec.n_values, 0.7), TraceConfig(), rng)
        out = "".join(s.text for s in segments if s.role is not Role.PROMPT)
        trace = segment(problem.prompt, out, None, segment_attempts(out, (spec.obs_attempt_end, spec.obs_solved)))
        parts = texts(trace)
        assert trace.join_text() == out
        assert all(p.endswith((spec.obs_attempt_end, spec.obs_solved)) for p in parts[:-1])
        # the engine may cut mid-attempt, so the termination text lies in (not at the start of) the last episode
        assert [spec.termination_text in p for p in parts] == [False] * (len(parts) - 1) + [True]


# --- segment_reflection -----------------------------------------------------------------------

PARAGRAPHS = [
    "Let x = 2.",  # p0: start of text
    "Wait, x is odd?",  # p1
    "So y = 4.",  # p2
    "Alternatively, use z.",  # p3
    "But wait, no.",  # p4
    "Hmm. Actually fine.",  # p5: "Actually" not at the paragraph start
    "  Actually 5.",  # p6: leading spaces are stripped before matching
]
REFLECTION = "\n\n".join(PARAGRAPHS)


def starts(*ps: int) -> list[int]:
    return [REFLECTION.index(PARAGRAPHS[p]) for p in ps]


def test_reflection_ignores_markers_within_two_paragraphs_of_the_last_kept_start():
    # ignore_within=2 (the authors' rule, the default): p1 (1 - 0 <= 2) dropped, p3 (3 - 0) kept,
    # p4 (4 - 3) dropped, p6 (6 - 3 = 3 > 2) kept
    b = segment_reflection(REFLECTION)
    assert [x.char for x in b] == starts(3, 6)
    assert [x.marker for x in b] == ["Alternatively", "Actually"]
    # ignore_within=0 keeps every marked paragraph; the longest marker is recorded ("But wait", not "Wait")
    b1 = segment_reflection(REFLECTION, ignore_within=0)
    assert b1 == [Boundary(c, m) for c, m in zip(starts(1, 3, 4, 6), ["Wait", "Alternatively", "But wait", "Actually"])]
    # a dropped boundary does not reset the gap: markers at p1, p2, p3 -> p1, p2 dropped, p3 (3 - 0) kept
    text = "a\n\nWait b\n\nWait c\n\nWait d"
    assert segment_reflection(text) == [Boundary(text.index("Wait d"), "Wait")]


def test_reflection_gap_follows_the_authors_splitter():
    # markers at paragraphs 3 and 5: the authors' code opens one episode (at 3); 5 - 3 = 2 is ignored
    paras = ["p0", "p1", "p2", "Wait, p3", "p4", "Wait, p5"]
    text = "\n\n".join(paras)
    assert [b.char for b in segment_reflection(text)] == [text.index("Wait, p3")]
    # the earlier rule of this project ("p - prev >= 2") stays reachable: ignore_within=1 gives [3, 5]
    assert [b.char for b in segment_reflection(text, ignore_within=1)] == [text.index("Wait, p3"),
                                                                          text.index("Wait, p5")]


def test_reflection_default_markers_include_the_authors_phrases():
    for phrase in ("But let me double-check", "Is there another way to think about this?"):
        text = f"a\n\nb\n\nc\n\n{phrase} Yes."
        assert segment_reflection(text) == [Boundary(text.index(phrase), phrase)]


def test_reflection_episode_starts_at_the_paragraph_start():
    parts = split(REFLECTION, segment_reflection(REFLECTION))
    assert parts == ["\n\n".join(PARAGRAPHS[:3]) + "\n\n", "\n\n".join(PARAGRAPHS[3:6]) + "\n\n", PARAGRAPHS[6]]


def test_reflection_cap_merges_the_tail_into_the_last_episode():
    # ignore_within=0 gives 4 boundaries (5 episodes); max_episodes=3 keeps the first 2 boundaries
    b = segment_reflection(REFLECTION, ignore_within=0, max_episodes=3)
    assert [x.char for x in b] == starts(1, 3)
    assert split(REFLECTION, b)[-1] == "\n\n".join(PARAGRAPHS[3:])
    assert segment_reflection(REFLECTION, ignore_within=0, max_episodes=1) == []
    assert len(segment_reflection(REFLECTION, ignore_within=0, max_episodes=9)) == 4  # under the cap: unchanged


def test_reflection_grouping_keeps_every_group_size_th_boundary():
    # boundaries at p1 p3 p4 p6 open episodes 1..4; groups of 2 -> episodes {0,1} {2,3} {4}
    assert [x.char for x in segment_reflection(REFLECTION, ignore_within=0, group_size=2)] == starts(3, 6)
    assert [x.char for x in segment_reflection(REFLECTION, ignore_within=0, group_size=3)] == starts(4)
    # cap first, then group: 3 boundaries p1 p3 p4 in groups of 2 -> p3
    assert [x.char for x in segment_reflection(REFLECTION, ignore_within=0, max_episodes=4, group_size=2)] == starts(3)


def test_reflection_markers_are_case_sensitive_whole_words_at_paragraph_starts():
    text = "a\n\nwait, lower\n\nWaiting is not a marker\n\nSo. Wait inside\n\n\n\n  Wait, spaced\n\n"
    b = segment_reflection(text, ignore_within=0)
    assert b == [Boundary(text.index("  Wait, spaced"), "Wait")]  # "\n\n\n\n" is one break
    assert segment_reflection("Wait at the very start\n\nplain", ignore_within=0) == []
    assert segment_reflection("x\n\nCheck: y", markers=("Check:",), ignore_within=0) == [Boundary(3, "Check:")]
    with pytest.raises(ValueError):
        segment_reflection(text, group_size=0)
    with pytest.raises(ValueError):
        segment_reflection(text, max_episodes=0)


# --- segment_backtrack ------------------------------------------------------------------------


def test_backtrack_markers_open_episodes_at_their_first_character():
    text = "Step 1: a\nStep 2: b\nBacktrack to step 1\nStep 2: c\nLet me go back to the beginning.\nStep 1: d"
    b = segment_backtrack(text)
    assert b == [
        Boundary(text.index("Backtrack"), "Backtrack to step 1"),
        Boundary(text.index("back to the"), "back to the beginning"),
    ]
    trace = segment("Q:", text, None, b)
    assert texts(trace) == [
        "Step 1: a\nStep 2: b\n",
        "Backtrack to step 1\nStep 2: c\nLet me go ",
        "back to the beginning.\nStep 1: d",
    ]
    assert [e.marker for e in trace.episodes] == [None, "Backtrack to step 1", "back to the beginning"]
    assert segment_backtrack("Backtrack to step 12.") == [Boundary(0, "Backtrack to step 12")]
    assert segment_backtrack("Step 1: a\nStep 2: b") == []
    assert segment_backtrack("a Redo from 3", patterns=(r"Redo from \d",)) == [Boundary(2, "Redo from 3")]


# --- properties: segment-then-join is the identity ---------------------------------------------


@st.composite
def tokenized(draw, alphabet="ab \n"):
    """A text, a random contiguous tokenization of it and a random boundary list."""
    text = draw(st.text(alphabet=alphabet, max_size=40))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)))) - {len(text)}) if text else []
    edges = [0, *cuts, len(text)] if text else [0]
    offsets = list(zip(edges, edges[1:]))
    marker = st.one_of(st.none(), st.sampled_from(["Wait", "Backtrack"]))
    boundaries = draw(st.lists(st.builds(Boundary, st.integers(0, len(text)), marker), max_size=8))
    return text, offsets, boundaries


def assert_tiles(trace: SegmentedTrace) -> None:
    assert trace.join_text() == trace.text
    assert trace.join_tokens() == tuple(range(len(trace.token_offsets)))
    assert all(e.char_end > e.char_start and e.tok_end > e.tok_start for e in trace.episodes)
    assert all(e.char_start == trace.token_offsets[e.tok_start][0] for e in trace.episodes)


@FAST
@given(tokenized())
def test_join_is_identity_and_tokens_follow_their_first_character(case):
    text, offsets, boundaries = case
    trace = segment("Q:", text, offsets, boundaries)
    assert_tiles(trace)
    # reference: tokens t and t+1 share an episode iff no boundary lies in (start_t, start_{t+1}]
    owner = {t: j for j, e in enumerate(trace.episodes) for t in range(e.tok_start, e.tok_end)}
    chars = {b.char for b in boundaries}
    for t in range(len(offsets) - 1):
        split_here = any(offsets[t][0] < c <= offsets[t + 1][0] for c in chars)
        assert owner[t + 1] == owner[t] + int(split_here)


@FAST
@given(st.text(alphabet="ab\n", max_size=30), st.lists(st.integers(0, 30), max_size=6))
def test_one_token_per_character_by_default(text, chars):
    trace = segment("", text, None, [Boundary(c) for c in chars if c <= len(text)])
    assert_tiles(trace)
    assert trace.token_offsets == tuple((i, i + 1) for i in range(len(text)))
    assert [e.char_start for e in trace.episodes] == sorted({0, *chars} & set(range(len(text))))


OPENERS = [*DEFAULT_REFLECTION_MARKERS, "So", "Then", "Waiting", "wait", " Wait", ""]
paragraphs = st.builds("{} {}".format, st.sampled_from(OPENERS), st.text(alphabet="xy .,", max_size=12))


@FAST
@given(
    st.lists(paragraphs, max_size=10),
    st.lists(st.sampled_from(["\n\n", "\n\n\n", "\n \n", "\n"]), min_size=10, max_size=10),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(1, 5)),
    st.integers(1, 3),
)
def test_reflection_segmentation_joins_back(paras, breaks, ignore_within, max_episodes, group_size):
    text = "".join(p + br for p, br in zip(paras, breaks))
    b = segment_reflection(text, ignore_within=ignore_within, max_episodes=max_episodes, group_size=group_size)
    trace = segment("", text, None, b)
    assert_tiles(trace)
    if max_episodes is not None:
        assert len(trace.episodes) <= max_episodes
    for e in trace.episodes[1:]:  # each later episode opens with its marker after blank lines
        assert trace.text[: e.char_start].endswith("\n")
        assert trace.episode_text(e.index).lstrip().startswith(e.marker)


@FAST
@given(
    st.lists(
        st.one_of(
            st.builds("Step {}: {}\n".format, st.integers(1, 9), st.text(alphabet="xy ", max_size=6)),
            st.builds("Backtrack to step {}.\n".format, st.integers(1, 12)),
            st.sampled_from(["Go back to the beginning.\n", "Backtrack to the beginning\n"]),
        ),
        max_size=10,
    )
)
def test_backtrack_segmentation_joins_back(lines):
    text = "".join(lines)
    trace = segment("", text, None, segment_backtrack(text))
    assert_tiles(trace)
    n_markers = sum(not line.startswith("Step") for line in lines)
    # a marker at character 0 opens the first episode itself; "Go back..." leaves "Go " before it
    assert len(trace.episodes) == n_markers + int(bool(lines) and lines[0].startswith(("Step", "Go")))
    assert all(trace.episode_text(e.index).startswith(e.marker) for e in trace.episodes if e.marker)


@FAST
@given(st.text(alphabet="0123<>=!\nA:", max_size=40))
def test_attempt_segmentation_joins_back(text):
    trace = segment("Q3:", text, None, segment_attempts(text, ("\n", "!")))
    assert_tiles(trace)
    # reference: cut after every "\n" or "!" (re.split keeps the delimiters with the capture group)
    pieces = re.split(r"([\n!])", text)
    expected = [a + d for a, d in zip(pieces[0::2], pieces[1::2] + [""])]
    assert texts(trace) == [p for p in expected if p]

"""Episodes: split a rollout's output into the spans ``z_0, ..., z_{k-1}`` (METHOD.md, Objects).

Notation: ``text`` is the output after the prompt; ``token_offsets[t] = (start, end)`` is the
character span of output token t within ``text``. An episode is a half-open character span
``[char_start, char_end)`` and the half-open token range ``[tok_start, tok_end)`` of the tokens
it owns. Episodes tile the output: joined in order they give back ``text`` and every token index.

Token boundary convention (stated once, here): a token belongs to the episode in which its
*first character* lies. A boundary that falls inside a token therefore moves with the token:
it snaps forward to the start of the next token, so the token stays in the earlier episode,
and episode character spans always start at token starts.

Segmenters (``segment_reflection``, ``segment_backtrack``, ``segment_attempts``) only look at
text and return ``Boundary`` lists; ``build_episodes`` turns boundaries into episodes.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

Offsets = tuple[tuple[int, int], ...]

DEFAULT_REFLECTION_MARKERS: tuple[str, ...] = (
    "Wait",
    "But wait",
    "Hmm, wait",
    "Alternatively",
    "But hold on",
    "Hold on",
    "Let me double-check",
    "But let me double-check",
    "Let me check",
    "Let me verify",
    "Let me reconsider",
    "Actually",
    "However, let me",
    "Is there another way to think about this?",
)
# The authors' splitter ignores a marker 1 or 2 paragraphs after the last episode start.
AUTHORS_IGNORE_WITHIN = 2
DEFAULT_BACKTRACK_PATTERNS: tuple[str, ...] = (
    r"[Bb]acktrack to step \d+",
    r"[Bb]acktrack to the beginning",
    r"\b[Bb]ack to the beginning",
)
# A blank line: a newline followed by one or more (whitespace-only) lines.
_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t]*\n)+")
_LEADING_SPACE = re.compile(r"\s*")


class Boundary(NamedTuple):
    """An episode starts at character ``char`` of the output; ``marker`` is the text that opened
    it (None when there is none). METHOD.md, Objects."""

    char: int
    marker: str | None = None


@dataclass(frozen=True)
class Episode:
    """Episode ``z_index``: characters ``[char_start, char_end)`` of the output text and tokens
    ``[tok_start, tok_end)`` of the output tokens (ends exclusive). ``marker`` is the text that
    opened it; None for the episode opened by the start of the text, or when there is no marker.
    METHOD.md, Objects."""

    index: int
    char_start: int
    char_end: int
    tok_start: int
    tok_end: int
    marker: str | None = None


@dataclass(frozen=True)
class SegmentedTrace:
    """A prompt, its output ``text``, the output tokens' character spans ``token_offsets``
    (length T) and the k ``episodes`` that tile both. The context before episode j is
    ``c_j = prompt + text[:episodes[j].char_start]``. METHOD.md, Objects."""

    prompt: str
    text: str
    token_offsets: Offsets
    episodes: tuple[Episode, ...]

    def __post_init__(self) -> None:
        _check_tiling(self.episodes, len(self.text), len(self.token_offsets))

    def episode_text(self, j: int) -> str:
        """The text of episode ``z_j``."""
        e = self.episodes[j]
        return self.text[e.char_start : e.char_end]

    def join_text(self) -> str:
        """``z_0 + ... + z_{k-1}`` in characters; equals ``text``."""
        return "".join(self.episode_text(j) for j in range(len(self.episodes)))

    def join_tokens(self) -> tuple[int, ...]:
        """The episodes' token indices, concatenated; equals ``tuple(range(T))``."""
        return tuple(t for e in self.episodes for t in range(e.tok_start, e.tok_end))

    def prefix_end(self, j: int) -> tuple[int, int]:
        """``(char_end, tok_end)`` of the prefix through episode j, i.e. of ``c_{j+1}``
        (0 <= j < k; the empty prefix ``c_0`` ends at ``(0, 0)``)."""
        if not 0 <= j < len(self.episodes):
            raise IndexError(f"episode {j} out of range for {len(self.episodes)} episodes")
        e = self.episodes[j]
        return e.char_end, e.tok_end


def build_episodes(
    text: str, token_offsets: Sequence[tuple[int, int]] | None, boundaries: Iterable[Boundary]
) -> tuple[Episode, ...]:
    """Episodes of ``text`` opened at ``boundaries`` (any order, duplicates allowed); METHOD.md, Objects.

    An episode always starts at character 0; empty episodes are dropped. ``token_offsets``
    (length T, contiguous, covering ``text``) or None for one token per character. A token
    belongs to the episode of its first character, so a boundary inside a token snaps forward
    to the next token start. When several boundaries land on one start, the first one (in
    character order) that names a marker gives the marker. Returns k episodes, indexed 0..k-1.
    """
    offsets = _validate_offsets(text, token_offsets)
    starts = [s for s, _ in offsets]
    cuts: dict[int, str | None] = {0: None}  # token index -> marker of the episode it opens
    for char, marker in sorted(_validate_boundaries(text, boundaries), key=lambda b: b[0]):
        tok = bisect.bisect_left(starts, char)  # first token starting at or after the boundary
        if cuts.get(tok) is None:
            cuts[tok] = marker
    return _episodes_from_cuts(cuts, starts, len(text))


def segment(
    prompt: str, text: str, token_offsets: Sequence[tuple[int, int]] | None, boundaries: Iterable[Boundary]
) -> SegmentedTrace:
    """``build_episodes`` wrapped with its inputs into a ``SegmentedTrace``; ``token_offsets=None``
    means one token per character (stored as explicit spans). METHOD.md, Objects."""
    offsets = _validate_offsets(text, token_offsets)
    return SegmentedTrace(prompt, text, offsets, build_episodes(text, offsets, boundaries))


def segment_reflection(
    text: str,
    markers: Sequence[str] = DEFAULT_REFLECTION_MARKERS,
    ignore_within: int = AUTHORS_IGNORE_WITHIN,
    max_episodes: int | None = None,
    group_size: int = 1,
) -> list[Boundary]:
    """Boundaries of an open-ended (R1-style) trace; MRT.md "Splitting traces", METHOD.md, Objects.

    Paragraphs are separated by blank lines. Paragraph p >= 1 whose stripped start begins with
    one of ``markers`` (case-sensitive, whole word) opens an episode at its first character.
    Then, in order: ignore a marker ``1..ignore_within`` paragraphs after the last kept boundary,
    i.e. keep it only if ``p - p_prev_kept > ignore_within`` (the text start is the boundary of
    paragraph 0; the authors' rule is ``ignore_within=2``: markers at paragraphs 3 and 5 give one
    boundary, at 3; 0 keeps every marker); keep at most ``max_episodes - 1`` boundaries (the tail
    merges into the last episode); keep every ``group_size``-th boundary (groups of episodes merge).
    """
    if ignore_within < 0 or group_size < 1 or (max_episodes is not None and max_episodes < 1):
        raise ValueError(
            f"need ignore_within >= 0, group_size >= 1 and max_episodes >= 1 or None; "
            f"got ignore_within={ignore_within}, group_size={group_size}, max_episodes={max_episodes}"
        )
    found = _marked_paragraphs(text, _marker_regex(markers))
    kept, prev = [], 0
    for p, boundary in found:
        if p - prev > ignore_within:
            kept.append(boundary)
            prev = p
    if max_episodes is not None:
        kept = kept[: max_episodes - 1]  # k episodes need k - 1 boundaries
    return kept[group_size - 1 :: group_size]  # boundary i opens episode i + 1


def segment_backtrack(text: str, patterns: Sequence[str] = DEFAULT_BACKTRACK_PATTERNS) -> list[Boundary]:
    """Boundaries of a backtracking trace; MRT.md "Splitting traces", METHOD.md, Objects.

    Each match of a regex in ``patterns`` opens an episode at its first character, with the
    matched text as marker (the longest match wins where several start at one character).
    """
    found: dict[int, str] = {}
    for pattern in patterns:
        for m in re.finditer(pattern, text):
            if m.group(0) and len(m.group(0)) > len(found.get(m.start(), "")):
                found[m.start()] = m.group(0)
    return [Boundary(char, marker) for char, marker in sorted(found.items())]


def segment_attempts(text: str, attempt_ends: Sequence[str]) -> list[Boundary]:
    """Boundaries between the embedded environment's attempts; METHOD.md, Objects.

    An episode starts right after each (non-overlapping, leftmost-longest) occurrence of an
    ``attempt_ends`` string, e.g. ``("\\n", "!")``; what follows the last one (termination text
    and answer) is the final episode. Never a boundary at ``len(text)``. Markers are None.
    """
    if not attempt_ends or any(not end for end in attempt_ends):
        raise ValueError(f"attempt_ends must be non-empty strings, got {attempt_ends!r}")
    # Longest first so that a multi-character end wins over its own prefix.
    regex = re.compile("|".join(re.escape(end) for end in sorted(attempt_ends, key=len, reverse=True)))
    return [Boundary(m.end()) for m in regex.finditer(text) if m.end() < len(text)]


def _validate_offsets(text: str, token_offsets: Sequence[tuple[int, int]] | None) -> Offsets:
    """Explicit offsets; raises ValueError unless they are non-empty, contiguous and cover ``text``."""
    if token_offsets is None:
        return tuple((i, i + 1) for i in range(len(text)))
    offsets = tuple((int(s), int(e)) for s, e in token_offsets)
    position = 0
    for t, (start, end) in enumerate(offsets):
        if start != position or end <= start:
            raise ValueError(
                f"token {t} has span ({start}, {end}); token spans must be non-empty and contiguous, "
                f"so it must start at {position}"
            )
        position = end
    if position != len(text):
        raise ValueError(f"token spans cover characters [0, {position}) but the text has {len(text)} characters")
    return offsets


def _validate_boundaries(text: str, boundaries: Iterable[Boundary]) -> list[Boundary]:
    checked = [Boundary(*b) for b in boundaries]  # plain (char, marker) tuples are accepted too
    bad = [b.char for b in checked if not 0 <= b.char <= len(text)]
    if bad:
        raise ValueError(f"boundaries {bad} lie outside the text [0, {len(text)}]")
    return checked


def _episodes_from_cuts(cuts: dict[int, str | None], starts: list[int], n_chars: int) -> tuple[Episode, ...]:
    """Episodes between consecutive token cuts; a cut at T (past the last token) opens nothing."""
    n_tokens = len(starts)
    edges = sorted(t for t in cuts if t < n_tokens) + [n_tokens]
    episodes = []
    for tok_start, tok_end in zip(edges, edges[1:]):
        if tok_end > tok_start:  # drop empty episodes
            char_end = starts[tok_end] if tok_end < n_tokens else n_chars
            episodes.append(Episode(len(episodes), starts[tok_start], char_end, tok_start, tok_end, cuts[tok_start]))
    return tuple(episodes)


def _check_tiling(episodes: Sequence[Episode], n_chars: int, n_tokens: int) -> None:
    """Raise ValueError unless the episodes tile [0, n_chars) and [0, n_tokens) in order."""
    char, tok = 0, 0
    for j, e in enumerate(episodes):
        if (e.index, e.char_start, e.tok_start) != (j, char, tok) or e.char_end <= char or e.tok_end <= tok:
            raise ValueError(f"episode {j} ({e}) does not continue the tiling at char {char}, token {tok}")
        char, tok = e.char_end, e.tok_end
    if (char, tok) != (n_chars, n_tokens):
        raise ValueError(f"episodes end at char {char}, token {tok}; the trace has {n_chars} chars, {n_tokens} tokens")


def _marker_regex(markers: Sequence[str]) -> re.Pattern[str]:
    """Any marker at the match position, longest first, not followed by a word character when
    it ends in one ("Wait" matches "Wait," but not "Waiting")."""
    if not markers or any(not m for m in markers):
        raise ValueError(f"markers must be non-empty strings, got {markers!r}")
    alternatives = [re.escape(m) + (r"(?!\w)" if re.match(r"\w", m[-1]) else "") for m in markers]
    return re.compile("|".join(sorted(alternatives, key=len, reverse=True)))


def _marked_paragraphs(text: str, marker: re.Pattern[str]) -> list[tuple[int, Boundary]]:
    """``(p, Boundary(start of paragraph p, marker))`` for each paragraph p >= 1 opening with a marker."""
    # Leading blank lines belong to paragraph 0; a break at the very end opens no paragraph.
    starts = [0] + [m.end() for m in _PARAGRAPH_BREAK.finditer(text) if m.start() > 0 and m.end() < len(text)]
    found = []
    for p, start in enumerate(starts[1:], start=1):
        m = marker.match(text, _LEADING_SPACE.match(text, start).end())
        if m:
            found.append((p, Boundary(start, m.group(0))))
    return found

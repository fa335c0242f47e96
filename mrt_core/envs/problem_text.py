"""Problem-text hygiene for real datasets: cleaning, duplicate keys, train/eval contamination.

Two normal forms, on purpose:

- ``clean_text`` / ``clean_answer`` produce what is *stored* and shown to the model: Unicode
  NFC (canonical composition only), unified line ends, no trailing spaces, at most one blank
  line in a row. NFKC is not used here because it changes mathematics: it maps ``x²`` to
  ``x2`` and ``½`` to ``1⁄2``.
- ``match_key`` is what is *compared* (duplicates, contamination): NFKC, case-folded, every
  whitespace run one space. Two problems that differ only in such details count as the same.

Contamination of an evaluation problem by a training problem is an exact match of keys, or a
share of the evaluation problem's word n-grams (``word_ngrams``) found in one training problem
at or above a threshold (``contamination`` returns every such pair). A problem with fewer than
n words has no n-grams and can only match exactly.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUN = re.compile(r"\n{3,}")
_SPACE_RUN = re.compile(r"\s+")
_WORD = re.compile(r"\w+|[^\w\s]")  # words, and each other symbol on its own ("\", "{", "^", ...)
_MATH_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def clean_text(text: str) -> str:
    """Stored form of a problem: NFC, ``\\r\\n``/``\\r`` to ``\\n``, no trailing spaces on a line,
    at most one blank line in a row, stripped. METHOD.md, Objects (the problem x)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUN.sub("\n\n", text).strip()


def clean_answer(answer: str) -> str:
    """Stored form of a reference answer: ``clean_text``, whitespace runs to one space, and one
    layer of math delimiters (``$...$``, ``\\(...\\)``, ``\\[...\\]``) removed. METHOD.md,
    Objects (the reward r(x, y))."""
    answer = _SPACE_RUN.sub(" ", clean_text(answer)).strip()
    for opener, closer in _MATH_WRAPPERS:
        if len(answer) > len(opener) + len(closer) and answer.startswith(opener) and answer.endswith(closer):
            return answer[len(opener) : -len(closer)].strip()
    return answer


def match_key(text: str) -> str:
    """The comparison form: NFKC, case-folded, whitespace runs to one space, stripped.
    METHOD.md, Objects (the problem x)."""
    return _SPACE_RUN.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def word_ngrams(key: str, n: int) -> frozenset[tuple[str, ...]]:
    """The set of n-grams of the key's words (``\\w+`` runs and single other symbols).
    METHOD.md, Objects (the problem x)."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    words = _WORD.findall(key)
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def duplicate_indices(keys: Sequence[str]) -> list[int]:
    """Indices of keys seen earlier in ``keys`` (the first occurrence is kept), in order.
    METHOD.md, Objects (the problem x)."""
    seen: set[str] = set()
    dupes = []
    for i, key in enumerate(keys):
        if key in seen:
            dupes.append(i)
        seen.add(key)
    return dupes


@dataclass(frozen=True)
class Overlap:
    """Evaluation problem ``eval_index`` is contaminated by training problem ``train_index``:
    ``kind`` "exact" (equal keys, score 1) or "ngram" (``score`` = share of its n-grams found
    in that training problem)."""

    eval_index: int
    train_index: int
    kind: str
    score: float


def contamination(eval_keys: Sequence[str], train_keys: Sequence[str], n: int, threshold: float) -> list[Overlap]:
    """Every (evaluation, training) pair where the evaluation problem is found in the training
    problem: equal keys ("exact"), or a share >= ``threshold`` of the evaluation problem's
    n-grams in it ("ngram"). Sorted by evaluation index, then by score (highest first), then
    by training index. METHOD.md, Objects (the problem x)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the n-gram overlap threshold must be in (0, 1], got {threshold}")
    # Index the evaluation side (small: MATH-500) and stream the training side (possibly
    # hundreds of thousands of problems): memory stays proportional to the evaluation set.
    exact: dict[str, list[int]] = {}
    index: dict[tuple[str, ...], list[int]] = {}
    sizes = []
    for i, key in enumerate(eval_keys):
        exact.setdefault(key, []).append(i)
        grams = word_ngrams(key, n)
        sizes.append(len(grams))
        for gram in grams:
            index.setdefault(gram, []).append(i)
    found = []
    for j, key in enumerate(train_keys):
        same = exact.get(key, ())
        found += [Overlap(i, j, "exact", 1.0) for i in same]
        shared = Counter(i for gram in word_ngrams(key, n) for i in index.get(gram, ()))
        found += [Overlap(i, j, "ngram", c / sizes[i]) for i, c in shared.items()
                  if i not in same and c / sizes[i] >= threshold]
    return sorted(found, key=lambda o: (o.eval_index, -o.score, o.train_index))

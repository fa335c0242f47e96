"""Final-answer extraction from model text: the last ``\\boxed{...}`` or a configured pattern.

Pure string scanning, never evaluation: the result is a substring of the input (or None). A
missing answer is None, and so is a cut-off one (the last ``\\boxed{`` never closes): the
answer the model was writing when it stopped is not an answer (a missing answer is wrong,
METHOD.md, Objects).

Brace rules (LaTeX): ``{`` and ``}`` group; a backslash escapes the next character, so ``\\{``
and ``\\}`` are literal braces inside the answer (``\\boxed{\\{1, 2\\}}`` gives ``\\{1, 2\\}``)
and ``\\\\`` is one escaped backslash. The scan is linear and iterative, so deep nesting and
huge inputs cost O(n) time and O(1) stack.
"""

from __future__ import annotations

import re
from collections import deque

BOX_COMMANDS: tuple[str, ...] = ("\\boxed", "\\fbox")
# "\boxed" (or "\fbox") not followed by a letter: "\boxedx" is another command.
_BOX = re.compile("|".join(re.escape(c) for c in BOX_COMMANDS) + r"(?![A-Za-z])")
# "\boxed 5": without braces LaTeX takes one token; we take the run up to whitespace or "$".
_BARE_ARGUMENT = re.compile(r"[ \t]+([^\s${}]+)")


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``text[open_at]``, or None if it never closes.
    Escaped braces (``\\{``, ``\\}``) do not count. METHOD.md, Objects (the reward r(x, y))."""
    if open_at >= len(text) or text[open_at] != "{":
        raise ValueError(f"text[{open_at}] is not an opening brace")
    depth, i, n = 0, open_at, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # the escaped character never groups
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_content(text: str, command_end: int) -> str | None:
    """The argument of a box command that ends at ``command_end``: ``{...}`` with nested braces,
    or one bare run after spaces (``\\boxed 5``); None when absent, unbalanced or empty after
    stripping. METHOD.md, Objects (the reward r(x, y))."""
    i = command_end
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i < len(text) and text[i] == "{":
        close = matching_brace(text, i)
        if close is None:
            return None
        content = text[i + 1 : close].strip()
        return content or None
    bare = _BARE_ARGUMENT.match(text, command_end)
    return bare.group(1) if bare else None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed``/``\\fbox`` in ``text``; None when there is none, or
    when the last one is unbalanced or empty (a cut-off answer is no answer; an earlier box is
    not used in its place). METHOD.md, Objects (the reward r(x, y))."""
    last = _last_match(_BOX, text)
    return None if last is None else boxed_content(text, last.end())


def pattern_answer(text: str, pattern: str | re.Pattern[str]) -> str | None:
    """The last match of ``pattern`` in ``text``: its group ``answer`` if the pattern names one,
    else group 1 if it has groups, else the whole match; stripped; None when absent or empty.
    METHOD.md, Objects (the reward r(x, y))."""
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    last = _last_match(regex, text)
    if last is None:
        return None
    if "answer" in regex.groupindex:
        found = last.group("answer")
    else:
        found = last.group(1) if regex.groups else last.group(0)
    return (found or "").strip() or None


def extract_answer(text: str | None, pattern: str | re.Pattern[str] | None = None) -> str | None:
    """The final answer in ``text``: ``pattern_answer`` when a pattern is configured, else
    ``last_boxed``. None for a missing text. METHOD.md, Objects (the reward r(x, y))."""
    if not text:
        return None
    return last_boxed(text) if pattern is None else pattern_answer(text, pattern)


def answer_closed(text: str) -> bool:
    """Whether the last box command in ``text`` has its closing brace: the point at which a
    forced answer (termination text ending in ``\\boxed{``) is complete and generation can
    stop. METHOD.md (1) (the forced answer of the meta-prover)."""
    last = _last_match(_BOX, text)
    if last is None:
        return False
    i = last.end()
    while i < len(text) and text[i] in " \t\n":
        i += 1
    return i < len(text) and text[i] == "{" and matching_brace(text, i) is not None


def braces_balanced(text: str) -> bool:
    """Whether every ``{`` in ``text`` closes and no ``}`` closes nothing (escaped braces do not
    count): the structural check a reference answer must pass to be gradable. METHOD.md,
    Objects (the reward r(x, y))."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def _last_match(regex: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = deque(regex.finditer(text), maxlen=1)
    return found[0] if found else None

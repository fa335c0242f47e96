"""Templates of text problems: every string the model sees around a problem (set from the
``template`` section of params), and ``render_prompt``.

Two styles. ``r1_think``: an R1-style ``<think>`` block the policy closes with ``think_close``;
its episodes start at reflection markers ("Wait", "Alternatively", ...). ``backtrack``:
numbered steps ("Step 1: ...") whose episodes start at a backtrack marker ("Backtrack to
step 2"). The termination text forces an answer (the meta-prover's question, METHOD.md (1));
by default it ends in ``\\boxed{`` so the forced answer is boxed.

Kept apart from ``math_text`` (the environment) so that configuration and dataset code can
use templates without importing the episode machinery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROBLEM_FIELD = "{problem}"
STEP_FIELD = "{n}"
STYLES = ("r1_think", "backtrack")

R1_PROMPT = ("<|user|>\n{problem}\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
             "<|assistant|>\n<think>\n")
R1_TERMINATION = "\n\nTime is up. I should stop thinking and give a final answer.\n</think>\n\nFinal answer: \\boxed{"
BACKTRACK_PROMPT = (
    "<|user|>\n{problem}\nSolve the problem in numbered steps (\"Step 1: ...\"). If a step turns out wrong, "
    "write \"Backtrack to step N\" and go on from step N. End with the final answer within \\boxed{}.\n<|assistant|>\n"
)
BACKTRACK_TERMINATION = "\n\nTime is up. Final answer: \\boxed{"


@dataclass(frozen=True)
class MathTemplate:
    """Every string the model sees around a text problem (all set from params)."""

    style: str = "r1_think"
    prompt: str = R1_PROMPT  # must contain "{problem}" once; no other braces are special
    think_close: str = "</think>"  # the policy ends its thinking with this (r1_think)
    termination_text: str = R1_TERMINATION  # forces the answer: the meta-prover's question
    continuation_text: str = "\n\nWait"  # budget forcing: appended when an early stop is overridden
    answer_pattern: str | None = None  # regex for the answer; None = the last \boxed{...}
    reflection_markers: tuple[str, ...] | None = None  # r1_think episode starts; None: episodes' defaults
    ignore_within: int = 2  # a marker this many paragraphs after the last episode start is ignored (authors: 2)
    max_episodes: int | None = None
    group_size: int = 1
    step_text: str = "Step {n}:"  # backtrack style: how a step starts
    backtrack_text: str = "Backtrack to step {n}"  # backtrack style: episode start
    max_answer_tokens: int = 32  # longest forced answer

    def __post_init__(self) -> None:
        problems = []
        if self.style not in STYLES:
            problems.append(f"style must be one of {STYLES}, got {self.style!r}")
        if self.prompt.count(PROBLEM_FIELD) != 1:
            problems.append(f"prompt must contain {PROBLEM_FIELD} exactly once, got {self.prompt.count(PROBLEM_FIELD)}")
        if not self.termination_text or not self.think_close:
            problems.append("termination_text and think_close must be non-empty")
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                problems.append(f"answer_pattern is not a valid regex: {exc}")
        if self.reflection_markers is not None and (not self.reflection_markers
                                                    or any(not m for m in self.reflection_markers)):
            problems.append("reflection_markers must be a non-empty list of non-empty strings (or null)")
        for name in ("step_text", "backtrack_text"):
            if getattr(self, name).count(STEP_FIELD) != 1:
                problems.append(f"{name} must contain {STEP_FIELD} exactly once")
        if self.ignore_within < 0 or self.group_size < 1 or (self.max_episodes is not None and self.max_episodes < 1):
            problems.append("need ignore_within >= 0, group_size >= 1, max_episodes >= 1 or None")
        if self.max_answer_tokens < 1:
            problems.append("max_answer_tokens must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))

    def backtrack_regex(self) -> str:
        """``backtrack_text`` as a regex: ``{n}`` matches a step number."""
        before, after = self.backtrack_text.split(STEP_FIELD)
        return re.escape(before) + r"\d+" + re.escape(after)

    def step_header(self, n: int) -> str:
        return self.step_text.replace(STEP_FIELD, str(n))

    def backtrack_marker(self, n: int) -> str:
        return self.backtrack_text.replace(STEP_FIELD, str(n))


def render_prompt(template: MathTemplate, problem: str) -> str:
    """The prompt the model sees: ``template.prompt`` with ``{problem}`` replaced by the problem
    text (a plain replacement: braces in the problem or the template stay as they are).
    METHOD.md, Objects (the problem x)."""
    return template.prompt.replace(PROBLEM_FIELD, problem)

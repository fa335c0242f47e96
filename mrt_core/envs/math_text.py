"""Single-turn text problems (math): forced answers and episodes of open-ended traces.

A math problem has no interactive feedback: the policy writes one long output, the
environment never answers (every step's observation is empty and never wasted), and the
grader decides whether the final answer is right. What this module adds over the interface:

- The strings come from a ``MathTemplate`` (``mrt_core.envs.templates``): the prompt format,
  the text the policy uses to end its thinking (``think_close``), the termination text that
  forces an answer (the meta-prover's question, METHOD.md (1)), the continuation text of
  budget forcing, and the episode markers.
- Two styles. ``r1_think``: an R1-style ``<think>`` block whose episodes start at reflection
  markers ("Wait", "Alternatively", ...; ``mrt_core.episodes.segment_reflection``).
  ``backtrack``: numbered steps ("Step 1: ...") whose episodes start at a backtrack marker
  ("Backtrack to step 2"; ``segment_backtrack``).
- Answers: the forced answer is the text after the termination text, which ends in
  ``\\boxed{`` by default, so the answer is complete when that brace closes
  (``answer_complete``); the answer is the last ``\\boxed{}`` (or a configured pattern) of
  termination text + continuation (``forced_answer``).

The grader is injected (``mrt_lib.grading.MathGrader`` in the pipeline), so this module stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from mrt_core.envs.answers import answer_closed, extract_answer
from mrt_core.envs.base import Grader, Problem, StepResult
from mrt_core.envs.templates import MathTemplate, render_prompt
from mrt_core.episodes import (
    DEFAULT_REFLECTION_MARKERS,
    Boundary,
    Episode,
    build_episodes,
    segment_backtrack,
    segment_reflection,
)


@dataclass(frozen=True)
class MathState:
    """What the environment knows during a rollout: the problem and the steps (tokens) seen."""

    problem_id: str
    steps: int = 0


class MathEnv:
    """A single-turn text environment (implements ``mrt_core.envs.base.Environment``)."""

    def __init__(self, template: MathTemplate, grader: Grader):
        self.template = template
        self.termination_text = template.termination_text
        self.continuation_text = template.continuation_text
        self.grader = grader

    # --- the Environment interface ----------------------------------------------------------
    def render_prompt(self, problem: str) -> str:
        """The prompt for a problem *text* (the code-search environment renders from its
        answer; a text problem renders from its statement)."""
        return render_prompt(self.template, problem)

    def initial_state(self, problem: Problem) -> MathState:
        return MathState(problem.id)

    def step(self, state: MathState, action: str) -> StepResult:
        """No feedback: the observation is empty and a step is never wasted."""
        return StepResult(MathState(state.problem_id, state.steps + 1), "", False)

    def is_action(self, token_text: str) -> bool:
        """Any text is a step (there is no action grammar)."""
        return True

    def answer_length(self, problem: Problem) -> int:
        """An upper bound on the forced answer's tokens; the answer usually ends earlier, when
        ``answer_complete`` says so."""
        return self.template.max_answer_tokens

    # --- answers ----------------------------------------------------------------------------
    def answer_complete(self, continuation: str) -> bool:
        """Whether the text generated after the termination text completes the answer: the box
        the termination text opened is closed (boxed answers), or a pattern match is followed
        by a line break (``answer_pattern``). METHOD.md (1)."""
        text = self.termination_text + continuation
        if self.template.answer_pattern is None:
            return answer_closed(text)
        match = extract_answer(text, self.template.answer_pattern)
        return match is not None and "\n" in continuation.lstrip("\n")

    def answer_opening(self) -> str:
        """What to append after the policy itself wrote ``think_close`` to get its answer in the
        same form as a forced one: the part of the termination text after ``think_close``
        (e.g. ``"\\n\\nFinal answer: \\boxed{"``), or the whole termination text when it does
        not contain ``think_close``. METHOD.md (1)."""
        _, sep, tail = self.termination_text.partition(self.template.think_close)
        return tail if sep else self.termination_text

    def forced_answer(self, continuation: str) -> str | None:
        """The answer written after the termination text (``continuation`` starts right after
        it); None when missing or cut off. METHOD.md (1)."""
        return extract_answer(self.termination_text + continuation, self.template.answer_pattern)

    def final_answer(self, output: str) -> str | None:
        """The answer of a trace the policy ended itself. ``r1_think``: the last answer after the
        last ``think_close`` (a trace that never closed its thinking has no answer);
        ``backtrack``: the last answer anywhere. METHOD.md, Objects (the reward r(x, y))."""
        if self.template.style == "r1_think":
            cut = output.rfind(self.template.think_close)
            if cut < 0:
                return None
            output = output[cut + len(self.template.think_close):]
        return extract_answer(output, self.template.answer_pattern)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        """The reward r(x, y): the injected grader on the answer and the problem's reference."""
        return self.grader.grade(answer, problem.answer)

    # --- episodes ---------------------------------------------------------------------------
    def boundaries(self, text: str) -> list[Boundary]:
        """Episode starts in an output (the thinking, before any termination text), by the
        template's style. METHOD.md, Objects."""
        t = self.template
        if t.style == "backtrack":
            return segment_backtrack(text, (t.backtrack_regex(),))
        markers = DEFAULT_REFLECTION_MARKERS if t.reflection_markers is None else t.reflection_markers
        return segment_reflection(text, markers, t.ignore_within, t.max_episodes, t.group_size)

    def episodes(self, text: str, token_offsets=None) -> tuple[Episode, ...]:
        """The episodes ``z_0..z_{k-1}`` of an output; ``token_offsets`` as in
        ``mrt_core.episodes.build_episodes`` (None: one token per character). METHOD.md, Objects."""
        return build_episodes(text, token_offsets, self.boundaries(text))

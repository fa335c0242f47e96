"""The math environment: prompt rendering, forced and final answers, episodes by style."""

import pytest

from mrt_core.envs.base import Environment, Grader, Problem
from mrt_core.envs.math_text import MathEnv, MathTemplate, render_prompt


class ExactGrader:
    def grade(self, answer, reference):
        return answer is not None and answer == reference


R1 = MathTemplate(prompt="Q: {problem}\n<think>\n", termination_text="\nTime is up.\n</think>\nFinal answer: \\boxed{")
BT = MathTemplate(style="backtrack", prompt="Q: {problem}\n", termination_text="\nFinal answer: \\boxed{")


def test_env_implements_the_protocols():
    env = MathEnv(R1, ExactGrader())
    assert isinstance(env, Environment) and isinstance(env.grader, Grader)


def test_render_prompt_keeps_braces_of_problem_and_template():
    t = MathTemplate(prompt="User: {problem}\nPut the answer in \\boxed{}.\n<think>\n")
    expected = "User: Find $\\{x\\}$ if {y}=2.\nPut the answer in \\boxed{}.\n<think>\n"
    assert render_prompt(t, "Find $\\{x\\}$ if {y}=2.") == expected


def test_no_feedback_and_nothing_wasted():
    env = MathEnv(R1, ExactGrader())
    state = env.initial_state(Problem("p1", "Q", "2"))
    result = env.step(state, " Wait")
    assert (result.observation, result.wasted, result.state.steps) == ("", False, 1)
    assert env.is_action("anything") and env.answer_length(Problem("p1", "Q", "2")) == 32


@pytest.mark.parametrize("continuation, complete, answer", [
    ("", False, None),
    ("\\frac{1}{2", False, None),
    ("\\frac{1}{2}", False, None),
    ("\\frac{1}{2}}", True, "\\frac{1}{2}"),
    ("\\frac{1}{2}}. Done", True, "\\frac{1}{2}"),
    ("}", True, None),  # an empty box is no answer
])
def test_forced_answer_after_the_open_box(continuation, complete, answer):
    env = MathEnv(R1, ExactGrader())
    assert env.answer_complete(continuation) is complete
    assert env.forced_answer(continuation) == answer


def test_forced_answer_with_a_pattern():
    t = MathTemplate(termination_text="\nThe answer is:", answer_pattern=r"answer is:\s*(?P<answer>[^\n]+)")
    env = MathEnv(t, ExactGrader())
    assert not env.answer_complete(" 42")
    assert env.answer_complete(" 42\n")
    assert env.forced_answer(" 42\n") == "42"


@pytest.mark.parametrize("output, answer", [
    ("let me think \\boxed{3}</think>The answer is \\boxed{4}.", "4"),  # after the close only
    ("thinking \\boxed{3} and never closing", None),
    ("</think>no box", None),
    ("a</think>\\boxed{1}</think>\\boxed{2}", "2"),
])
def test_final_answer_r1_needs_the_closed_think_block(output, answer):
    assert MathEnv(R1, ExactGrader()).final_answer(output) == answer


def test_final_answer_backtrack_takes_the_last_box_anywhere():
    assert MathEnv(BT, ExactGrader()).final_answer("Step 1: \\boxed{3}\nStep 2: \\boxed{5}") == "5"


def test_grade_uses_the_injected_grader():
    env = MathEnv(R1, ExactGrader())
    assert env.grade("2", Problem("p", "Q", "2")) and not env.grade(None, Problem("p", "Q", "2"))


def test_r1_episodes_start_at_reflection_paragraphs():
    text = "First try: x=2.\n\nSo y=4.\n\nWait, check: x=3.\n\nAlternatively, y=9.\n\nHmm.\n\nWait no."
    env = MathEnv(MathTemplate(ignore_within=0), ExactGrader())
    eps = env.episodes(text)
    starts = [text[e.char_start:e.char_start + 6] for e in eps]
    assert starts == ["First ", "Wait, ", "Altern", "Wait n"]
    assert [e.marker for e in eps] == [None, "Wait", "Alternatively", "Wait"]
    assert "".join(text[e.char_start:e.char_end] for e in eps) == text
    # ignore_within=2 (the authors' rule, the default): p3 kept, p2 and p5 (1-2 paragraphs after a start) ignored
    assert [e.marker for e in MathEnv(R1, ExactGrader()).episodes(text)] == [None, "Alternatively"]


def test_backtrack_episodes_start_at_the_marker():
    text = "Step 1: a\nStep 2: b\nBacktrack to step 1\nStep 2: c\nBacktrack to step 12 again"
    eps = MathEnv(BT, ExactGrader()).episodes(text)
    assert [e.marker for e in eps] == [None, "Backtrack to step 1", "Backtrack to step 12"]
    assert eps[1].char_start == text.index("Backtrack to step 1")


def test_episodes_follow_token_offsets():
    text = "ab\n\nWait c"
    offsets = [(0, 2), (2, 4), (4, 9), (9, 10)]  # "ab", "\n\n", "Wait ", "c"
    eps = MathEnv(MathTemplate(ignore_within=0), ExactGrader()).episodes(text, offsets)
    assert [(e.tok_start, e.tok_end) for e in eps] == [(0, 2), (2, 4)]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "no field"}, "exactly once"),
    ({"prompt": "{problem} {problem}"}, "exactly once"),
    ({"style": "socratic"}, "style must be one of"),
    ({"answer_pattern": "("}, "not a valid regex"),
    ({"backtrack_text": "Backtrack"}, "backtrack_text must contain {n}"),
    ({"reflection_markers": ()}, "reflection_markers"),
    ({"max_answer_tokens": 0}, "max_answer_tokens"),
])
def test_bad_templates_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("{", "\\{").replace("}", "\\}")):
        MathTemplate(**kwargs)


def test_step_and_backtrack_strings():
    assert BT.step_header(3) == "Step 3:" and BT.backtrack_marker(2) == "Backtrack to step 2"


def test_answer_opening_after_the_policy_closes_its_thinking():
    assert MathEnv(R1, ExactGrader()).answer_opening() == "\nFinal answer: \\boxed{"
    assert MathEnv(BT, ExactGrader()).answer_opening() == BT.termination_text  # no think block

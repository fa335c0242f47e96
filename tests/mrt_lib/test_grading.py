"""The math grader: hand-checked verdicts, the time limit (also from threads), the counters,
and a fuzz test on adversarial strings (returns within the limit, never raises)."""

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrt_lib.grading import MathGrader, VerifyOptions, verify_pair

TIMEOUT_S = 1.0
# What a call may take beyond its limit: IPC, and after a timeout the wait for the spare worker
# when two timeouts come within one worker start (about 0.5-1 s on 2 loaded cores).
MARGIN_S = 3.0
HANG = "9^{9^{9}}"  # sympy evaluates the power: never returns


@pytest.fixture(scope="module")
def grader():
    with MathGrader(timeout_s=TIMEOUT_S) as g:
        yield g


@pytest.mark.parametrize("answer, reference", [
    ("\\frac12", "0.5"),
    ("1/2", "\\frac{1}{2}"),
    ("0.5", "\\dfrac{1}{2}"),
    ("\\{1,2\\}", "\\{2,1\\}"),  # sets in any order
    ("(0,1]", "(0, 1]"),  # intervals
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),
    ("x=3", "3"),
    ("1,000", "1000"),
    ("\\text{(B)}", "B"),
    ("2\\pi", "6.283185"),
    ("  42 ", "42"),  # exact match after stripping, no worker needed
])
def test_equivalent_answers_are_right(grader, answer, reference):
    assert grader.grade(answer, reference) is True


@pytest.mark.parametrize("answer, reference", [
    ("3", "4"),
    ("[0,1]", "(0,1]"),  # closed vs half-open
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("-\\infty", "\\infty"),
    ("\\frac{1}{3}", "0.5"),
    ("1/0", "1"),
    ("x", "y"),
])
def test_wrong_answers_are_wrong(grader, answer, reference):
    assert grader.grade(answer, reference) is False


@pytest.mark.parametrize("answer, reference", [
    (None, "1"), ("", "1"), ("   ", "1"), (None, None), ("", ""), ("1", None), ("1", ""),
])
def test_missing_answer_or_reference_is_wrong_without_a_worker(grader, answer, reference):
    before = grader.stats()["missing"]
    assert grader.grade(answer, reference) is False
    assert grader.stats()["missing"] == before + 1


def test_too_long_answer_is_wrong(grader):
    before = grader.stats()["too_long"]
    assert grader.grade("1" + " " * 600, "1") is False
    assert grader.stats()["too_long"] == before + 1


def test_timeout_is_wrong_counted_and_the_next_call_works(grader):
    before = grader.stats()
    start = time.perf_counter()
    assert grader.grade(HANG, "1") is False
    assert TIMEOUT_S <= time.perf_counter() - start < TIMEOUT_S + MARGIN_S
    after = grader.stats()
    assert (after["timeout"], after["restarts"]) == (before["timeout"] + 1, before["restarts"] + 1)
    assert grader.grade("\\frac{2}{4}", "0.5") is True


def test_batch_with_a_hang_in_the_middle(grader):
    pairs = [("1/2", "0.5"), (HANG, "1"), ("3", "4"), ("\\frac{6}{3}", "2"), (None, "1")]
    start = time.perf_counter()
    assert grader.grade_many(pairs) == [True, False, False, True, False]
    assert time.perf_counter() - start < TIMEOUT_S + MARGIN_S


def test_limit_holds_when_called_from_threads():
    """Signal-based timeouts only work in the main thread; the process limit works anywhere."""
    with MathGrader(timeout_s=TIMEOUT_S, workers=2) as g:
        jobs = [(HANG, "1", False), ("\\frac{1}{2}", "0.5", True), ("10^{10^{10}}", "1", False), ("2", "3", False),
                ("\\{3,1\\}", "\\{1,3\\}", True), ("1/3", "2/6", True)]
        results, took = {}, {}

        def call(i, answer, reference):
            start = time.perf_counter()
            results[i] = g.grade(answer, reference)
            took[i] = time.perf_counter() - start

        threads = [threading.Thread(target=call, args=(i, a, r)) for i, (a, r, _) in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {i: expected for i, (_, _, expected) in enumerate(jobs)}
        # 6 calls on 2 workers, 2 of them hanging: the slowest waits for at most 2 limits + margin.
        assert max(took.values()) < 2 * TIMEOUT_S + MARGIN_S
        assert g.stats()["timeout"] == 2


def test_a_worker_killed_from_outside_is_replaced_and_the_pair_retried(grader):
    worker = grader._idle.queue[-1]
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait()
    restarts = grader.stats()["restarts"]
    assert grader.grade("\\frac{1}{2}", "0.5") is True  # the retry on the successor gives the right verdict
    assert grader.stats()["restarts"] == restarts + 1


HAND_CASES = [("\\frac12", "0.5", True), ("\\{1,2\\}", "\\{2,1\\}", True), ("2.5\\times10^{3}", "2500", True),
              ("x^2+2x+1", "(x+1)^2", True), ("\\text{(B)}", "B", True), ("3", "4", False)]


def test_eval_guard_runs_numbers_and_names_only(monkeypatch):
    """sympy's parse_expr (and sympify of a string) end in ``eval_expr``; latex2sympy reaches it
    for number tokens. The guard lets those through and refuses anything else."""
    import sympy.parsing.sympy_parser as sympy_parser

    from mrt_lib.grading import install_eval_guard

    ran = []
    original = sympy_parser.eval_expr
    monkeypatch.setattr(sympy_parser, "eval_expr", lambda code, l, g: ran.append(code) or original(code, l, g))
    install_eval_guard()
    guarded = sympy_parser.eval_expr
    assert guarded("Integer (2 )", {}, {"Integer": int}) == 2
    for code in ["__import__('os').system('echo pwned')", "Integer (2 ).__class__", "open ('x' )", "Symbol ('x' )+1"]:
        with pytest.raises(ValueError, match="refused to evaluate"):
            guarded(code, {}, {})
    assert ran == ["Integer (2 )"]
    install_eval_guard()  # idempotent: still one layer
    assert sympy_parser.eval_expr is guarded
    # The LaTeX path still grades right with the guard in place (it runs in-process here).
    assert [verify_pair(a, r, VerifyOptions()) for a, r, _ in HAND_CASES] == [ok for _, _, ok in HAND_CASES]
    assert ran and all(code.split()[0] in {"Integer", "Float", "Symbol", "E"} for code in ran)


def test_injected_code_is_never_run(grader, tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    for attempt in [code, f"\\text{{{code}}}", f"1,{code}", f"\\boxed{{{code}}}"]:
        assert grader.grade(attempt, "1") is False
    assert not marker.exists()


def test_build_grader_from_params():
    from mrt_lib.config import GraderConfig
    from mrt_lib.grading import build_grader

    with build_grader(GraderConfig(timeout_s=1.5, max_answer_chars=12)) as g:
        assert (g.timeout_s, g.max_answer_chars) == (1.5, 12)
        assert g.grade("\\frac{1}{2}", "0.5") and not g.grade("1" * 13, "1" * 13)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="timeout_s > 0"):
        MathGrader(timeout_s=0)


# --- fuzz ------------------------------------------------------------------------------------
LATEXISH = st.sampled_from(["{", "}", "\\frac", "\\sqrt", "^", "_", "\\{", "\\}", "(", ")", "[", "]", "\\left",
                            "\\right", "\\boxed{", "\\text{", "$", "\\", "\\infty", "\\pi", "=", ",", "+", "-", "/",
                            "x", "0", "9", "é", "∑", "√", "\u200b", "\ud800", "\x00", "\n"])


def nested(depth: int, opener: str, closer: str, core: str) -> str:
    return opener * depth + core + closer * depth


adversarial = st.one_of(
    st.text(max_size=60),  # any unicode, surrogates and control characters included
    st.lists(LATEXISH, max_size=40).map("".join),  # unbalanced braces, half commands
    st.builds(nested, st.integers(1, 200), st.sampled_from(["{", "(", "\\frac{1}{", "\\sqrt{", "x^{"]),
              st.sampled_from(["}", ")", "}"]), st.sampled_from(["1", "x", "", "{"])),  # deep nesting
    st.builds(lambda b, e, f: f"{b}^{{{b}^{{{e}}}}}" if f else f"{b}^{{{e}}}",  # huge numbers as text
              st.integers(2, 99), st.integers(2, 9999), st.booleans()),
    st.integers(10**20, 10**80).map(str),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(answer=adversarial, reference=st.one_of(st.none(), st.sampled_from(["1", "\\frac{1}{2}", "\\{1,2\\}"]),
                                               adversarial))
def test_fuzz_returns_in_time_and_never_raises(grader, answer, reference):
    start = time.perf_counter()
    verdict = grader.grade(answer, reference)
    assert isinstance(verdict, bool)
    assert time.perf_counter() - start < TIMEOUT_S + MARGIN_S

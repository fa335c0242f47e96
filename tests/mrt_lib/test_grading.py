"""The math grader: hand-checked verdicts, the time limit (also from threads), the retry at
twice the limit, the CPU limit, the counters, the timeout share a stage fails past, and a fuzz
test on adversarial strings (never raises).

No test here depends on the machine's speed: verdicts come from a grader whose limit no
honest pair reaches even on a loaded machine (``VERDICT_TIMEOUT_S``); time limits are tested
with pairs that never finish (``HANG``) or a worker that is stopped, and only lower bounds of
the time taken (the limits) are asserted."""

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrt_lib.grading import OUTCOMES, MathGrader, VerifyOptions, verify_pair

VERDICT_TIMEOUT_S = 60.0  # verdicts: far above what any pair here takes on a loaded machine
TIMEOUT_S = 0.5  # limits: only pairs that never finish meet it
HANG = "9^{9^{9}}"  # sympy evaluates the power: never returns


@pytest.fixture(scope="module")
def grader():
    with MathGrader(timeout_s=VERDICT_TIMEOUT_S) as g:
        yield g


@pytest.fixture(scope="module")
def quick():
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


def test_a_timeout_is_retried_at_twice_the_limit_then_wrong_and_counted(quick):
    before = quick.stats()
    start = time.perf_counter()
    assert quick.grade(HANG, "1") is False
    assert time.perf_counter() - start >= TIMEOUT_S + 2 * TIMEOUT_S  # the limit, then twice it
    after = quick.stats()
    # one pair, one outcome (timeout); one retry; both workers it ran on replaced
    assert [after[k] - before[k] for k in ("timeout", "retried", "restarts")] == [1, 1, 2]
    assert quick.grade("\\frac{2}{4}", "0.5") is True  # the next call works


def test_batch_with_a_hang_in_the_middle(quick):
    pairs = [("1/2", "0.5"), (HANG, "1"), ("3", "4"), ("\\frac{6}{3}", "2"), (None, "1")]
    before = quick.stats()["timeout"]
    verdicts = quick.grade_many(pairs)
    assert verdicts[1] is False and verdicts[4] is False and quick.stats()["timeout"] == before + 1


@pytest.mark.e2e  # stops or kills a worker process from outside
def test_a_pair_that_overruns_once_is_retried_and_graded():
    """A loaded machine stalls the worker past the limit: the retry on a fresh worker gives the
    right verdict (the stall is made with SIGSTOP, so it does not depend on the machine)."""
    with MathGrader(timeout_s=TIMEOUT_S) as g:
        g._spare.wait_ready(g.start_timeout_s)  # the successor is warm
        stalled = g._idle.queue[-1]
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        assert g.grade("\\frac{1}{2}", "0.5") is True
        stats = g.stats()
        assert (stats["verified"], stats["timeout"], stats["retried"], stats["restarts"]) == (1, 0, 1, 1)
        assert stalled.proc.poll() is not None  # killed, though stopped


def test_the_cpu_limit_ends_a_runaway_pair_as_a_timeout():
    """With a wall-clock limit far away, the worker's CPU-time limit (RLIMIT_CPU) ends the hang:
    counted as a timeout, retried once (at twice the CPU limit), then wrong."""
    with MathGrader(timeout_s=VERDICT_TIMEOUT_S, cpu_limit_s=1) as g:
        assert g.grade(HANG, "1") is False
        stats = g.stats()
        assert (stats["timeout"], stats["retried"], stats["error"]) == (1, 1, 0)
        assert g.grade("2", "2.0") is True


@pytest.mark.parametrize("counts, max_share, fails", [
    ({"verified": 18, "rejected": 1, "timeout": 1}, 0.05, False),  # 1/20 = 0.05: not above
    ({"verified": 17, "rejected": 1, "timeout": 2}, 0.05, True),  # 2/20 = 0.10
    ({"missing": 50, "exact_match": 50, "timeout": 0}, 0.0, False),  # nothing went to a worker
    ({"verified": 0, "error": 3, "timeout": 1}, 0.2, True),  # 1/4
])
def test_a_stage_fails_past_the_timeout_share(counts, max_share, fails):
    from mrt_lib.grading import GradingError, check_timeouts

    if fails:
        with pytest.raises(GradingError, match=f"above grader.max_timeout_share={max_share:g}.*raise grader.timeout_s"):
            check_timeouts(counts, max_share, 3.0)
    else:
        check_timeouts(counts, max_share, 3.0)


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
        assert {i: results[i] for i in (0, 2, 3)} == {0: False, 2: False, 3: False}
        assert min(took[0], took[2]) >= 3 * TIMEOUT_S  # each hang held the limit and its retry
        assert g.stats()["timeout"] == 2, str(g.stats())


@pytest.mark.e2e  # stops or kills a worker process from outside
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
def test_fuzz_returns_a_verdict_and_never_raises(quick, answer, reference):
    before = sum(quick.stats()[k] for k in OUTCOMES)
    assert isinstance(quick.grade(answer, reference), bool)
    assert sum(quick.stats()[k] for k in OUTCOMES) == before + 1  # exactly one outcome per pair


def test_workers_started_from_a_thread_outlive_it():
    """A timeout in a caller's thread starts the replacements there; they must keep serving after
    that thread ends (PR_SET_PDEATHSIG would kill them with the thread)."""
    with MathGrader(timeout_s=TIMEOUT_S) as g:
        t = threading.Thread(target=g.grade, args=(HANG, "1"))
        t.start()
        t.join(60)
        assert g.grade("\\frac{3}{6}", "0.5") is True and g.grade("1/4", "0.25") is True
        assert g.stats()["error"] == 0, g.stats()["errors_seen"]


def test_the_grading_meter_counts_per_take_and_checks_the_share():
    from mrt_lib.config import GraderConfig
    from mrt_lib.envs import GradingMeter
    from mrt_lib.grading import GradingError

    class Cfg:  # a math stage's sections (the family reads env.kind, the check reads grader)
        env = type("Env", (), {"kind": "math"})()
        grader = GraderConfig(timeout_s=TIMEOUT_S, max_timeout_share=0.34)

    with MathGrader(timeout_s=TIMEOUT_S) as g:
        env = type("Env", (), {"grader": g})()
        meter = GradingMeter(Cfg, env)
        g.grade_many([("1/2", "0.5"), ("3", "4")])
        first = meter.take()
        assert (first["grader_verified"], first["grader_rejected"], first["grader_timeout"]) == (1, 1, 0)
        g.grade(HANG, "1")
        second = meter.take()  # only what came after the first take
        assert (second["grader_verified"], second["grader_timeout"], second["grader_retried"]) == (0, 1, 1)
        assert meter.check([first, {"step": 2, **second}])["grader_timeout"] == 1  # 1/3 <= 0.34
        Cfg.grader = GraderConfig(max_timeout_share=0.3)
        with pytest.raises(GradingError, match="1 of 3 graded answers"):  # 1/3 > 0.3
            GradingMeter(Cfg, env).check([first, second])

"""The environment's checker on hand-written traces, and its reference policies."""

import random

import pytest

from mrt_core.envs.base import Problem, Role
from mrt_core.envs.code_search import (
    CodeSearchEnv,
    CodeSearchSpec,
    TraceConfig,
    base_guess_fn,
    bisection_guess,
    play,
    synthesize_trace,
)

ENV = CodeSearchEnv(CodeSearchSpec())  # V=8 ("01234567"), D=3


def problem(code: str) -> Problem:
    return Problem(id=f"code-{code}", prompt="Q3:", answer=code)


def replay(code: str, actions: str):
    state, observations = ENV.initial_state(problem(code)), []
    for a in actions:
        result = ENV.step(state, a)
        state = result.state
        observations.append(result.observation)
    return state, observations


def test_hand_written_trace_feedback_and_counters():
    # code 527: '4' is too low (digit is higher), '6' too high -> digit 0 pinned to 5;
    # '3' after '4>' is a wasted step (already ruled out); then 5, 2, 7 solve it.
    state, obs = replay("527", "4635" "27")
    assert obs == [">\n", "<\n", ">\n", "=", "=", "=!"]
    assert state.solved and state.steps == 6 and state.wasted == 1
    assert state.attempts == 4  # '4', '6', '3' each failed an attempt; '527' is the 4th


def test_oracle_j_is_one_over_consistent_codes():
    # after '4>' on digit 0: digit 0 in [5, 7] (3 values), digits 1, 2 free (8 each)
    state, _ = replay("527", "4")
    assert state.consistent_count() == 3 * 8 * 8
    assert state.oracle_j() == pytest.approx(1 / 192)
    state, _ = replay("527", "46")  # digit 0 pinned: 1 * 8 * 8
    assert state.oracle_j() == pytest.approx(1 / 64)


def test_malformed_step_is_wasted_and_ends_attempt():
    state, obs = replay("527", "A")
    assert obs == ["?\n"] and state.wasted == 1 and state.digit == 0


def test_step_after_solving_is_wasted():
    state, obs = replay("000", "000" "1")
    assert obs[-1] == "!" and state.wasted == 1


def test_bisection_solves_000_in_15_steps():
    # Digit intervals [0,7]: guesses 3 (<), 1 (<), 0 (=) per digit; each restart re-enters the
    # confirmed digits: attempts 3< | 1< | 0=3< | 0=1< | 0=0=3< | 0=0=1< | 0=0=0=!
    # steps 1+1+2+2+3+3+3 = 15 over 7 attempts, none wasted.
    state = play(ENV, problem("000"), bisection_guess, budget=100, rng=random.Random(0))
    assert (state.solved, state.steps, state.attempts, state.wasted) == (True, 15, 7, 0)


def test_bisection_never_wastes_and_respects_budget():
    rng = random.Random(0)
    for idx in range(0, 512, 37):
        state = play(ENV, ENV.make_problem(idx), bisection_guess, budget=9, rng=rng)
        assert state.wasted == 0 and state.steps <= 9


def test_make_problem_enumerates_the_code_space():
    codes = {ENV.make_problem(i).answer for i in range(ENV.spec.problem_space())}
    assert len(codes) == 512 and ENV.make_problem(0).answer == "000" and ENV.make_problem(511).answer == "777"


def test_synthesized_trace_replays_through_the_environment():
    rng = random.Random(1)
    guess = base_guess_fn(8, 0.3)
    for _ in range(50):
        p = ENV.make_problem(rng.randrange(512))
        segs = synthesize_trace(ENV, p, guess, TraceConfig(), rng)
        assert segs[0] == segs[0].__class__("Q3:", Role.PROMPT)
        # every ENV segment is exactly the environment's answer to the GENERATED steps before it
        state = ENV.initial_state(p)
        body = segs[1:-2]
        for gen, env in zip(body[::2], body[1::2]):
            assert gen.role == Role.GENERATED and env.role == Role.ENV
            result = ENV.step(state, gen.text)
            assert result.observation == env.text
            state = result.state
        assert segs[-2].text == "A:" and segs[-1].role == Role.GENERATED
        answer = ENV.decode(segs[-1].text)
        assert answer is not None and all(l <= v <= h for v, l, h in zip(answer, state.lo, state.hi))
        if state.solved:
            assert segs[-1].text == p.answer and segs[-2].role == Role.GENERATED


def test_base_traces_never_backtrack():
    # every attempt starts again at digit 0 and re-enters each confirmed digit
    rng = random.Random(2)
    guess = base_guess_fn(8, 0.3)
    for _ in range(50):
        p = ENV.make_problem(rng.randrange(512))
        state = ENV.initial_state(p)
        while not state.solved and state.steps < 40:
            g = guess(state, rng)
            if state.confirmed(state.digit):
                assert g == state.lo[state.digit]
            state = ENV.step(state, ENV.spec.symbols[g]).state


def test_backtrack_keeps_confirmed_digits_and_echoes_them():
    # 527: "5=2=3>" fails at digit 2; "^2" goes back to step 2 keeping 5 and 2; the environment
    # answers "\n" and re-writes the kept digits "5=2="; then "7" solves it.
    state, obs = replay("527", "523^27")
    assert obs == ["=", "=", ">\n", "", "\n5=2=", "=!"]
    assert state.solved and state.backtracks == 1 and state.attempts == 2 and state.steps == 4 and state.wasted == 0


def test_backtrack_without_echo_and_invalid_backtracks():
    quiet = CodeSearchEnv(CodeSearchSpec(backtrack_echo=False))
    state = quiet.initial_state(problem("527"))
    for a in "523^2":
        result = quiet.step(state, a)
        state = result.state
    assert result.observation == "\n" and state.digit == 2
    _, obs = replay("527", "53^2")  # digit 1 was never confirmed: invalid, attempt restarts
    assert obs[-1] == "?\n"
    _, obs = replay("527", "523^3")  # there is no step 3 to go back to (3 digits: 0, 1, 2)
    assert obs[-1] == "?\n"
    state, obs = replay("527", "5^")  # the marker mid-attempt is not a step
    assert obs[-1] == "?\n" and state.wasted == 1
    state, obs = replay("527", "4^04")  # back to the beginning: the same attempt count as a restart
    assert obs == [">\n", "", "\n", ">\n"] and state.attempts == 2 and state.backtracks == 1


def test_grader_exact_match_and_missing_answer_is_wrong():
    grade = ENV.grader.grade
    assert grade("527", "527") and not grade("526", "527") and not grade(None, "527") and not grade("", "")


def test_spec_rejects_termination_that_looks_like_a_guess():
    with pytest.raises(ValueError, match="termination_text"):
        CodeSearchSpec(termination_text="1:")


def test_traces_with_backtracks_replay_and_go_back_to_the_confirmed_prefix():
    # p_backtrack: after an attempt fails past step 0, "^" + the number of confirmed leading
    # digits instead of a restart; every segment is still exactly the environment's answer
    rng = random.Random(3)
    guess, informed = base_guess_fn(8, 0.0), base_guess_fn(8, 1.0)
    cfg = TraceConfig(p_give_up=0.0, p_cut=0.0, max_steps=40, p_backtrack=1.0)
    n_backtracks = 0
    for _ in range(50):
        p = ENV.make_problem(rng.randrange(512))
        segs = synthesize_trace(ENV, p, guess, cfg, rng, informed)
        state, after_backtrack, pending = ENV.initial_state(p), False, False
        for seg in segs[1:-2]:
            if seg.role == Role.ENV:
                continue
            if seg.text == "^":
                # only right after an attempt that failed past step 0
                assert state.digit == 0 and state.last_fail_step >= 1 and not pending
                kept = 0
                while kept < 3 and state.confirmed(kept):
                    kept += 1
                pending, n_backtracks = True, n_backtracks + 1
            elif pending:
                assert seg.text == ENV.spec.symbols[min(kept, 2)]
                pending, after_backtrack = False, True
            elif after_backtrack:  # the attempt after a backtrack guesses inside the interval
                assert state.lo[state.digit] <= int(seg.text) <= state.hi[state.digit]
            result = ENV.step(state, seg.text)
            assert result.observation != "?\n"
            state = result.state
            after_backtrack = after_backtrack and state.digit != 0
        assert state.solved  # no cuts, no give-ups
    assert n_backtracks > 20


def test_no_backtracks_in_traces_without_the_option():
    rng_a, rng_b = random.Random(4), random.Random(4)
    guess = base_guess_fn(8, 0.3)
    for _ in range(30):
        p = ENV.make_problem(rng_a.randrange(512))
        rng_b.randrange(512)
        a = synthesize_trace(ENV, p, guess, TraceConfig(), rng_a)
        b = synthesize_trace(ENV, p, guess, TraceConfig(p_backtrack=0.0), rng_b, base_guess_fn(8, 1.0))
        assert a == b and not any(s.text == "^" for s in a)

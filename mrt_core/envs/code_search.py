"""The embedded environment: guess a hidden code digit by digit, with higher/lower feedback.

Notation (one problem):
    code  = (c_0, ..., c_{D-1}),  each c_i in {0, ..., V-1}, shown as ``symbols[c_i]``
    state = per-digit interval [lo_i, hi_i] still consistent with all feedback so far,
            the digit the current attempt is at, and counters.

An *attempt* is a sequence of steps, one digit guess each, from digit 0. After a guess g for
digit i the environment answers ``obs_correct`` (g == c_i: go on to digit i+1), or
``obs_higher``/``obs_lower`` followed by ``obs_attempt_end`` (the attempt failed; the next
attempt restarts at digit 0). After the last digit it answers ``obs_correct + obs_solved``.
So every step carries graded information (higher/lower narrows an interval), an attempt has
several steps ("back to step k" means keeping k confirmed digits), and a step is *wasted* when
its guess lies outside the interval the feedback had already left for that digit.

Forced answer (the meta-prover): after the termination text the model writes D symbols. The
Bayes-optimal forced answer is uniform over the consistent codes, so the oracle value is
``J*(state) = 1 / prod_i (hi_i - lo_i + 1)`` and an episode's progress is an information gain.

Reference policy: bisection (guess the interval's midpoint, re-enter confirmed digits). With
uniform codes it minimises the expected number of guesses per digit (a balanced search tree
has minimal expected depth), and a restart re-enters only confirmed digits, so it minimises the
expected steps to solve; its accuracy per budget is the comparator where regret is exact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Callable

from mrt_core.envs.base import Problem, Role, Segment, StepResult
from mrt_core.episodes import Episode, build_episodes, segment_attempts

GuessFn = Callable[["SearchState", random.Random], int]


@dataclass(frozen=True)
class CodeSearchSpec:
    """Every string the model sees in this environment (all set from params)."""

    symbols: str = "01234567"
    n_digits: int = 3
    prompt_template: str = "Q{n_digits}:"
    obs_higher: str = ">"
    obs_lower: str = "<"
    obs_correct: str = "="
    obs_attempt_end: str = "\n"
    obs_solved: str = "!"
    obs_invalid: str = "?"
    termination_text: str = "A:"
    continuation_text: str = ""  # budget forcing: appended when an early stop is overridden
    backtrack_text: str = "^"  # after a failed attempt: "^" + symbols[j] = back to step j (keep j digits)
    obs_backtrack: str = "\n"  # the environment's answer to a valid backtrack
    backtrack_echo: bool = True  # the environment re-writes the kept digits after a backtrack

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols) or len(self.symbols) < 2:
            raise ValueError(f"symbols must be >= 2 distinct characters, got {self.symbols!r}")
        if self.n_digits < 1:
            raise ValueError(f"n_digits must be >= 1, got {self.n_digits}")
        if not self.termination_text or self.termination_text[0] in self.symbols:
            raise ValueError("termination_text must be non-empty and not start with a symbol")
        if len(self.backtrack_text) != 1 or self.backtrack_text in self.symbols + self.termination_text[0]:
            raise ValueError("backtrack_text must be one character, neither a symbol nor the termination start")

    @property
    def n_values(self) -> int:
        return len(self.symbols)

    def alphabet(self) -> str:
        """Every character this environment can put in a trace, sorted (for tokenizers)."""
        strings = [
            self.symbols,
            self.render_prompt(),
            self.obs_higher,
            self.obs_lower,
            self.obs_correct,
            self.obs_attempt_end,
            self.obs_solved,
            self.obs_invalid,
            self.termination_text,
            self.continuation_text,
            self.backtrack_text,
            self.obs_backtrack,
        ]
        return "".join(sorted(set("".join(strings))))

    def render_prompt(self) -> str:
        return self.prompt_template.format(n_digits=self.n_digits)

    def problem_space(self) -> int:
        """Number of distinct codes: V ** D."""
        return self.n_values**self.n_digits


@dataclass(frozen=True)
class SearchState:
    """What the feedback so far allows: interval ``[lo_i, hi_i]`` per digit, and counters."""

    code: tuple[int, ...]
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    digit: int = 0  # digit the current attempt will guess next
    solved: bool = False
    steps: int = 0
    wasted: int = 0
    attempts: int = 0  # attempts started
    backtracks: int = 0  # valid backtracks taken
    pending_backtrack: bool = False  # the backtrack marker was written; the step index comes next
    last_fail_step: int = -1  # the step at which the latest failed attempt failed

    def consistent_count(self) -> int:
        """How many codes are still consistent with the feedback."""
        return math.prod(h - l + 1 for l, h in zip(self.lo, self.hi))

    def oracle_j(self) -> float:
        """J* = probability that a uniform draw from the consistent codes is the code."""
        return 1.0 if self.solved else 1.0 / self.consistent_count()

    def confirmed(self, i: int) -> bool:
        return self.lo[i] == self.hi[i]


class ExactMatchGrader:
    """Grader for finite answer sets: correct iff the answer equals the reference exactly.
    A missing answer is always wrong, even against a missing reference."""

    def grade(self, answer: str | None, reference: str) -> bool:
        return answer is not None and reference is not None and answer != "" and answer == reference


class CodeSearchEnv:
    """The code-search environment (implements ``mrt_core.envs.base.Environment``)."""

    def __init__(self, spec: CodeSearchSpec):
        self.spec = spec
        self.termination_text = spec.termination_text
        self.grader = ExactMatchGrader()

    # --- problems -------------------------------------------------------------------------
    def encode(self, code: tuple[int, ...]) -> str:
        return "".join(self.spec.symbols[v] for v in code)

    def decode(self, text: str) -> tuple[int, ...] | None:
        """Code values of an answer string, or None if it is not a well-formed code."""
        if len(text) != self.spec.n_digits or any(ch not in self.spec.symbols for ch in text):
            return None
        return tuple(self.spec.symbols.index(ch) for ch in text)

    def render_prompt(self, answer: str) -> str:
        return self.spec.render_prompt()

    def make_problem(self, index: int) -> Problem:
        """Problem number ``index`` of the enumerated code space (mixed-radix digits)."""
        v, d = self.spec.n_values, self.spec.n_digits
        code = tuple((index // v ** (d - 1 - i)) % v for i in range(d))
        answer = self.encode(code)
        return Problem(id=f"code-{answer}", prompt=self.render_prompt(answer), answer=answer)

    def answer_length(self, problem: Problem) -> int:
        return self.spec.n_digits

    # --- dynamics -------------------------------------------------------------------------
    def initial_state(self, problem: Problem) -> SearchState:
        code = self.decode(problem.answer)
        if code is None:
            raise ValueError(f"problem {problem.id}: answer {problem.answer!r} is not a code")
        d = self.spec.n_digits
        return SearchState(code=code, lo=(0,) * d, hi=(self.spec.n_values - 1,) * d)

    def is_action(self, token_text: str) -> bool:
        return len(token_text) == 1 and (token_text in self.spec.symbols or token_text == self.spec.backtrack_text)

    def step(self, state: SearchState, action: str) -> StepResult:
        """The environment's answer to one generated token (a guess, the backtrack marker, or
        the step index after the marker)."""
        s = self.spec
        if state.solved:  # a step after solving wastes tokens; repeat the verdict
            return StepResult(replace(state, steps=state.steps + 1, wasted=state.wasted + 1), s.obs_solved, True)
        if state.pending_backtrack:
            return self._backtrack_to(state, action)
        if action == s.backtrack_text and state.digit == 0 and state.steps > 0:
            return StepResult(replace(state, pending_backtrack=True), "", False)
        if not (len(action) == 1 and action in s.symbols):
            return self._invalid(state)
        return self._guess(state, s.symbols.index(action))

    def _invalid(self, state: SearchState) -> StepResult:
        started = state.attempts + (1 if state.digit == 0 else 0)
        new = replace(state, digit=0, steps=state.steps + 1, wasted=state.wasted + 1, attempts=started,
                      pending_backtrack=False)
        return StepResult(new, self.spec.obs_invalid + self.spec.obs_attempt_end, True)

    def _backtrack_to(self, state: SearchState, action: str) -> StepResult:
        """``^`` + symbols[j]: the next attempt starts at digit j, keeping digits 0..j-1, which
        the feedback must have confirmed; the environment re-writes them when echoing."""
        s = self.spec
        j = s.symbols.index(action) if len(action) == 1 and action in s.symbols else -1
        if not 0 <= j < s.n_digits or not all(state.confirmed(i) for i in range(j)):
            return self._invalid(state)
        kept = "".join(s.symbols[state.lo[i]] + s.obs_correct for i in range(j)) if s.backtrack_echo else ""
        new = replace(state, digit=j, pending_backtrack=False, backtracks=state.backtracks + 1,
                      attempts=state.attempts + (1 if j > 0 else 0))
        return StepResult(new, s.obs_backtrack + kept, False)

    def _guess(self, state: SearchState, g: int) -> StepResult:
        s = self.spec
        started = state.attempts + (1 if state.digit == 0 else 0)
        i = state.digit
        wasted = not (state.lo[i] <= g <= state.hi[i])
        counts = dict(steps=state.steps + 1, wasted=state.wasted + int(wasted), attempts=started)
        c = state.code[i]
        if g == c:
            lo, hi = _set(state.lo, i, g), _set(state.hi, i, g)
            if i + 1 == s.n_digits:
                new = replace(state, lo=lo, hi=hi, digit=0, solved=True, **counts)
                return StepResult(new, s.obs_correct + s.obs_solved, wasted)
            return StepResult(replace(state, lo=lo, hi=hi, digit=i + 1, **counts), s.obs_correct, wasted)
        counts["last_fail_step"] = i
        if g < c:  # hidden digit is higher: everything up to g is ruled out
            new = replace(state, lo=_set(state.lo, i, max(state.lo[i], g + 1)), digit=0, **counts)
            return StepResult(new, s.obs_higher + s.obs_attempt_end, wasted)
        new = replace(state, hi=_set(state.hi, i, min(state.hi[i], g - 1)), digit=0, **counts)
        return StepResult(new, s.obs_lower + s.obs_attempt_end, wasted)

    def episodes(self, text: str, token_offsets=None) -> tuple[Episode, ...]:
        """The episodes of a search: its attempts, each ending with the environment's verdict
        (``segment_attempts``; METHOD.md, Objects)."""
        ends = (self.spec.obs_attempt_end, self.spec.obs_solved)
        return build_episodes(text, token_offsets, segment_attempts(text, ends))

    # --- policies (pure simulations, used for data and as references) ----------------------
    def posterior_answer(self, state: SearchState, rng: random.Random) -> str:
        """A code drawn uniformly from those consistent with the feedback (Bayes-optimal)."""
        return self.encode(tuple(rng.randint(l, h) for l, h in zip(state.lo, state.hi)))


def bisection_guess(state: SearchState, rng: random.Random) -> int:
    """Reference policy: midpoint of the digit's interval (the confirmed value if known)."""
    i = state.digit
    return (state.lo[i] + state.hi[i]) // 2


def base_guess_fn(n_values: int, p_informed: float) -> GuessFn:
    """The base data policy: re-enter confirmed digits; otherwise with probability
    ``p_informed`` a uniform guess inside the digit's interval, else a uniform guess over all
    values (which wastes the step when it falls outside the interval)."""

    def guess(state: SearchState, rng: random.Random) -> int:
        i = state.digit
        if state.confirmed(i):
            return state.lo[i]
        if rng.random() < p_informed:
            return rng.randint(state.lo[i], state.hi[i])
        return rng.randrange(n_values)

    return guess


def play(env: CodeSearchEnv, problem: Problem, guess: GuessFn, budget: int, rng: random.Random) -> SearchState:
    """Run ``guess`` for at most ``budget`` steps (one generated token each) or until solved."""
    state = env.initial_state(problem)
    while not state.solved and state.steps < budget:
        state = env.step(state, env.spec.symbols[guess(state, rng)]).state
    return state


@dataclass(frozen=True)
class TraceConfig:
    """How base training traces end. Probabilities are per step boundary."""

    p_give_up: float = 0.02  # the policy stops after a failed attempt and answers
    p_cut: float = 0.15  # the engine forces an answer (teaches answering at any point)
    max_steps: int = 40
    p_backtrack: float = 0.0  # after an attempt failed past step 0: backtrack instead of restarting


def confirmed_prefix(state: SearchState) -> int:
    """How many leading digits the feedback has confirmed (a backtrack may keep that many)."""
    k = 0
    while k < len(state.lo) and state.confirmed(k):
        k += 1
    return k


def synthesize_trace(
    env: CodeSearchEnv, problem: Problem, guess: GuessFn, cfg: TraceConfig, rng: random.Random,
    guess_after_backtrack: GuessFn | None = None,
) -> list[Segment]:
    """One base trace: attempts by ``guess`` until solved, given up, cut or ``max_steps``.

    With ``cfg.p_backtrack`` > 0, after an attempt fails past step 0 the policy writes the
    backtrack ``backtrack_text + symbols[j]`` with that probability instead of restarting, j the
    number of confirmed leading digits (the deepest valid step: the one the warm-start's success
    estimates choose, docs/LOG.md); the next attempt goes on from there, guessed by
    ``guess_after_backtrack`` when given (else ``guess``). With 0 no random number is drawn for
    it, so the traces are exactly those without the option.

    The trace ends with the termination text and a Bayes-optimal forced answer (the code when
    solved), so the model learns to answer from the feedback at any point. Termination text
    is GENERATED when the policy chose to stop, FORCED when the engine cut the trace.
    """
    spec = env.spec
    failed_obs = (spec.obs_higher + spec.obs_attempt_end, spec.obs_lower + spec.obs_attempt_end)
    segments = [Segment(problem.prompt, Role.PROMPT)]
    state = env.initial_state(problem)
    stop_role = Role.FORCED
    after_backtrack = False  # the current attempt started with a backtrack
    while not state.solved and state.steps < cfg.max_steps:
        if state.steps and state.digit == 0 and rng.random() < cfg.p_give_up:
            stop_role = Role.GENERATED
            break
        if state.steps and rng.random() < cfg.p_cut:
            break
        if (cfg.p_backtrack > 0 and state.digit == 0 and state.last_fail_step >= 1 and not state.solved
                and segments[-1].text in failed_obs and rng.random() < cfg.p_backtrack):
            step = spec.symbols[min(confirmed_prefix(state), spec.n_digits - 1)]
            state = env.step(state, spec.backtrack_text).state
            result = env.step(state, step)
            segments += [Segment(spec.backtrack_text, Role.GENERATED), Segment(step, Role.GENERATED),
                         Segment(result.observation, Role.ENV)]
            state, after_backtrack = result.state, True
        policy = guess_after_backtrack if after_backtrack and guess_after_backtrack else guess
        action = spec.symbols[policy(state, rng)]
        result = env.step(state, action)
        segments.append(Segment(action, Role.GENERATED))
        segments.append(Segment(result.observation, Role.ENV))
        state = result.state
        after_backtrack = after_backtrack and state.digit != 0
    if state.solved:
        stop_role = Role.GENERATED
    segments.append(Segment(spec.termination_text, stop_role))
    segments.append(Segment(env.posterior_answer(state, rng), Role.GENERATED))
    return segments


def _set(values: tuple[int, ...], i: int, v: int) -> tuple[int, ...]:
    return values[:i] + (v,) + values[i + 1 :]

"""Batched rollouts in an environment, with every intervention recorded per token.

Interventions: environment feedback (after each step the environment's observation is appended
as ENV tokens), forced termination (when the generated-token budget is spent the termination
text is appended as FORCED tokens and the answer sampled), and budget forcing (when the policy
writes the termination text before the budget, that token is dropped, the continuation text is
appended as FORCED tokens and generation goes on). Generated tokens count toward the budget;
answer tokens are generated but counted apart. Works with any ``GenerationBackend``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm import tqdm

from mrt_core.envs.base import Environment, Problem, Role
from mrt_lib.common import derive_seed
from mrt_lib.generation.base import GenerationBackend
from mrt_lib.generation.prefix_tree import ProbeJob, _draw

# one character per token role in stored rollouts (``roles`` strings of the JSONL records)
ROLE_CHAR = {"prompt": "p", "gen": "g", "env": "e", "forced": "f"}


@dataclass
class Rollout:
    """One trace. ``token_ids``/``roles`` cover prompt and output; ``budget_tokens`` counts
    generated tokens before the answer; answer tokens are generated but counted apart."""

    problem: Problem
    sample: int
    token_ids: list[int]
    roles: list[Role]
    state: Any
    budget_tokens: int = 0
    answer_ids: list[int] = field(default_factory=list)
    answer: str = ""
    stopped_by: str = ""  # "policy" (wrote the termination text) or "budget"
    correct: bool = False
    j_exact: float = float("nan")  # P(correct answer | prefix + termination), teacher-forced
    answer_start: int = -1  # index in token_ids where the answer begins
    forced_continuations: int = 0  # budget forcing: stops overridden
    start_len: int = 0  # tokens given at the start (prompt, or a prefix of another rollout)
    budget: int = 0  # generated tokens this rollout may spend before its answer is forced
    search_end: int = -1  # index in token_ids where the search ends and the answer's forced text begins

    def role_count(self, role: Role) -> int:
        return sum(r == role for r in self.roles)

    def generated_texts(self, tok_text: dict[int, str], start: int = 0) -> list[str]:
        """Texts of the GENERATED tokens from index ``start`` on (the policy's actions)."""
        return [tok_text[t] for t, r in zip(self.token_ids[start:], self.roles[start:]) if r == Role.GENERATED]


@dataclass(frozen=True)
class Start:
    """Where a rollout begins: a problem, its sample index, and optionally a prefix already
    written (token ids, roles, environment state), e.g. a step prefix of another rollout."""

    problem: Problem
    sample: int = 0
    token_ids: tuple[int, ...] | None = None
    roles: tuple[Role, ...] | None = None
    state: Any = None
    budget: int | None = None  # overrides the run's budget for this start
    answer_now: bool = False  # force the answer at once (the meta-prover's sample at this prefix)


def sample_generators(seed: int, n: int, first: int = 0) -> list[torch.Generator]:
    """One CPU generator per rollout ``first .. first + n - 1`` of a run seeded ``seed``."""
    return [torch.Generator().manual_seed(derive_seed(seed, "sample", first + i)) for i in range(n)]


class RolloutEngine:
    """Samples rollouts of a backend's policy in ``env``."""

    def __init__(self, backend: GenerationBackend, env: Environment, temperature: float = 1.0,
                 continuation_text: str = ""):
        self.backend, self.tok, self.env, self.temperature = backend, backend.tokenizer, env, temperature
        self._cache: dict[str, list[int]] = {}
        self.term_ids = self.encode(env.termination_text)
        self.continuation_ids = self.encode(continuation_text) if continuation_text else []
        self.id_text = {i: self.tok.decode([i]) for i in range(len(self.tok))}

    def encode(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def run(self, problems: list[Problem], n_samples: int, budget: int, seed: int, batch_size: int,
            budget_forcing: bool = False, desc: str | None = None,
            stop_when: Callable[[Any], bool] | None = None) -> list[Rollout]:
        """``n_samples`` rollouts per problem from its prompt (see ``run_from``)."""
        starts = [Start(p, k) for p in problems for k in range(n_samples)]
        return self.run_from(starts, budget, seed, batch_size, budget_forcing, desc, stop_when)

    def run_from(self, starts: list[Start], budget: int, seed: int, batch_size: int, budget_forcing: bool = False,
                 desc: str | None = None, stop_when: Callable[[Any], bool] | None = None,
                 first: int = 0) -> list[Rollout]:
        """Rollouts from given starts. ``budget`` counts generated tokens after the start (a
        start's own ``budget`` overrides it; ``answer_now`` starts answer at once);
        ``stop_when(state)``, checked after each environment step, ends a rollout early with
        no answer (``stopped_by == "condition"``), e.g. at the end of an attempt.

        Every rollout draws from its own generator, seeded by ``seed`` and its index
        ``first + i`` in the whole run: a rollout's tokens do not depend on the batch size or on
        which process samples it (``first``: the index of ``starts[0]`` when ``starts`` is one
        process's shard), so arms and process counts share common random numbers."""
        out: list[Rollout] = []
        gens = sample_generators(seed, len(starts), first)
        for b in tqdm(range(0, len(starts), batch_size), desc=desc, disable=desc is None, mininterval=2):
            out += self._run_batch(starts[b : b + batch_size], budget, budget_forcing, gens[b : b + batch_size],
                                   stop_when)
        return out

    def _run_batch(self, starts, budget: int, forcing: bool, gens: list[torch.Generator],
                   stop_when) -> list[Rollout]:
        rolls = [self._start(s, budget) for s in starts]
        active = list(range(len(rolls)))
        # incremental decoding over one KV cache where the backend offers it (hf); otherwise
        # every step re-reads the sequences (vllm, with its prefix cache)
        session = self.backend.open_session([r.token_ids for r in rolls]) if hasattr(self.backend, "open_session") \
            else None
        while active:
            if session is not None:
                next_ids = _draw(session.logits[active], self.temperature, [gens[i] for i in active]).tolist()
            else:
                next_ids = self.backend.next_tokens([rolls[i].token_ids for i in active], self.temperature,
                                                    [gens[i] for i in active])
            blocks: list[list[int]] = [[] for _ in rolls]
            still = []
            for i, t in zip(active, next_ids):
                before = len(rolls[i].token_ids)
                if not self._advance(rolls[i], t, rolls[i].budget, forcing, stop_when):
                    still.append(i)
                blocks[i] = rolls[i].token_ids[before:]
            active = still
            if session is not None and active:
                session.append(blocks)
        self._score_exact([r for r in rolls if r.answer_start >= 0])
        return rolls

    def forced_answers(self, problem: Problem, answers: list[list[int]]) -> list[str | None]:
        """The answers in sampled forced continuations (token ids after the termination text)."""
        return [self.tok.decode(a) for a in answers]

    def forced_correct(self, problem: Problem, answers: list[list[int]]) -> list[bool]:
        """Grades of sampled forced answers (token ids after the termination text)."""
        return [self.env.grader.grade(a, problem.answer) for a in self.forced_answers(problem, answers)]

    def prefix_of(self, r: Rollout, cut: int, sample: int = 0, budget: int | None = None,
                  answer_now: bool = False) -> Start:
        """A start holding the first ``cut`` tokens of rollout ``r`` (e.g. its first k episodes),
        with the environment state replayed from the policy's actions in them."""
        state = self.env.initial_state(r.problem)
        for t, role in zip(r.token_ids[:cut], r.roles[:cut]):
            if role == Role.GENERATED:
                state = self.env.step(state, self.id_text[t]).state
        return Start(r.problem, sample, tuple(r.token_ids[:cut]), tuple(r.roles[:cut]), state, budget, answer_now)

    def _start(self, start: Start, budget: int) -> Rollout:
        budget = budget if start.budget is None else start.budget
        if start.token_ids is None:
            ids = self.encode(start.problem.prompt)
            r = Rollout(start.problem, start.sample, list(ids), [Role.PROMPT] * len(ids),
                        self.env.initial_state(start.problem), start_len=len(ids), budget=budget)
        else:
            r = Rollout(start.problem, start.sample, list(start.token_ids), list(start.roles), start.state,
                        start_len=len(start.token_ids), budget=budget)
        if start.answer_now or budget <= 0:  # no generation before the answer: force it now
            r.search_end = len(r.token_ids)
            self._append(r, self.term_ids, Role.FORCED)
            r.stopped_by, r.answer_start = "budget", len(r.token_ids)
        return r

    def _append(self, r: Rollout, ids: list[int], role: Role) -> None:
        r.token_ids += ids
        r.roles += [role] * len(ids)

    def _advance(self, r: Rollout, t: int, budget: int, forcing: bool, stop_when=None) -> bool:
        """Apply token ``t`` to rollout ``r``; returns True when the rollout is finished."""
        if r.answer_start >= 0:  # answering
            return self._answer_token(r, t)
        r.budget_tokens += 1
        if t == self.term_ids[0]:
            if forcing and r.budget_tokens < budget:  # too early: drop the stop, continue
                r.forced_continuations += 1
                self._append(r, self.continuation_ids, Role.FORCED)
                return False
            r.search_end = len(r.token_ids)
            self._append(r, [t], Role.GENERATED)  # the policy stops: the rest of the text is forced
            self._append(r, self.term_ids[1:], Role.FORCED)
            r.stopped_by, r.answer_start = "policy", len(r.token_ids)
            return False
        self._append(r, [t], Role.GENERATED)
        result = self.env.step(r.state, self.id_text[t])
        r.state = result.state
        self._append(r, self.encode(result.observation), Role.ENV)
        if stop_when is not None and stop_when(r.state):
            r.stopped_by = "condition"
            return True
        if r.budget_tokens >= budget:  # budget spent: force the answer
            r.search_end = len(r.token_ids)
            self._append(r, self.term_ids, Role.FORCED)
            r.stopped_by, r.answer_start = "budget", len(r.token_ids)
        return False

    def _answer_token(self, r: Rollout, t: int) -> bool:
        self._append(r, [t], Role.GENERATED)
        r.answer_ids.append(t)
        if len(r.answer_ids) < self.env.answer_length(r.problem):
            return False
        r.answer = self.tok.decode(r.answer_ids)
        r.correct = self.env.grader.grade(r.answer, r.problem.answer)
        return True

    def _score_exact(self, rolls: list[Rollout]) -> None:
        """J exact (METHOD.md (3)) at each rollout's final prefix: the probability of the
        reference answer after the prefix + termination text, teacher-forced, all in one batch."""
        if not rolls:
            return
        cuts = [r.search_end for r in rolls]
        jobs = [ProbeJob(tuple(r.token_ids[:cut]), (cut,)) for r, cut in zip(rolls, cuts)]
        logps = self.backend.probe_logprobs_batch(jobs, self.term_ids, [self.encode(r.problem.answer) for r in rolls])
        for r, logp in zip(rolls, logps):
            r.j_exact = math.exp(float(logp.sum()))

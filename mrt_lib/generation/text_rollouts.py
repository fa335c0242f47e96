"""Rollouts on text problems (``MathEnv``): one long output, no environment feedback.

The policy thinks until it closes its thinking (``template.think_close``), stops (EOS) or spends
the budget, through ``backend.sample`` (KV cache on ``hf``, batching on ``vllm``). Then the
answer: after a policy stop the template's answer opening is appended (FORCED), after a spent
budget or an EOS the termination text (FORCED, the meta-prover's question, METHOD.md (1)); the
answer is sampled until its box closes and graded. Budget forcing drops an early
``think_close`` (its tokens still spent budget) and appends the continuation text (FORCED).
Same ``Rollout``/``Start`` records and public methods as the interactive ``RolloutEngine``, so
every stage takes either.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from mrt_core.envs.base import Role
from mrt_lib.generation.base import SamplingParams
from mrt_lib.generation.rollouts import Rollout, RolloutEngine, Start


class TextRolloutEngine(RolloutEngine):
    """Samples rollouts of a backend's policy on single-turn text problems."""

    def __init__(self, backend, env, temperature: float = 1.0, continuation_text: str | None = None):
        self.backend, self.tok, self.env, self.temperature = backend, backend.tokenizer, env, temperature
        self._cache: dict[str, list[int]] = {}
        self.term_ids = self.encode(env.termination_text)
        text = env.continuation_text if continuation_text is None else continuation_text
        self.continuation_ids = self.encode(text) if text else []
        self.opening_ids = self.encode(env.answer_opening())
        self.think_close = env.template.think_close
        self.id_text = _LazyDecode(self.tok)

    def prefix_of(self, r: Rollout, cut: int, sample: int = 0, budget: int | None = None,
                  answer_now: bool = False) -> Start:
        """A start holding the first ``cut`` tokens of ``r`` (no environment state to replay)."""
        state = self.env.initial_state(r.problem)
        return Start(r.problem, sample, tuple(r.token_ids[:cut]), tuple(r.roles[:cut]), state, budget, answer_now)

    def _run_batch(self, starts, budget: int, forcing: bool, gens: list[torch.Generator],
                   stop_when) -> list[Rollout]:
        rolls = [self._start(s, budget) for s in starts]
        # the text path samples whole turns per call: one seed per batch, from its first rollout's
        # generator (its draws depend on the batch's composition; the token path's do not)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gens[0]))
        thinking, turn = [r for r in rolls if r.answer_start < 0], 0
        while thinking:
            by_left = defaultdict(list)  # one sampling call per remaining budget
            for r in thinking:
                by_left[r.budget - r.budget_tokens].append(r)
            again = []
            for left, group in sorted(by_left.items()):
                params = SamplingParams(n=1, temperature=self.temperature, max_new_tokens=left,
                                        stop=(self.think_close,), seed=seed + turn)
                for r, (c,) in zip(group, self.backend.sample([r.token_ids for r in group], params)):
                    if self._think(r, list(c.token_ids), c.finish_reason, forcing):
                        again.append(r)
                turn += 1
            thinking = again
        self._answer([r for r in rolls if r.answer_start >= 0], seed + turn)
        return rolls

    def _think(self, r: Rollout, ids: list[int], finish: str, forcing: bool) -> bool:
        """Apply one thinking sample; True when the rollout thinks on (budget forcing)."""
        r.budget_tokens += len(ids)
        text = self.tok.decode(ids)
        closed = finish == "stop" and self.think_close in text
        if closed and forcing and r.budget_tokens < r.budget:
            while ids and self.think_close in self.tok.decode(ids):  # drop the stop; it spent budget
                ids = ids[:-1]
            self._append(r, ids, Role.GENERATED)
            self._append(r, self.continuation_ids, Role.FORCED)
            r.forced_continuations += 1
            return True
        self._append(r, ids, Role.GENERATED)
        r.search_end = len(r.token_ids)
        if closed:  # the policy ended its thinking: its answer, in the forced answer's form
            self._append(r, self.opening_ids, Role.FORCED)
            r.stopped_by = "policy"
        else:  # budget spent, or the policy stopped (EOS) without closing its thinking: force it
            self._append(r, self.term_ids, Role.FORCED)
            r.stopped_by = "budget" if finish == "length" else "policy"
        r.answer_start = len(r.token_ids)
        return False

    def _answer(self, rolls: list[Rollout], seed: int) -> None:
        """Sample each answer up to ``max_answer_tokens``, keep it up to where its box closes,
        and grade all of them in one batch."""
        if not rolls:
            return
        length = self.env.answer_length(rolls[0].problem)
        params = SamplingParams(n=1, temperature=self.temperature, max_new_tokens=length, seed=seed)
        outs = self.backend.sample([r.token_ids for r in rolls], params)
        for r, (c,) in zip(rolls, outs):
            ids = self.complete_answer(list(c.token_ids))
            self._append(r, ids, Role.GENERATED)
            r.answer_ids = ids
            r.answer = self.env.forced_answer(self.tok.decode(ids)) or ""
        for r, ok in zip(rolls, self.grade_answers([(r.answer or None, r.problem.answer) for r in rolls])):
            r.correct = ok

    def complete_answer(self, ids: list[int]) -> list[int]:
        """The shortest head of ``ids`` whose text completes the forced answer (all if none)."""
        for k in range(1, len(ids) + 1):
            if self.env.answer_complete(self.tok.decode(ids[:k])):
                return ids[:k]
        return ids

    def grade_answers(self, pairs: list[tuple[str | None, str]]) -> list[bool]:
        grader = self.env.grader
        return grader.grade_many(pairs) if hasattr(grader, "grade_many") else [grader.grade(a, b) for a, b in pairs]

    def forced_answers(self, problem, answers: list[list[int]]) -> list[str | None]:
        """The answers in sampled forced continuations (token ids after the termination text)."""
        return [self.env.forced_answer(self.tok.decode(self.complete_answer(list(a)))) for a in answers]

    def forced_correct(self, problem, answers: list[list[int]]) -> list[bool]:
        """Grades of sampled forced answers, in one batch."""
        return self.grade_answers([(a, problem.answer) for a in self.forced_answers(problem, answers)])


class _LazyDecode(dict):
    """token id -> text, decoded on first use (a real vocabulary has 150k entries)."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok

    def __missing__(self, key: int) -> str:
        self[key] = self.tok.decode([key])
        return self[key]

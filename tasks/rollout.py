"""Batched rollouts of a policy in an environment, with a forced answer at the budget.

First version of the generation engine (the ``hf`` path, no KV cache): every sequence in the
batch samples one token per model call; the environment answers each step with observation
tokens; when the generated-token budget is spent (or the policy writes the termination text
itself) the answer is sampled after the termination text. Every token is recorded with its
role (prompt / generated / env / forced), so budgets and losses count generated tokens only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from mrt_core.envs.base import Environment, Problem, Role


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

    def role_count(self, role: Role) -> int:
        return sum(r == role for r in self.roles)


class RolloutEngine:
    """Samples rollouts of ``model`` in ``env`` (the transformers ``hf`` backend, CPU)."""

    def __init__(self, model, tokenizer, env: Environment, temperature: float = 1.0):
        self.model, self.tok, self.env, self.temperature = model, tokenizer, env, temperature
        self._cache: dict[str, list[int]] = {}
        self.term_ids = self.encode(env.termination_text)
        self.id_text = {i: tokenizer.decode([i]) for i in range(len(tokenizer))}

    def encode(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    @torch.no_grad()
    def run(self, problems: list[Problem], n_samples: int, budget: int, seed: int, batch_size: int,
            desc: str | None = None) -> list[Rollout]:
        jobs = [(p, k) for p in problems for k in range(n_samples)]
        out: list[Rollout] = []
        batches = range(0, len(jobs), batch_size)
        for b in tqdm(batches, desc=desc, disable=desc is None, mininterval=2):
            gen = torch.Generator().manual_seed(seed + b)
            out += self._run_batch(jobs[b : b + batch_size], budget, gen)
        return out

    def _run_batch(self, jobs, budget: int, gen: torch.Generator) -> list[Rollout]:
        rolls = [self._start(p, k) for p, k in jobs]
        active = list(range(len(rolls)))
        while active:
            next_ids = self._sample([rolls[i].token_ids for i in active], gen)
            still = []
            for i, t in zip(active, next_ids):
                if not self._advance(rolls[i], t, budget):
                    still.append(i)
            active = still
        self._score_exact(rolls)
        return rolls

    def _start(self, problem: Problem, k: int) -> Rollout:
        ids = self.encode(problem.prompt)
        return Rollout(problem, k, list(ids), [Role.PROMPT] * len(ids), self.env.initial_state(problem))

    def _append(self, r: Rollout, ids: list[int], role: Role) -> None:
        r.token_ids += ids
        r.roles += [role] * len(ids)

    def _force_answer(self, r: Rollout, by: str) -> None:
        r.stopped_by = by
        r.answer_start = len(r.token_ids)

    def _advance(self, r: Rollout, t: int, budget: int) -> bool:
        """Apply token ``t`` to rollout ``r``; returns True when the rollout is finished."""
        if r.answer_start >= 0:  # answering
            self._append(r, [t], Role.GENERATED)
            r.answer_ids.append(t)
            if len(r.answer_ids) == self.env.answer_length(r.problem):
                r.answer = self.tok.decode(r.answer_ids)
                r.correct = self.env.grader.grade(r.answer, r.problem.answer)
                return True
            return False
        r.budget_tokens += 1
        if t == self.term_ids[0]:  # the policy chose to stop: the rest of the text is forced
            self._append(r, [t], Role.GENERATED)
            self._append(r, self.term_ids[1:], Role.FORCED)
            self._force_answer(r, "policy")
            return False
        self._append(r, [t], Role.GENERATED)
        result = self.env.step(r.state, self.id_text[t])
        r.state = result.state
        self._append(r, self.encode(result.observation), Role.ENV)
        if r.budget_tokens >= budget:
            self._append(r, self.term_ids, Role.FORCED)
            self._force_answer(r, "budget")
        return False

    def _logits(self, seqs: list[list[int]]) -> torch.Tensor:
        """Next-token logits after each sequence (right padding is safe under causal attention)."""
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.tok.pad_token_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
        last = torch.tensor([len(s) - 1 for s in seqs])
        logits = self.model(input_ids=ids).logits
        return logits[torch.arange(len(seqs)), last]

    def _sample(self, seqs: list[list[int]], gen: torch.Generator) -> list[int]:
        probs = torch.softmax(self._logits(seqs).float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(1).tolist()

    def _score_exact(self, rolls: list[Rollout]) -> None:
        """J exact: teacher-forced probability of the reference answer after each rollout's
        termination text (the meta-prover's exact estimator)."""
        seqs = [r.token_ids[: r.answer_start] + self.encode(r.problem.answer) for r in rolls]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.tok.pad_token_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s)
        logp = torch.log_softmax(self.model(input_ids=ids).logits.float(), dim=-1)
        for row, r in enumerate(rolls):
            ans = self.encode(r.problem.answer)
            pos = range(r.answer_start - 1, r.answer_start - 1 + len(ans))
            r.j_exact = math.exp(sum(logp[row, p, a].item() for p, a in zip(pos, ans)))

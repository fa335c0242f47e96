"""The text engine on a tiny random Qwen2: budgets, forced text, budget forcing, sampled J."""

import pytest
import torch

from mrt_core.envs.base import Problem, Role
from mrt_core.envs.math_text import MathEnv
from mrt_core.envs.templates import MathTemplate
from mrt_lib.generation import make_backend
from mrt_lib.generation.curves import episode_curves
from mrt_lib.generation.text_rollouts import TextRolloutEngine
from tests.test_tiny_qwen2 import fixture_texts
from tests.tiny_qwen2 import build_tiny_qwen2


class CountingExactGrader:
    """Exact string match, counting calls (the math-verify grader is tested in test_grading)."""

    def __init__(self):
        self.calls = 0

    def grade_many(self, pairs):
        self.calls += len(pairs)
        return [a is not None and a == b for a, b in pairs]

    def grade(self, answer, reference):
        return self.grade_many([(answer, reference)])[0]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_tiny_qwen2(tmp_path_factory.mktemp("tiny"), fixture_texts())
    template = MathTemplate(max_answer_tokens=6, continuation_text="\n\nWait")
    yield TextRolloutEngine(make_backend("hf", str(path)), MathEnv(template, CountingExactGrader()))
    torch.set_num_threads(threads)


def problems(engine):
    return [Problem(f"p{i}", engine.env.render_prompt(f"What is {i}+{i}?"), str(2 * i)) for i in range(4)]


def test_budget_counts_thinking_and_the_answer_text_is_forced(engine):
    rolls = engine.run(problems(engine), n_samples=3, budget=12, seed=0, batch_size=8)
    for r in rolls:
        thinking = r.roles[r.start_len : r.search_end]
        assert r.budget_tokens == len(thinking) <= 12 and set(thinking) <= {Role.GENERATED}
        forced = r.roles[r.search_end : r.answer_start]
        assert forced and set(forced) == {Role.FORCED}
        # the answer opening after the policy closed its thinking, else the whole termination text
        assert r.token_ids[r.search_end : r.answer_start] in (engine.opening_ids, engine.term_ids)
        if r.stopped_by == "budget":
            assert r.budget_tokens == 12 and r.token_ids[r.search_end : r.answer_start] == engine.term_ids
        assert 1 <= len(r.answer_ids) <= 6 and r.roles[r.answer_start :] == [Role.GENERATED] * len(r.answer_ids)
    assert engine.env.grader.calls >= len(rolls)  # every answer was graded, in batches


def test_same_seed_same_rollouts(engine):
    a = engine.run(problems(engine), 2, 10, seed=3, batch_size=8)
    b = engine.run(problems(engine), 2, 10, seed=3, batch_size=8)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_budget_forcing_never_stops_early(engine):
    rolls = engine.run(problems(engine), 4, 16, seed=1, batch_size=16, budget_forcing=True)
    assert all(r.budget_tokens >= 16 or r.stopped_by == "policy" and r.forced_continuations == 0 for r in rolls)
    for r in rolls:  # every override appended the continuation text as FORCED tokens
        assert r.role_count(Role.FORCED) == r.forced_continuations * len(engine.continuation_ids) + (
            r.answer_start - r.search_end)


def test_sampled_j_after_every_episode_is_a_share_of_k(engine):
    rolls = engine.run(problems(engine), 1, 16, seed=2, batch_size=8)
    curves = episode_curves(engine, rolls, "sampled", samples=4, seed=0)
    for r, c in zip(rolls, curves):
        assert len(c.j) == len(c.episodes) + 1 and c.tokens[0] == 0 and c.tokens[-1] == r.budget_tokens
        assert set(c.j) <= {0.0, 0.25, 0.5, 0.75, 1.0}

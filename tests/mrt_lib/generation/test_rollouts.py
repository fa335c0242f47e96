"""The rollout engine: roles, budgets, forced answers, and exact J."""

import pytest

from mrt_core.envs.base import Role
from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.data import load_problems
from mrt_lib.generation import make_backend
from mrt_lib.generation.rollouts import RolloutEngine, Start


@pytest.fixture(scope="module")
def rollouts(trained_smoke):
    params, paths, _ = trained_smoke
    env = CodeSearchEnv(params.env.spec())
    backend = make_backend("hf", str(paths.base_model))
    tok = backend.tokenizer
    engine = RolloutEngine(backend, env, temperature=1.0)
    problems = load_problems(paths, "train")
    return env, tok, engine.run(problems, n_samples=3, budget=5, seed=0, batch_size=16)


def test_budget_counts_generated_tokens_only(rollouts):
    env, tok, rolls = rollouts
    for r in rolls:
        before_answer = r.roles[: r.answer_start]
        assert sum(x == Role.GENERATED for x in before_answer) == r.budget_tokens <= 5
        assert r.stopped_by in {"policy", "budget"}
        if r.stopped_by == "budget":
            assert r.budget_tokens == 5 and r.roles[r.answer_start - 2 : r.answer_start] == [Role.FORCED] * 2
        assert r.roles[r.answer_start :] == [Role.GENERATED] * 2 and len(r.answer_ids) == 2


def test_env_tokens_replay_through_the_environment(rollouts):
    env, tok, rolls = rollouts
    for r in rolls:
        state, i, ids = env.initial_state(r.problem), len(env.spec.render_prompt()), r.token_ids
        while i < r.answer_start and r.roles[i] == Role.GENERATED:
            action = tok.decode([ids[i]])
            if action == env.termination_text[0]:  # the policy wrote the termination text itself
                break
            step = env.step(state, action)
            n = len(step.observation)
            assert tok.decode(ids[i + 1 : i + 1 + n]) == step.observation
            assert r.roles[i + 1 : i + 1 + n] == [Role.ENV] * n
            state, i = step.state, i + 1 + n
        assert state.steps == r.state.steps


def test_exact_j_is_a_probability_and_matches_grades_on_average(rollouts):
    env, tok, rolls = rollouts
    assert all(0.0 <= r.j_exact <= 1.0 for r in rolls)
    assert all(r.correct == (r.answer == r.problem.answer) for r in rolls)


def test_same_seed_same_rollouts(trained_smoke):
    params, paths, _ = trained_smoke
    env = CodeSearchEnv(params.env.spec())
    backend = make_backend("hf", str(paths.base_model))
    problems = load_problems(paths, "test")
    a = RolloutEngine(backend, env).run(problems, 2, 6, seed=3, batch_size=8)
    b = RolloutEngine(backend, env).run(problems, 2, 6, seed=3, batch_size=8)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_a_rollouts_tokens_depend_on_its_index_not_on_the_batch_or_the_shard(trained_smoke):
    params, paths, _ = trained_smoke
    env = CodeSearchEnv(params.env.spec())
    engine = RolloutEngine(make_backend("hf", str(paths.base_model)), env, temperature=3.0)  # many draws matter
    starts = [Start(p, k) for p in load_problems(paths, "train")[:6] for k in range(2)]  # 12 rollouts
    assert len(starts) == 12
    whole = [r.token_ids for r in engine.run_from(starts, 6, seed=3, batch_size=12)]
    assert [r.token_ids for r in engine.run_from(starts, 6, seed=3, batch_size=5)] == whole
    # two processes' shards (rollouts 0-5 and 6-11), each told where its shard begins
    shards = engine.run_from(starts[:6], 6, seed=3, batch_size=4) + engine.run_from(starts[6:], 6, seed=3,
                                                                                      batch_size=4, first=6)
    assert [r.token_ids for r in shards] == whole
    # the index is what seeds it: the second shard without its offset draws other tokens
    assert [r.token_ids for r in engine.run_from(starts[6:], 6, seed=3, batch_size=4)] != whole[6:]


def test_budget_forcing_overrides_early_stops(trained_smoke):
    # with forcing, no rollout may stop before its budget; every override is recorded and the
    # continuation text is FORCED (never GENERATED)
    params, paths, _ = trained_smoke
    env = CodeSearchEnv(params.env.spec())
    backend = make_backend("hf", str(paths.base_model))
    problems = load_problems(paths, "train")
    engine = RolloutEngine(backend, env, continuation_text="\n")
    rolls = engine.run(problems, 4, 10, seed=5, batch_size=64, budget_forcing=True)
    assert all(r.budget_tokens == 10 for r in rolls)  # a stop is only honoured at the budget itself
    forced = sum(r.forced_continuations for r in rolls)
    free = RolloutEngine(backend, env).run(problems, 4, 10, seed=5, batch_size=64)
    assert forced > 0 and any(r.stopped_by == "policy" for r in free)
    for r in rolls:
        n_forced = r.role_count(Role.FORCED)
        # one continuation token per override, plus the termination text (its first token is
        # GENERATED when the policy itself stopped, exactly at the budget)
        assert n_forced == r.forced_continuations + len(engine.term_ids) - (r.stopped_by == "policy")

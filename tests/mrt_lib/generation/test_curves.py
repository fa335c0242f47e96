"""Meta-prover curves: adaptive K, J's standard error, probe costs and the probed share."""

import math

import numpy as np
import pytest

from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.data import load_problems
from mrt_lib.generation import make_backend
from mrt_lib.generation.curves import episode_curves
from mrt_lib.generation.rollouts import RolloutEngine


@pytest.fixture(scope="module")
def engine_and_rolls(trained_smoke):
    params, paths, _ = trained_smoke
    engine = RolloutEngine(make_backend("hf", str(paths.base_model)), CodeSearchEnv(params.env.spec()), 1.0)
    rolls = engine.run(load_problems(paths, "train")[:6], n_samples=2, budget=12, seed=0, batch_size=16)
    return engine, rolls


def test_adaptive_k_draws_more_only_where_the_interval_is_wide(engine_and_rolls):
    engine, rolls = engine_and_rolls
    # +-0.31: 0 of 4 answers right is narrow enough (+-0.301), 2 of 4 is not (+-0.350)
    z, half = 1.96, 0.31
    fixed = episode_curves(engine, rolls, "sampled", samples=16, seed=3)
    adaptive = episode_curves(engine, rolls, "sampled", samples=4, seed=3, max_samples=16, half_width=half, z=z)
    drawn = [k for c in adaptive for k in c.j_samples]
    assert set(drawn) <= {4, 8, 12, 16} and 4 in drawn and max(drawn) > 4  # some stop at once, some go on
    for c in adaptive:
        for j, se, k in zip(c.j, c.j_se, c.j_samples):
            assert math.isclose(j * k, round(j * k))  # a share of k graded answers
            assert k == 16 or z * se <= half  # stopped early only once the interval was narrow
    # the prefix once, then per draw the termination text and k answers: fewer answers, fewer tokens
    assert sum(c.probe_tokens for c in adaptive) < sum(c.probe_tokens for c in fixed)


def test_k_fixed_is_adaptive_k_with_max_equal_to_k(engine_and_rolls):
    engine, rolls = engine_and_rolls
    plain = episode_curves(engine, rolls, "sampled", samples=8, seed=5)
    capped = episode_curves(engine, rolls, "sampled", samples=8, seed=5, max_samples=8)
    assert [c.j for c in plain] == [c.j for c in capped]
    assert all(set(c.j_samples) == {8} and all(se > 0 for se in c.j_se) for c in plain)


def test_exact_probe_cost_and_the_unprobed_rollouts(engine_and_rolls):
    engine, rolls = engine_and_rolls
    probed = [i % 3 == 0 for i in range(len(rolls))]
    curves = episode_curves(engine, rolls, "exact", probed=probed)
    full = episode_curves(engine, rolls, "exact")
    for c, f, keep, r in zip(curves, full, probed, rolls):
        assert c.tokens == f.tokens and c.episodes == f.episodes  # episodes are cut either way
        if keep:
            assert c.j == f.j and set(c.j_se) == {0.0}
            # the rollout's tokens through the search once, then a termination-and-answer branch per cut
            end = r.search_end if r.search_end >= 0 else len(r.token_ids)
            per_cut = len(engine.term_ids) + len(engine.encode(r.problem.answer))
            assert c.probe_tokens == end + len(c.j) * per_cut
        else:
            assert all(np.isnan(c.j)) and c.probe_tokens == 0

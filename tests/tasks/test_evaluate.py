"""evaluate on the smoke model: outputs, their schema, and the reference policies."""

import json

import pytest

from mrt_core.envs.base import Problem
from mrt_core.envs.code_search import CodeSearchEnv, CodeSearchSpec
from mrt_lib.envs.code_search import failures, first_failure_backtracked
from mrt_lib.generation.rollouts import Rollout
from tasks.evaluate import run_evaluate
from tests.conftest import copy_outputs


def test_writes_metrics_plots_and_rollouts(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path, "dataset", "base_model", "warmstart_model", "rl")
    results = run_evaluate(params, paths)
    budgets = params.evaluate.budgets
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    # every model the pipeline made (each arm's round per seed), each arm over its seeds, references
    runs = {f"{arm}/s{seed}/r1" for arm in ("grpo", "mrt_dense") for seed in (0, 1)}
    assert set(metrics) == {"base", "warmstart", "grpo", "mrt_dense", "bisection", "data_policy", *runs}
    # two seeds: the arm's row is their mean, with a Student-t interval over seeds
    seeds = [metrics[f"grpo/s{s}/r1"]["B4"]["accuracy"] for s in (0, 1)]
    assert metrics["grpo"]["B4"]["accuracy"] == pytest.approx(sum(seeds) / 2)
    assert metrics["grpo"]["B4"]["ci_over"] == "seeds" and metrics["grpo"]["B4"]["n_seeds"] == 2
    assert list(metrics["base"]) == [f"B{b}" for b in budgets]
    for row in list(metrics["base"].values()) + list(metrics["warmstart"].values()):
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1
        assert 0 <= row["wasted_share"] <= 1 and row["generated_tokens"] <= budgets[-1]
    for model in ("base", "warmstart"):
        for b in budgets:
            row = results[model][b]
            assert 0 <= row["regret_ci_low"] <= row["regret"] <= row["regret_ci_high"] <= 1
            assert 0 <= row["regret_votes"] <= 1
    details = json.loads((paths.metrics / "evaluate_details.json").read_text())
    assert {"schema", "base", "warmstart", "token_efficiency"} <= set(details)
    for b in budgets:
        rows = details["base"]["pass_maj"][str(b)]
        assert [r["k"] for r in rows] == [1, 2]  # n_samples = 2
        # pass@1 over the same rollouts is the accuracy; pass@k never falls as k grows
        assert rows[0]["pass_at_k"] == pytest.approx(results["base"][b]["accuracy"])
        assert rows[1]["pass_at_k"] >= rows[0]["pass_at_k"] and rows[0]["maj_at_k"] == rows[0]["pass_at_k"]
    assert sum(details["base"]["progress"]["progress_histogram"]) > 0
    # extrapolation with budget forcing: every rollout spends the whole budget, forced tokens counted
    x = details["base"]["extrapolation"]["16"]
    # (the termination text is forced, but its first token is the policy's own when it stops at the budget)
    assert x["generated_tokens"] == 16 and x["forced_tokens"] >= 1
    for e in details["token_efficiency"]:
        assert (e["ratio_b_over_a"] is None) == bool(e["note"])
    plot = json.loads((paths.plots / "accuracy_vs_budget.json").read_text())
    assert [r["budget"] for r in plot] == budgets
    assert (paths.plots / "accuracy_vs_budget.png").read_bytes()[:4] == b"\x89PNG"
    for model in ("base", "warmstart", "grpo_s0_r1"):
        lines = (paths.eval_dir / f"rollouts_{model}.jsonl").read_text().splitlines()
        assert len(lines) == len(budgets) * 2 * params.evaluate.n_samples  # 2 test problems
        last = [json.loads(line) for line in lines if json.loads(line)["budget"] == budgets[-1]]
        for rec in last:  # the meta-prover curve of every longest rollout: J after each episode
            assert rec["episode_tokens"][0] == 0 and len(rec["episode_tokens"]) == len(rec["episode_j"])
            assert rec["episode_tokens"] == sorted(rec["episode_tokens"])
    # bisection on 4 values x 2 digits never wastes a step and solves every code within 12 steps:
    # digit values need at most 3 guesses each (1, then 0 or 2/3 ...), restarts re-enter digit 0
    assert results["bisection"][12]["accuracy"] == 1.0 and results["bisection"][12]["wasted_share"] == 0.0
    assert results["data_policy"][4]["wasted_share"] > 0


def test_backtrack_after_the_first_failed_attempt_is_detected():
    env = CodeSearchEnv(CodeSearchSpec())
    id_text = {i: ch for i, ch in enumerate("0123456789^A")}
    ids = {ch: i for i, ch in id_text.items()}

    def roll(actions: str) -> Rollout:
        from mrt_core.envs.base import Role

        return Rollout(Problem("p", "Q3:", "527"), 0, [ids[a] for a in actions], [Role.GENERATED] * len(actions),
                       None)

    assert first_failure_backtracked(env, roll("523^27"), id_text) is True  # fails at "3", then "^"
    assert first_failure_backtracked(env, roll("52357"), id_text) is False  # fails, then restarts
    assert first_failure_backtracked(env, roll("527"), id_text) is None  # first attempt solved
    # "4" fails at step 0 (then a restart), "5 2 3" fails at step 2 and is followed by "^"
    assert failures(env, roll("4523^27"), id_text) == [(0, False), (2, True)]


def test_an_arm_over_seeds_hand_values():
    from mrt_lib.evaluation.rows import aggregate_seeds

    def row(acc, regret):
        return {6: {"accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1, "regret": regret,
                    "regret_ci_low": 0.0, "regret_ci_high": 1.0, "wasted_share": 0.2}}

    def details(hist, k1):
        return {"pass_maj": {"6": [{"k": 1, "pass_at_k": k1, "maj_at_k": k1, "total_tokens": 7.0}]},
                "progress": {"mean_progress": 0.1, "zero_progress_share": 0.5, "progress_histogram": hist},
                "extrapolation": {}}

    merged, agg = aggregate_seeds([row(0.5, 0.6), row(0.7, 0.4)], [details([1, 2], 0.5), details([3, 0], 0.7)])
    r = merged[6]
    # two seeds: mean 0.6, s = 0.141421, half width t(0.975, 1) * s / sqrt(2) = 12.706205 * 0.1 = 1.270620
    assert r["accuracy"] == pytest.approx(0.6) and r["n_seeds"] == 2 and r["ci_over"] == "seeds"
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.6 - 1.270620, 0.6 + 1.270620), abs=1e-5)
    assert r["regret"] == pytest.approx(0.5) and r["wasted_share"] == pytest.approx(0.2)
    assert agg["progress"]["progress_histogram"] == [4, 2]  # summed over seeds
    assert agg["pass_maj"]["6"] == [{"k": 1, "pass_at_k": pytest.approx(0.6), "maj_at_k": pytest.approx(0.6),
                                     "total_tokens": 7.0}]
    one, _ = aggregate_seeds([row(0.5, 0.6)], [details([1, 2], 0.5)])
    assert one[6]["ci_over"] == "problems" and (one[6]["ci_low"], one[6]["ci_high"]) == (0.4, 0.6)

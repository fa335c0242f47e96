"""evaluate on the smoke model: outputs, their schema, and the reference policies."""

import json

from mrt_core.envs.base import Problem
from mrt_core.envs.code_search import CodeSearchEnv, CodeSearchSpec
from tasks.evaluate import failures, first_failure_backtracked, run_evaluate
from tasks.generation.rollouts import Rollout
from tests.conftest import copy_outputs


def test_writes_metrics_plots_and_rollouts(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path, "dataset", "base_model", "warmstart_model")
    results = run_evaluate(params, paths)
    budgets = params.evaluate.budgets
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    assert set(metrics) == {"base", "warmstart", "bisection", "data_policy"}
    assert list(metrics["base"]) == [f"B{b}" for b in budgets]
    for row in list(metrics["base"].values()) + list(metrics["warmstart"].values()):
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1
        assert 0 <= row["wasted_share"] <= 1 and row["generated_tokens"] <= budgets[-1]
    plot = json.loads((paths.plots / "accuracy_vs_budget.json").read_text())
    assert [r["budget"] for r in plot] == budgets
    assert (paths.plots / "accuracy_vs_budget.png").read_bytes()[:4] == b"\x89PNG"
    for model in ("base", "warmstart"):
        lines = (paths.eval_dir / f"rollouts_{model}.jsonl").read_text().splitlines()
        assert len(lines) == len(budgets) * 2 * params.evaluate.n_samples  # 2 test problems
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

"""evaluate on the smoke model: outputs, their schema, and the reference policies."""

import json

from tasks.evaluate import run_evaluate


def test_writes_metrics_plots_and_rollouts(trained_smoke):
    params, paths, _ = trained_smoke
    results = run_evaluate(params, paths)
    budgets = params.evaluate.budgets
    metrics = json.loads((paths.metrics / "evaluate.json").read_text())
    assert set(metrics) == {"base", "bisection", "data_policy"}
    assert list(metrics["base"]) == [f"B{b}" for b in budgets]
    for row in metrics["base"].values():
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1
        assert 0 <= row["wasted_share"] <= 1 and row["generated_tokens"] <= budgets[-1]
    plot = json.loads((paths.plots / "accuracy_vs_budget.json").read_text())
    assert [r["budget"] for r in plot] == budgets
    assert (paths.plots / "accuracy_vs_budget.png").read_bytes()[:4] == b"\x89PNG"
    lines = (paths.eval_dir / "rollouts_base.jsonl").read_text().splitlines()
    assert len(lines) == len(budgets) * 2 * params.evaluate.n_samples  # 2 test problems
    # bisection on 4 values x 2 digits never wastes a step and solves every code within 12 steps:
    # digit values need at most 3 guesses each (1, then 0 or 2/3 ...), restarts re-enter digit 0
    assert results["bisection"][12]["accuracy"] == 1.0 and results["bisection"][12]["wasted_share"] == 0.0
    assert results["data_policy"][4]["wasted_share"] > 0

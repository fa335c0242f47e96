"""The RL arms compared, on hand-made evaluation numbers."""

import pytest

from mrt_lib.evaluation.comparison import comparison_markdown, gains, seed_runs


def metric(acc: float, regret: float = 0.5) -> dict:
    return {"accuracy": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05, "regret": regret}


def evaluation(matched: bool = False):
    """Two budgets; warm-start 0.40 / 0.60; GRPO's seeds gain +0.02/+0.04 at B=6 and lose at
    B=12; MRT's seeds gain +0.06/+0.10 at B=6; GRPO at matched FLOPs (``matched``) gains
    +0.04/+0.06 at both budgets."""
    metrics = {"base": {"B6": metric(0.3), "B12": metric(0.5)}, "warmstart": {"B6": metric(0.4), "B12": metric(0.6)}}
    per_seed = {"grpo": ((0.42, 0.58), (0.44, 0.60)), "mrt_dense": ((0.46, 0.70), (0.50, 0.72))}
    if matched:
        per_seed["grpo_flops"] = ((0.44, 0.64), (0.46, 0.66))
    for arm, seeds in per_seed.items():
        for s, (a6, a12) in enumerate(seeds):
            metrics[f"{arm}/s{s}/r1"] = {"B6": metric(0.0), "B12": metric(0.0)}  # round 1: superseded
            metrics[f"{arm}/s{s}/r2"] = {"B6": metric(a6), "B12": metric(a12)}
        metrics[arm] = {f"B{b}": metric(sum(x[i] for x in seeds) / 2) for i, b in enumerate((6, 12))}
    compute = {"rollouts": 100, "steps": 10, "prefix_generated_tokens": 5, "generated_tokens": 50, "probe_tokens": 0,
               "trained_tokens": 60, "update_forward_tokens": 120, "total_tokens": 235, "flops": 1.5e9}
    details = {"compute": {arm: {"mean": compute} for arm in per_seed}}
    return metrics, details


def test_gains_over_the_warmstart_use_the_last_round_of_every_seed():
    metrics, _ = evaluation()
    assert seed_runs(metrics, "grpo") == ["grpo/s0/r2", "grpo/s1/r2"]
    mean, lo, hi = gains(metrics, "grpo", "warmstart", [6, 12])[6]
    # gains 0.02 and 0.04: mean 0.03, s = 0.014142, half width 12.706205 * 0.01 = 0.127062
    assert mean == pytest.approx(0.03) and (lo, hi) == pytest.approx((0.03 - 0.127062, 0.03 + 0.127062), abs=1e-5)


def test_the_gain_ratio_only_over_a_positive_grpo_gain():
    metrics, details = evaluation()
    md = comparison_markdown(metrics, details, [6, 12], ["grpo", "mrt_dense"], train_budget=6, levels=[0.45])
    ratio = next(line for line in md.splitlines() if line.startswith("| mrt_dense / grpo |"))
    # B=6: MRT +0.08 over GRPO +0.03 -> 2.67x; B=12: GRPO's gain is -0.01 -> no ratio
    assert ratio == "| mrt_dense / grpo | 2.67x | n/a (GRPO gain <= 0) |"
    assert "| model | B=6 | B=12* |" in md  # 12 lies past the training budget
    # tokens to reach 0.45 on the mean curves: GRPO 0.43 -> 0.59 crosses at 6 + 6 * 0.02/0.16 = 6.75;
    # MRT is at 0.48 already at B=6: 6.75 / 6 = 1.125, shown 1.13x
    assert "| grpo | 6.8 |" in md and "| mrt_dense | 6.0 (1.13x fewer than grpo) |" in md
    assert "| grpo | 100 | 10 | 5 | 50 | 0 | 60 | 120 | 235 | 1.5e+09 |" in md  # the ledger, per arm


def test_without_the_start_model_evaluated_the_tables_say_so_instead_of_failing():
    metrics, details = evaluation()
    del metrics["warmstart"], metrics["base"]
    md = comparison_markdown(metrics, details, [6, 12], ["grpo", "mrt_dense"], train_budget=6, levels=[0.45])
    assert "add `warmstart` to evaluate.models" in md
    assert "| grpo | 0.430" in md and "### Gain over" not in md and "### Token efficiency" in md


def test_matched_structure_and_matched_compute_get_their_own_tables():
    metrics, details = evaluation(matched=True)
    md = comparison_markdown(metrics, details, [6, 12], ["grpo", "grpo_flops", "mrt_dense"], train_budget=12,
                             levels=[0.45])
    structure = md.index("### Gain / GRPO's gain, matched structure: each arm against grpo")
    compute = md.index("### Gain / GRPO's gain, matched compute (flops): each arm against grpo_flops")
    # matched compute: MRT +0.08 / +0.11 over GRPO-at-FLOPs' +0.05 / +0.05 -> 1.60x, 2.20x
    assert "| mrt_dense / grpo_flops | 1.60x | 2.20x |" in md[compute:]
    assert "| mrt_dense / grpo | 2.67x |" in md[structure:compute]
    assert "| grpo_flops / grpo" not in md  # baselines are not compared with each other
    # token efficiency against each baseline: grpo_flops is at 0.45 already at B=6 -> 1.00x
    assert "against grpo_flops, matched compute (flops)" in md and "6.0 (1.00x fewer than grpo_flops)" in md

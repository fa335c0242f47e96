"""The headline comparison of the RL arms (edges of ``report``): accuracy per budget with its
interval, the gain over the warm-start and MRT's gain over GRPO's (METHOD.md (20)), token
efficiency against GRPO (METHOD.md (17)), normalised regret and what each arm cost.

Every number comes from ``metrics/evaluate.json`` and ``evaluate_details.json``; nothing is
re-measured here. Intervals are over seeds where an arm has several, else over problems.
"""

from __future__ import annotations

import numpy as np

from mrt_core.metrics import gain_ratio, seed_interval, tokens_to_reach

BASELINE = "grpo"
# what a round's metrics say it cost (mrt_lib.rl.batch.round_summary; METHOD.md (23))
COMPUTE_KEYS = ("rollouts", "steps", "prefix_generated_tokens", "generated_tokens", "probe_tokens", "trained_tokens",
                "update_forward_tokens", "total_tokens", "flops")


def baselines(arms: list[str]) -> list[str]:
    """GRPO at matched structure (``grpo``) and at matched compute (``grpo_tokens``, ``grpo_flops``)."""
    return [a for a in arms if a == BASELINE or a in (f"{BASELINE}_tokens", f"{BASELINE}_flops")]


def _matching(baseline: str) -> str:
    return "matched structure" if baseline == BASELINE else f"matched compute ({baseline.rsplit('_', 1)[1]})"


def _fmt(mean: float, lo: float | None = None, hi: float | None = None) -> str:
    return f"{mean:+.3f}" if lo is None else f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _cell(row: dict, key: str = "accuracy") -> str:
    lo, hi = ("ci_low", "ci_high") if key == "accuracy" else (f"{key}_ci_low", f"{key}_ci_high")
    return f"{row[key]:.3f} [{row[lo]:.3f}, {row[hi]:.3f}]" if lo in row else f"{row[key]:.3f}"


def seed_runs(metrics: dict, arm: str) -> list[str]:
    """The per-seed runs of ``arm``'s last round, ``<arm>/s<seed>/r<n>`` (the last n)."""
    runs = [m for m in metrics if m.startswith(f"{arm}/s")]
    last = max(int(m.rsplit("/r", 1)[1]) for m in runs)
    return sorted(m for m in runs if m.endswith(f"/r{last}"))


def gains(metrics: dict, arm: str, start: str, budgets: list[int]) -> dict[int, tuple[float, float | None,
                                                                                       float | None]]:
    """Per budget: the mean gain of ``arm`` over ``start`` (METHOD.md (20)) and its interval
    over seeds (None with one seed)."""
    out = {}
    for b in budgets:
        per_seed = np.array([metrics[r][f"B{b}"]["accuracy"] for r in seed_runs(metrics, arm)])
        diff = per_seed - metrics[start][f"B{b}"]["accuracy"]
        out[b] = seed_interval(diff) if diff.size > 1 else (float(diff[0]), None, None)
    return out


def comparison_markdown(metrics: dict, details: dict, budgets: list[int], arms: list[str], train_budget: int,
                        levels: list[float], start: str = "warmstart") -> str:
    """The Markdown tables of the headline comparison (empty without RL arms)."""
    if not arms:
        return ""
    mark = lambda b: f"{b}*" if b > train_budget else str(b)  # noqa: E731
    head = "| model | " + " | ".join(f"B={mark(b)}" for b in budgets) + " |\n|---|" + "---|" * len(budgets)
    lines = [f"Budgets marked * lie past the training budget C_0 = {train_budget}. Intervals: 95%, over seeds "
             "(Student t) where an arm has several, else over problems (bootstrap).", "",
             "### Accuracy", "", head]
    for m in (m for m in dict.fromkeys(["base", start, *arms]) if m in metrics):  # base once, also as the start
        lines.append(f"| {m} | " + " | ".join(_cell(metrics[m][f"B{b}"]) for b in budgets) + " |")
    if start not in metrics:  # gains need the start model's own curve
        lines += ["", f"Gains over the {start} model need it evaluated: add `{start}` to evaluate.models."]
        return "\n".join(lines + ["", efficiency_table(metrics, budgets, arms, levels), "",
                                   compute_table(details, arms)]) + "\n"
    g = {arm: gains(metrics, arm, start, budgets) for arm in arms}
    lines += ["", f"### Gain over the {start} model", "", head]
    for arm in arms:
        lines.append(f"| {arm} | " + " | ".join(_fmt(*g[arm][b]) for b in budgets) + " |")
    for base in baselines(arms):  # one table per way of matching GRPO to the other arms
        lines += ["", f"### Gain / GRPO's gain, {_matching(base)}: each arm against {base}", "", head]
        for arm in (a for a in arms if a not in baselines(arms)):
            cells = []
            for b in budgets:
                ratio = gain_ratio(g[arm][b][0], g[base][b][0])
                cells.append(f"{ratio:.2f}x" if ratio is not None else "n/a (GRPO gain <= 0)")
            lines.append(f"| {arm} / {base} | " + " | ".join(cells) + " |")
    lines += ["", "### Normalised regret (oracle comparator)", "", head]
    for m in [start, *arms]:
        lines.append(f"| {m} | " + " | ".join(_cell(metrics[m][f"B{b}"], "regret") for b in budgets) + " |")
    for base in baselines(arms) or [BASELINE]:
        lines += ["", efficiency_table(metrics, budgets, arms, levels, base)]
    lines += ["", compute_table(details, arms)]
    return "\n".join(lines) + "\n"


def efficiency_table(metrics: dict, budgets: list[int], arms: list[str], levels: list[float],
                     baseline: str = BASELINE) -> str:
    """Tokens each arm needs to reach each accuracy level on its mean curve (METHOD.md (17)),
    and ``baseline``'s tokens divided by the arm's; a level never reached is said so."""
    rows = [f"### Token efficiency (tokens to reach an accuracy level; against {baseline}, {_matching(baseline)})",
            "", "| model | " + " | ".join(f"acc {x:.2f}" for x in levels) + " |", "|---|" + "---|" * len(levels)]
    reach = {a: [tokens_to_reach(budgets, [metrics[a][f"B{b}"]["accuracy"] for b in budgets], x) for x in levels]
             for a in arms}
    for arm in arms:
        cells = []
        for mine, base in zip(reach[arm], reach.get(baseline, [None] * len(levels))):
            if mine is None:
                cells.append("never reached")
            elif arm != baseline and base is not None:
                cells.append(f"{mine:.1f} ({base / mine:.2f}x fewer than {baseline})")
            else:
                cells.append(f"{mine:.1f}")
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def compute_table(details: dict, arms: list[str]) -> str:
    """What each arm's training computed (mean over seeds, all rounds; METHOD.md (23): FLOPs =
    2N(generated + teacher-forced + 3 trained), teacher-forced = probes + the update's forwards)."""
    rows = ["### Training compute per arm (mean over seeds, all rounds)", "",
            "| arm | " + " | ".join(COMPUTE_KEYS) + " |", "|---|" + "---|" * len(COMPUTE_KEYS)]
    for arm in arms:
        mean = details["compute"][arm]["mean"]
        rows.append(f"| {arm} | " + " | ".join(f"{mean[k]:.3g}" if k == "flops" else f"{mean[k]:,.0f}"
                                              for k in COMPUTE_KEYS) + " |")
    return "\n".join(rows)

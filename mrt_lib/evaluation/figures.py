"""The figures of the evaluation, drawn once: ``evaluate`` writes the accuracy figure to
``plots/``, ``report`` embeds it with the others in its page."""

from __future__ import annotations

import io

REFERENCES = ("bisection", "data_policy")
REFERENCE_STYLE = {"bisection": ("k--", "bisection (optimal)"), "data_policy": (":", "base data policy")}


def figure_png(draw, size: tuple[float, float] = (6, 3.8), dpi: int = 100, legend_loc: str = "best") -> bytes:
    """PNG bytes of one matplotlib figure drawn by ``draw(ax)`` (headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def draw_accuracy(ax, rows: dict[str, list[dict]], budgets: list[int], models: list[str]) -> None:
    """Accuracy against the budget with its interval for each of ``models``, and the
    reference policies present in ``rows`` (name -> one row per budget)."""
    for name in models:
        over = rows[name][0].get("ci_over", "problems")
        ax.plot(budgets, [r["accuracy"] for r in rows[name]], "o-", label=f"{name} (95% CI over {over})")
        ax.fill_between(budgets, [r["ci_low"] for r in rows[name]], [r["ci_high"] for r in rows[name]], alpha=0.2)
    for ref in (r for r in REFERENCES if r in rows):
        style, label = REFERENCE_STYLE[ref]
        ax.plot(budgets, [r["accuracy"] for r in rows[ref]], style, label=label)
    ax.set(xlabel="generated-token budget", ylabel="accuracy (forced answer)", ylim=(0, 1.02))


def figures(metrics: dict, details: dict, budgets: list[int], models: list[str]) -> dict[str, bytes]:
    """Name -> PNG bytes: accuracy, regret, pass@k / maj@k and progress figures of ``models``
    (base, warm-start, each RL arm over its seeds)."""
    keys = [f"B{b}" for b in budgets]

    def accuracy(ax):
        shown = [m for m in [*models, *REFERENCES] if m in metrics]
        draw_accuracy(ax, {m: [metrics[m][k] for k in keys] for m in shown}, budgets, models)

    def regret(ax):
        for m in models:
            ax.plot(budgets, [metrics[m][k]["regret"] for k in keys], "o-", label=f"{m} (oracle)")
            ax.plot(budgets, [metrics[m][k]["regret_votes"] for k in keys], "s--", label=f"{m} (votes vs episode)")
        ax.set(xlabel="token budget C", ylabel="normalised regret", ylim=(0, 1.02))

    def pass_maj(ax):
        top = str(budgets[-1])
        for m in models:
            rows = details[m]["pass_maj"][top]
            ax.plot([r["total_tokens"] for r in rows], [r["pass_at_k"] for r in rows], "o-", label=f"{m} pass@k")
            ax.plot([r["total_tokens"] for r in rows], [r["maj_at_k"] for r in rows], "s--", label=f"{m} maj@k")
        ax.set(xlabel=f"total tokens (k samples at B={top})", ylabel="accuracy", ylim=(0, 1.02))

    def progress(ax):
        edges = [-1 + 0.1 * i for i in range(21)]
        for m in models:
            hist = details[m]["progress"]["progress_histogram"]
            ax.stairs(hist, edges, label=f"{m} (zero-progress {details[m]['progress']['zero_progress_share']:.0%})")
        ax.set(xlabel="progress of an episode (change of J)", ylabel="episodes")

    return {name: figure_png(fn) for name, fn in
            (("accuracy", accuracy), ("regret", regret), ("pass_maj", pass_maj), ("progress", progress))}

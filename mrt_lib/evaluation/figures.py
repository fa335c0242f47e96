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

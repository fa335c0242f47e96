"""What ``evaluate`` writes: the DVC metrics and plots, the details file (schema inside), every
rollout, and the accuracy figure; each file atomically."""

from __future__ import annotations

from mrt_lib.common import Paths, atomic_path, jsonl_text, write_json_atomic
from mrt_lib.evaluation.figures import REFERENCES, draw_accuracy, figure_png
from mrt_lib.evaluation.rows import DETAILS_SCHEMA


def write_outputs(paths: Paths, results: dict, records: dict[str, list[dict]], budgets: list[int],
                  details: dict | None = None, shown: list[str] | None = None) -> None:
    by_budget = {name: {f"B{b}": row for b, row in rows.items()} for name, rows in results.items()}
    write_json_atomic(paths.metrics / "evaluate.json", by_budget, sort_keys=False)  # budgets in order
    write_json_atomic(paths.metrics / "evaluate_details.json", {"schema": DETAILS_SCHEMA, **(details or {})},
                      sort_keys=False)
    models = shown if shown is not None else [n for n in results if n not in REFERENCES]
    refs = [n for n in REFERENCES if n in results]
    plot_rows = [{"budget": b, **{name: results[name][b]["accuracy"] for name in [*models, *refs]}}
                 for b in budgets]
    write_json_atomic(paths.plots / "accuracy_vs_budget.json", plot_rows)
    regret_rows = [{"budget": b, **{n: results[n][b]["regret"] for n in models},
                    **{f"{n}_votes": results[n][b]["regret_votes"] for n in models}} for b in budgets]
    write_json_atomic(paths.plots / "regret_vs_budget.json", regret_rows)
    with atomic_path(paths.eval_dir) as tmp:
        tmp.mkdir()
        for name, recs in records.items():
            (tmp / f"rollouts_{name.replace('/', '_')}.jsonl").write_text(jsonl_text(recs))
    rows = {n: [results[n][b] for b in budgets] for n in [*models, *refs]}
    png = figure_png(lambda ax: draw_accuracy(ax, rows, budgets, models), size=(6, 4), dpi=110,
                     legend_loc="lower right")
    with atomic_path(paths.plots / "accuracy_vs_budget.png") as tmp:
        tmp.write_bytes(png)

"""Stage ``report``: one self-contained HTML page and a Markdown summary of the evaluation.

Figures are rendered with matplotlib and embedded as base64 PNG (the page opens with no
network); the same figures are logged to MLflow. The page states the command and the config
hash that produced it.

    python -m tasks.report                   # what dvc.yaml runs
"""

from __future__ import annotations

from mrt_lib.common import Paths, atomic_path, entry_environment, read_json, setup_process, sha256_text
from mrt_lib.config import Params, for_stage, stage_params
from mrt_lib.evaluation.comparison import comparison_markdown
from mrt_lib.evaluation.figures import figures
from mrt_lib.evaluation.pages import extrapolation_lines, headline_rows, render_html, render_markdown
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("evaluate", "rl")


def run_report(params: Params, paths: Paths) -> dict[str, bytes]:
    params = for_stage(params, SECTIONS)
    metrics = read_json(paths.metrics / "evaluate.json")
    details = read_json(paths.metrics / "evaluate_details.json")
    budgets = params.evaluate.budgets
    config_hash = sha256_text(params.model_dump_json())[:16]
    models = params.evaluate.models
    figs = figures(metrics, details, budgets, models)
    table = headline_rows(metrics, budgets, models)
    arms = [m for m in models if m in params.rl.arms + params.rl.matched_names]  # matched runs too
    comparison = comparison_markdown(metrics, details, budgets, arms, params.rl.train_budget,
                                     params.evaluate.efficiency_levels, start=params.rl.start)
    with atomic_path(paths.reports) as tmp:
        tmp.mkdir()
        ext = extrapolation_lines(details)
        eff = details["token_efficiency"]
        (tmp / "report.html").write_text(render_html(figs, table, eff, config_hash, ext, comparison))
        (tmp / "report.md").write_text(render_markdown(table, eff, config_hash, ext, comparison))
        (tmp / "comparison.md").write_text(comparison)
        for name, png in figs.items():
            (tmp / f"{name}.png").write_bytes(png)
    return figs


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    entry_environment()
    setup_process(params.runtime.torch_threads, 0)
    paths = Paths()
    with stage_run("report", params.runtime.tracking_uri, params.runtime.experiment, {}) as mlflow:
        run_report(params, paths)
        mlflow.log_artifacts(str(paths.reports), artifact_path="report")
    print(f"report: {paths.reports / 'report.html'}")


if __name__ == "__main__":
    main()

"""Stage ``report``: one self-contained HTML page and a Markdown summary of the evaluation.

Figures are rendered with matplotlib and embedded as base64 PNG (the page opens with no
network); the same figures are logged to MLflow. The page states the command and the config
hash that produced it.

    python -m tasks.report                   # what dvc.yaml runs
"""

from __future__ import annotations

import base64
import html

from mrt_lib.common import Paths, atomic_path, read_json, setup_process, sha256_text
from mrt_lib.config import Params, for_stage, stage_params
from mrt_lib.evaluation.comparison import comparison_markdown
from mrt_lib.evaluation.figures import REFERENCES, draw_accuracy, figure_png
from mrt_lib.tracking import stage_run

COMMAND = "dvc repro  (or: make run)"

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("evaluate", "rl")


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


def headline_rows(metrics: dict, budgets: list[int], models: list[str]) -> list[list[str]]:
    """The headline table: ``models`` (each RL arm over its seeds), the reference policies, then
    every RL run on its own (``<arm>/s<seed>/r<round>``)."""
    header = ["model"] + [f"acc@{b}" for b in budgets] + [f"regret@{budgets[-1]}", "wasted steps"]
    rows = [header]
    runs = [m for m in metrics if m not in models and m not in REFERENCES]
    for m in [*models, *(r for r in REFERENCES if r in metrics), *runs]:
        cells = [m]
        for b in budgets:
            r = metrics[m][f"B{b}"]
            ci = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if "ci_low" in r else ""
            cells.append(f"{r['accuracy']:.2f}{ci}")
        last = metrics[m][f"B{budgets[-1]}"]
        cells.append(f"{last['regret']:.3f}" if "regret" in last else "-")
        cells.append(f"{last['wasted_share']:.0%}")
        rows.append(cells)
    return rows


def markdown_tables_html(md: str) -> str:
    """The comparison's Markdown (``###`` headings, paragraphs and pipe tables) as HTML."""
    out, rows = [], []

    def flush():
        if rows:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[2:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def render_html(figs: dict[str, bytes], table: list[list[str]], efficiency: list[dict], config_hash: str,
                extrapolation: list[str] = (), comparison: str = "") -> str:
    imgs = "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{name}</figcaption></figure>" for name, png in figs.items())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    eff = "".join(f"<li>{html.escape(efficiency_line(e))}</li>" for e in efficiency)
    ext = "".join(f"<li>{html.escape(line)}</li>" for line in extrapolation)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MRT evaluation report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>MRT evaluation report</h1>
<p>Produced by <code>{html.escape(COMMAND)}</code>; config hash <code>{config_hash}</code>.</p>
<h2>Headline numbers</h2><table><tr>{head}</tr>{body}</table>
{"<h2>RL arms compared</h2>" + markdown_tables_html(comparison) if comparison else ""}
<h2>Token efficiency</h2><ul>{eff}</ul>
<h2>Extrapolation</h2><ul>{ext}</ul>
<h2>Figures</h2>{imgs}
<script>
// marks how many figures decoded, so a headless browser can check the page as a reader sees it
window.addEventListener("load", () => {{
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.figures = ok + "/" + imgs.length;
}});
</script>
</body></html>
"""


def extrapolation_lines(details: dict) -> list[str]:
    """Accuracy past the evaluated budgets with budget forcing, forced tokens counted."""
    lines = []
    for model, d in details.items():
        if "/" in model:  # RL runs are summarised by their arm over seeds
            continue
        for budget, r in (d.get("extrapolation") or {}).items() if isinstance(d, dict) else ():
            lines.append(f"{model} at {budget} tokens (budget forcing): accuracy {r['accuracy']:.2f} "
                         f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}], {r['forced_continuations']:.1f} stops overridden "
                         f"and {r['forced_tokens']:.1f} forced tokens per rollout")
    return lines


def efficiency_line(e: dict) -> str:
    if e["ratio_b_over_a"] is None:
        return f"accuracy {e['level']:.2f}: {e['note']}"
    return (f"accuracy {e['level']:.2f}: {e['a']} needs {e['tokens_a']:.1f} tokens, {e['b']} {e['tokens_b']:.1f} "
            f"({e['ratio_b_over_a']:.2f}x)")


def render_markdown(table: list[list[str]], efficiency: list[dict], config_hash: str,
                    extrapolation: list[str] = (), comparison: str = "") -> str:
    lines = ["# MRT evaluation report", "", f"Produced by `{COMMAND}`; config hash `{config_hash}`.", "",
             "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    lines += ["", "Token efficiency:", ""] + [f"- {efficiency_line(e)}" for e in efficiency]
    lines += ["", "Extrapolation:", ""] + [f"- {line}" for line in extrapolation]
    if comparison:
        lines += ["", "## RL arms compared", "", comparison]
    return "\n".join(lines) + "\n"


def run_report(params: Params, paths: Paths) -> dict[str, bytes]:
    params = for_stage(params, SECTIONS)
    metrics = read_json(paths.metrics / "evaluate.json")
    details = read_json(paths.metrics / "evaluate_details.json")
    budgets = params.evaluate.budgets
    config_hash = sha256_text(params.model_dump_json())[:16]
    models = params.evaluate.models
    figs = figures(metrics, details, budgets, models)
    table = headline_rows(metrics, budgets, models)
    arms = [m for m in models if m in params.rl.arms]
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
    setup_process(params.runtime.torch_threads, 0)
    paths = Paths()
    with stage_run("report", params.runtime.tracking_uri, params.runtime.experiment, {}) as mlflow:
        run_report(params, paths)
        mlflow.log_artifacts(str(paths.reports), artifact_path="report")
    print(f"report: {paths.reports / 'report.html'}")


if __name__ == "__main__":
    main()

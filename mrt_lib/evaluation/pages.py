"""The report's pages: a self-contained HTML page (figures embedded as base64 PNG, no network
needed to open it) and its Markdown twin, from the evaluation's metrics."""

from __future__ import annotations

import base64
import html

from mrt_lib.evaluation.figures import REFERENCES

COMMAND = "dvc repro  (or: make run)"


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

"""Where benchmark results go (``mrt_lib.measurements``), and a Markdown table printer."""

from __future__ import annotations

from mrt_lib.measurements import machine, record  # noqa: F401  (the benchmarks' import)


def print_table(header: list[str], rows: list[list]) -> None:
    """Print ``rows`` (already formatted cells) as a Markdown table under ``header``."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(map(str, cells)) + " |")

"""The report: self-contained HTML and Markdown, checked in headless Chromium as a reader sees it."""

import os
import re
import shutil
import subprocess

import pytest

from tasks.evaluate import run_evaluate
from tasks.report import run_report
from tests.conftest import copy_outputs


@pytest.fixture(scope="module")
def report(trained_smoke, tmp_path_factory):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path_factory.mktemp("report"), "dataset", "base_model", "warmstart_model", "rl")
    run_evaluate(params, paths)
    figs = run_report(params, paths)
    return paths, figs


def test_report_files_and_content(report):
    paths, figs = report
    html = (paths.reports / "report.html").read_text()
    md = (paths.reports / "report.md").read_text()
    assert set(figs) == {"accuracy", "regret", "pass_maj", "progress"}
    assert html.count('src="data:image/png;base64,') == 4  # embedded: opens with no network
    assert "http://" not in html and "https://" not in html
    assert re.search(r"config hash <code>[0-9a-f]{16}</code>", html)
    assert "| model | acc@4 | acc@8 | acc@12 | regret@12 | wasted steps |" in md
    assert all(f"| {m} |" in md for m in ("base", "warmstart", "bisection", "data_policy"))
    assert "- base at 16 tokens (budget forcing): accuracy" in md
    # the RL arms compared: accuracy, gain over the warm-start and MRT's gain over GRPO's, regret,
    # efficiency and compute; budgets past the training budget (8) are marked
    comparison = (paths.reports / "comparison.md").read_text()
    assert "## RL arms compared" in md and comparison in md and "<h2>RL arms compared</h2>" in html
    assert "| model | B=4 | B=8 | B=12* |" in comparison
    ratio_row = next(line for line in comparison.splitlines() if line.startswith("| mrt_dense / grpo |"))
    assert ratio_row.count("|") == 5 and ("x" in ratio_row or "n/a (GRPO gain <= 0)" in ratio_row)
    assert "| grpo | " in comparison.split("### Training compute")[1]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report, tmp_path):
    exe = chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
        pytest.skip("chromium not installed (Debian package 'chromium'); .ci/run installs it")
    paths, _ = report
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", (paths.reports / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-figures="4/4"' in proc.stdout  # every figure decoded
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == []  # no console errors or warnings from the page

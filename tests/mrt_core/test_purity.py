"""mrt_core imports nothing beyond torch, numpy and the standard library."""

import ast
import sys
from pathlib import Path

import mrt_core

ALLOWED = {"torch", "numpy", "mrt_core"} | set(sys.stdlib_module_names)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_mrt_core_is_pure():
    files = sorted(Path(mrt_core.__file__).parent.rglob("*.py"))
    assert len(files) >= 5
    offenders = {str(f): sorted(imported_roots(f) - ALLOWED) for f in files if imported_roots(f) - ALLOWED}
    assert offenders == {}


def test_purity_check_would_catch_an_edge_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow\nfrom prefect import flow\nimport os\n")
    assert imported_roots(bad) - ALLOWED == {"mlflow", "prefect"}

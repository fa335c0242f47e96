"""Every stage in dvc.yaml lists the project code its command imports, so a code change
re-runs what it must (a cache that misses a code dependency silently serves stale results)."""

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "mrt_core")
NOT_AFFECTING_OUTPUTS = {"tasks/tracking.py", "tasks/__init__.py"}  # logging only


def module_file(name: str) -> Path:
    path = REPO / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def project_imports(path: Path, seen: set[Path]) -> set[Path]:
    """Project files a module imports, transitively."""
    if path in seen or not path.exists():
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES and module_file(name).exists():
                project_imports(module_file(name), seen)
    return seen


def covered(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def test_stage_deps_cover_the_code_they_import():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert len(stages) == 9
    missing = {}
    for name, stage in stages.items():
        module = stage["cmd"].split("-m ")[1].split()[0]
        files = project_imports(module_file(module), set())
        rels = {f.relative_to(REPO).as_posix() for f in files} - NOT_AFFECTING_OUTPUTS
        lacking = sorted(r for r in rels if not covered(r, stage["deps"]))
        if lacking:
            missing[name] = lacking
    assert missing == {}

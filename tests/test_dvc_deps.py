"""Every stage in dvc.yaml lists the project code its command imports, so a code change
re-runs what it must (a cache that misses a code dependency silently serves stale results)."""

import ast
from pathlib import Path

import yaml

from mrt_lib.layout import PACKAGES

REPO = Path(__file__).resolve().parents[1]
NOT_AFFECTING_OUTPUTS = {"mrt_lib/tracking.py", "tasks/__init__.py"}  # logging only


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
    assert len(stages) == 11
    missing = {}
    for name, stage in stages.items():
        module = stage["cmd"].split("-m ")[1].split()[0]
        files = project_imports(module_file(module), set())
        rels = {f.relative_to(REPO).as_posix() for f in files} - NOT_AFFECTING_OUTPUTS
        lacking = sorted(r for r in rels if not covered(r, stage["deps"]))
        if lacking:
            missing[name] = lacking
    assert missing == {}


def _has(doc: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False
        doc = doc[part]
    return True


def test_every_dvc_param_is_in_every_full_params_file():
    """DVC refuses to run a stage whose params key is missing from params.yaml (pydantic's
    default does not count), so each params file used as params.yaml names every one."""
    from mrt_lib.config import read_params_file

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    keys = {p for s in stages.values() for p in s.get("params", [])}
    files = ["params.yaml", "tests/params_smoke.yaml", "profiles/gpu_r1_distill_1p5b.yaml",
             "profiles/params_headline.yaml"]
    missing = {f: sorted(k for k in keys if not _has(read_params_file(REPO / f), k)) for f in files}
    assert missing == {f: [] for f in files}


def test_every_variable_dvc_yaml_interpolates_is_in_every_full_params_file():
    """DVC resolves ``${section.key}`` in deps and outs from params.yaml alone (pydantic's
    default does not count): a missing key fails every stage at parse time."""
    import re

    from mrt_lib.config import read_params_file

    used = set(re.findall(r"\$\{([a-z_.]+)\}", (REPO / "dvc.yaml").read_text())) - {"item"}
    used = {u for u in used if not u.startswith("item.")}
    assert "meta_prover.folder" in used and "rl.match_compute" in used
    files = ["params.yaml", "tests/params_smoke.yaml", "profiles/gpu_r1_distill_1p5b.yaml",
             "profiles/params_headline.yaml"]
    missing = {f: sorted(k for k in used if not _has(read_params_file(REPO / f), k)) for f in files}
    assert missing == {f: [] for f in files}

"""The layers of the code, checked like the purity test: ``mrt_core`` < ``mrt_lib`` < ``tasks``
< ``flows`` (``mrt_lib/layout.py``). No module imports a higher layer, no stage imports another
stage, benchmarks import no stage, the library has no import circle, and no behaviour is chosen
by comparing an arm or environment name with a string outside the registries."""

import ast
import re
import tomllib
from pathlib import Path

from mrt_lib.layout import PACKAGES

REPO = Path(__file__).resolve().parents[1]
LAYER = {name: i for i, name in enumerate(PACKAGES)}


def modules(*tops: str) -> dict[str, Path]:
    out = {}
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """Project modules ``path`` imports (module-level or inside functions alike)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in found if n.split(".")[0] in LAYER or n.split(".")[0] == "benchmarks"}


def test_pyproject_packages_are_the_layout_list():
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == [f"{p}*" for p in PACKAGES]
    assert all((REPO / p / "__init__.py").exists() for p in PACKAGES)


def test_no_module_imports_a_higher_layer_and_no_stage_imports_another():
    bad = []
    for name, path in modules(*PACKAGES).items():
        mine = LAYER[name.split(".")[0]]
        for imp in imports(path):
            top = imp.split(".")[0]
            if top == "benchmarks" or LAYER[top] > mine:
                bad.append(f"{name} imports {imp}")
            elif name.startswith("tasks.") and top == "tasks" and not imp.startswith(name):
                bad.append(f"stage {name} imports stage {imp}")
    assert bad == []
    assert len(modules("tasks")) >= 10  # the stages were found


def test_benchmarks_import_library_code_not_stages():
    bad = [f"{name} imports {imp}" for name, path in modules("benchmarks").items() for imp in imports(path)
           if imp.split(".")[0] in ("tasks", "flows")]
    assert bad == []
    assert len(modules("benchmarks")) >= 5


def test_the_library_has_no_import_circle():
    mods = modules("mrt_core", "mrt_lib")
    graph = {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}
    for m in mods:  # a package's __init__ may import its own modules; everything else is a DAG
        graph[m] = {i for i in graph[m] if not i.startswith(m + ".")}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def _chooses_by_name(node: ast.Compare) -> bool:
    """``arm == "grpo"``, ``params.env.kind != "math"``, ``kind in ("a", "b")`` and the like."""
    sides = [node.left, *node.comparators]

    def named(n):
        return (isinstance(n, ast.Name) and n.id in ("arm", "kind")) or \
            (isinstance(n, ast.Attribute) and n.attr in ("arm", "kind"))

    def strings(n):
        return (isinstance(n, ast.Constant) and isinstance(n.value, str)) or \
            (isinstance(n, (ast.Tuple, ast.List, ast.Set)) and any(strings(e) for e in n.elts))

    return any(named(s) for s in sides) and any(strings(s) for s in sides)


ALLOWED = re.compile(r"^mrt_lib\.(rl\.arms|envs)(\.|$)")  # the registries


def test_no_behaviour_chosen_by_an_arm_or_env_name_outside_the_registries_and_validators():
    found = []
    for name, path in modules("mrt_core", "mrt_lib", "tasks", "flows", "benchmarks").items():
        if ALLOWED.match(name):
            continue
        tree = ast.parse(path.read_text())
        validators = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                      and any("validator" in ast.unparse(d) for d in f.decorator_list) for n in ast.walk(f)}
        found += [f"{name}:{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
                  if isinstance(n, ast.Compare) and _chooses_by_name(n) and id(n) not in validators]
    assert found == []


def test_the_name_check_finds_what_it_should():
    hits = [ast.parse(code).body[0].value for code in ('arm == "grpo"', 'params.env.kind != "math"',
                                                       'kind in ("a", "b")')]
    misses = [ast.parse(code).body[0].value for code in ('r["arm"] == arm', 'arm.probes == "prefix"', 'x == "a"')]
    assert all(_chooses_by_name(n) for n in hits)
    assert not any(_chooses_by_name(n) for n in misses)

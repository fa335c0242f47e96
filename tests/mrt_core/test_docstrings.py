"""Every public function of the algorithm modules names its quantity and cites docs/METHOD.md."""

import importlib
import inspect
from pathlib import Path

MODULES = ["mrt_core.episodes", "mrt_core.meta_prover", "mrt_core.regret", "mrt_core.advantages", "mrt_core.backtrack",
           "mrt_core.loss", "mrt_core.metrics"]
METHOD = Path(__file__).resolve().parents[2] / "docs" / "METHOD.md"


def public_callables():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if not attr.startswith("_") and inspect.isfunction(obj) and obj.__module__ == name:
                yield f"{name}.{attr}", obj


def test_every_public_function_cites_method_md():
    found = dict(public_callables())
    assert len(found) >= 30
    missing = [name for name, fn in found.items() if "METHOD.md" not in (inspect.getdoc(fn) or "")]
    assert missing == []


def test_cited_equations_exist():
    text = METHOD.read_text()
    for n in range(1, 22):
        assert f"({n})" in text

"""The project's packages, lowest layer first: the one list that packaging, the profile
workspaces, the test helpers and the DVC dependency test derive from (a new package added here
reaches all of them; ``tests/test_layers.py`` checks ``pyproject.toml`` agrees).

A module may import only from its own layer or those below it: ``mrt_core`` (the pure method)
< ``mrt_lib`` (the machinery) < ``tasks`` (the stages) < ``flows`` (compositions of stages).
"""

PACKAGES: tuple[str, ...] = ("mrt_core", "mrt_lib", "tasks", "flows")

"""The view of params one stage gets: only the sections it names."""

from __future__ import annotations

import json

from mrt_lib.config.params import Params


class StageConfig:
    """The sections of params one stage reads, and only those: the stage's ``SECTIONS``, which
    are the sections of its ``params`` in ``dvc.yaml`` (``tests/test_stage_sections.py``), so a
    stage cannot read a setting DVC does not track. Reading any other section fails naming it."""

    def __init__(self, source: "Params | StageConfig", names: tuple[str, ...]):
        self._names = tuple(names)
        self._sections = {name: getattr(source, name) for name in names}

    def __getattr__(self, name: str):
        sections = self.__dict__.get("_sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"this stage reads only the params sections {self.__dict__.get('_names')}, not "
                             f"{name!r}: add it to the stage's SECTIONS and to its params in dvc.yaml")

    def model_dump_json(self) -> str:
        """The stage's sections as canonical JSON (its config hash)."""
        return json.dumps({n: s.model_dump(mode="json") for n, s in self._sections.items()}, sort_keys=True)


def for_stage(params: "Params | StageConfig", names: tuple[str, ...]) -> StageConfig:
    """``params`` narrowed to a stage's sections (the error names a section it lacks)."""
    return StageConfig(params, names)

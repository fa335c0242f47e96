"""Reading a params file: ``inherit`` chains, dotted overrides, and validation errors as one
line per problem with exit status 2 (``load_params_or_exit``)."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from mrt_lib.config.params import Params


class ConfigError(ValueError):
    """A params file that cannot be used; the message names every problem."""


INHERIT = "inherit"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML's last-wins would
    silently drop the first value)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line}): keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_params_file(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a params file. A profile may start with ``inherit: <params file>``
    (relative to itself): that file is read first and the profile's sections are merged over it
    (mappings key by key, anything else replaced), so a profile says only what it changes."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file (run from the repository root or pass --params)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: inherits from itself ({' -> '.join(str(p) for p in seen)})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): save the params file as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:  # named file:line (the marks name the file, not "<unicode string>")
        mark = getattr(exc, "problem_mark", None)
        for m in (getattr(exc, "context_mark", None), mark):
            if m is not None:
                m.name = str(path)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise ConfigError(f"{path}: a value cannot be read: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path} is empty: write the sections to change (or `inherit: params.yaml`); an empty "
                          "file is refused rather than silently running the defaults")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop(INHERIT, None)
    if parent is None:
        return raw
    return _merge(read_params_file(path.parent / parent, (*seen, path.resolve())), raw)


def _merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``, mappings key by key; a mapping whose ``kind`` changes (a data source,
    say) replaces the inherited one whole, since the other kind's keys do not apply to it."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        mergeable = isinstance(value, dict) and isinstance(old, dict) and value.get("kind", old.get("kind")) == \
            old.get("kind")
        out[key] = _merge(old, value) if mergeable else value
    return out


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file (following ``inherit``); raise ``ConfigError`` with
    readable messages."""
    path = Path(path)
    raw = read_params_file(path)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        field, sep, rest = msg.partition(": ")
        if isinstance(value, dict) and sep and field in value:  # a section-level check naming one field
            key, msg, value = f"{key}.{field}", rest, value[field]
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"  {key}{shown}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys of the section at ``loc``; a tagged union (``source``) is followed through the
    tag pydantic puts in the location (``build_dataset.source.hf.<key>``)."""
    model: type[BaseModel] = Params
    parts = list(loc)
    while parts:
        if isinstance(parts[0], int):  # an item of a list of sections (rl.rounds.0)
            parts.pop(0)
            continue
        field = model.model_fields.get(str(parts.pop(0)))
        members = _model_members(field.annotation) if field is not None else []
        if len(members) > 1 and parts:
            tag = str(parts.pop(0))
            members = [m for m in members if m.model_fields.get("kind") and tag in typing.get_args(
                m.model_fields["kind"].annotation)]
        if len(members) != 1:
            return []
        model = members[0]
    return sorted(model.model_fields)


def _model_members(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation names (itself, or the members of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is list:
        return _model_members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def stage_params(doc: str, argv: list[str] | None = None) -> Params:
    """The command line of every stage entry point: ``--params FILE`` (default params.yaml),
    validated, exit status 2 on a bad file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file to validate and use")
    return load_params_or_exit(parser.parse_args(argv).params)


def load_params_or_exit(path: str | Path = "params.yaml") -> Params:
    """For entry points: on a bad config print the problems and exit with status 2."""
    try:
        return load_params(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

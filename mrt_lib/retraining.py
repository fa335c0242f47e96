"""Scheduled retraining: what changed since the champion was trained, the gate's decision, and
the candidate workspaces kept.

A candidate is trained only when the code, the params or the training data differ from the
champion's, each read as a hash and stored as a tag of every registered version:

- code: every ``.py`` of the project's packages and ``dvc.yaml``;
- params: the resolved profile, less its ``retrain`` section (the gate's settings do not change
  what is trained);
- data: what ``build_dataset`` reads (``source.inputs()``): local files and ``save_to_disk``
  folders by their content, a hub dataset by its id and pinned revision (an unpinned one cannot
  be seen to change, said so); generated problems by their params (in the params hash).

A decision (``apply_verdict``) moves ``@champion`` or sets ``@challenger``, tags the version
with the verdict, and is recorded in MLflow (a run with the compared numbers) and in a JSON file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mrt_lib.champion import Verdict
from mrt_lib.common import write_json_atomic
from mrt_lib.layout import PACKAGES
from mrt_lib.model_registry import CHALLENGER, CHAMPION, registry_client, set_alias, version_by_alias

HASH_TAGS = {"code": "mrt.code_hash", "params": "mrt.params_hash", "data": "mrt.data_hash"}
WORKSPACE_TAG = "mrt.workspace"
DECISION_EXPERIMENT = "mrt-retrain"


def code_hash(root: Path) -> str:
    """Every ``.py`` file of the project's packages under ``root`` and its ``dvc.yaml``."""
    digest = hashlib.sha256()
    files = sorted(f for name in PACKAGES for f in (root / name).rglob("*.py") if "__pycache__" not in f.parts)
    for f in [*files, root / "dvc.yaml"]:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


UNTRAINED_SECTIONS = ("retrain", "resources")  # read by orchestration only


def params_hash(raw: dict[str, Any]) -> str:
    """The resolved params, less the sections no output depends on (``retrain``, ``resources``),
    as canonical JSON."""
    trained = {k: v for k, v in raw.items() if k not in UNTRAINED_SECTIONS}
    return hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tree_hash(path: Path, digest) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())


def data_hash(params, root: Path) -> tuple[str, str]:
    """The hash of what ``build_dataset`` reads, and a note on what it covers: local files and
    folders by content, hub datasets by id and revision, generated problems by nothing more
    (their params are in the params hash)."""
    source = params.build_dataset.source
    digest = hashlib.sha256(source.kind.encode())
    inputs, unpinned = source.inputs(), []
    for name, revision in inputs:
        local = Path(name) if Path(name).is_absolute() else root / name
        digest.update(f"{name}@{revision}".encode())
        if local.exists():
            _tree_hash(local, digest)
        elif not revision:
            unpinned.append(name)
    if not inputs:
        note = "generated from params"
    elif unpinned:
        note = f"{', '.join(sorted(set(unpinned)))}: no pinned revision, a change on the hub is not seen"
    else:
        note = "local inputs by content, hub datasets by revision"
    return digest.hexdigest()[:16], note


def fingerprints(params, raw: dict[str, Any], root: Path) -> tuple[dict[str, str], str]:
    """``{"code", "params", "data"}`` hashes of what a candidate would be trained from, and the
    data hash's note (``data_hash``)."""
    data, note = data_hash(params, root)
    return {"code": code_hash(root), "params": params_hash(raw), "data": data}, note


def changes(current: dict[str, str], champion_tags: dict[str, str]) -> list[str]:
    """What differs from the champion's tags (a tag it lacks counts as changed)."""
    return [part for part, tag in HASH_TAGS.items() if champion_tags.get(tag) != current[part]]


def artifact_root(tracking_uri: str) -> str | None:
    """Where a local SQLite store keeps artifacts (``mlruns/`` beside it, as the stages do);
    None for a tracking server, which has its own."""
    prefix = "sqlite:///"
    return (Path(tracking_uri[len(prefix):]).parent / "mlruns").as_uri() if tracking_uri.startswith(prefix) else None


def version_tags(current: dict[str, str], **more: str) -> dict[str, str]:
    return {**{HASH_TAGS[k]: v for k, v in current.items()}, **{f"mrt.{k}": str(v) for k, v in more.items()}}


def apply_verdict(tracking_uri: str, name: str, version: str, verdict: Verdict, decisions_dir: Path,
                  candidate: str, artifacts: str | None = None, **facts: Any) -> dict:
    """Move ``@champion`` to ``version`` if the verdict promotes it, else point ``@challenger``
    at it; tag the version; record the decision in MLflow and as ``decisions_dir/<candidate>.json``
    (and ``last.json``). Returns the decision."""
    alias = CHAMPION if verdict.promote else CHALLENGER
    previous = version_by_alias(tracking_uri, name, CHAMPION)
    set_alias(tracking_uri, name, alias, version)
    client = registry_client(tracking_uri)
    client.set_model_version_tag(name, version, "mrt.verdict", "promoted" if verdict.promote else "kept out")
    client.set_model_version_tag(name, version, "mrt.reason", verdict.reason)
    decision = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": name,
                "version": str(version), "alias": alias, "candidate": candidate,
                "previous_champion": str(previous.version) if previous else None, **verdict.as_dict(), **facts}
    decision["mlflow_run_id"] = _log_decision(client, decision, artifacts)
    write_json_atomic(decisions_dir / f"{candidate}.json", decision)
    write_json_atomic(decisions_dir / "last.json", decision)
    return decision


def _log_decision(client, decision: dict, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(DECISION_EXPERIMENT)
    experiment = found.experiment_id if found else client.create_experiment(DECISION_EXPERIMENT, artifacts)
    run = client.create_run(experiment, run_name=f"gate v{decision['version']}",
                            tags={"mrt.stage": "gate", "mrt.verdict": "promoted" if decision["promote"] else "kept out",
                                  "mrt.reason": decision["reason"], "mrt.model_version": decision["version"],
                                  "mrt.candidate": decision["candidate"]})
    for key, value in decision["compared"].items():
        if isinstance(value, (int, float)):
            client.log_metric(run.info.run_id, f"gate.{key}", float(value))
    client.log_dict(run.info.run_id, decision, "decision.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def housekeeping(candidates: Path, champion_workspace: str | None, keep_challengers: int) -> list[Path]:
    """Remove the candidate workspaces other than the champion's and the newest
    ``keep_challengers`` others (names start with their UTC time, so they sort by age);
    returns what was removed."""
    others = sorted((p for p in candidates.iterdir()  # not ".mrt/": the retraining lock lives there
                     if p.is_dir() and not p.name.startswith(".") and p.name != champion_workspace),
                    key=lambda p: p.name) if candidates.is_dir() else []
    removed = others[:max(len(others) - keep_challengers, 0)]
    for path in removed:
        shutil.rmtree(path)
    return removed

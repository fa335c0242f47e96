"""Scheduled retraining with a champion gate (deployment ``mrt-retrain/nightly``).

1. Skip when nothing changed: the code, params and training-data hashes of ``profile`` equal
   the tags of the current ``@champion`` (``mrt_lib/retraining.py``); the run ends Completed
   with "skipped: <reason>" and touches nothing.
2. Otherwise train a candidate: the whole pipeline under ``profile`` in a workspace of its own,
   ``runs/candidates/<UTC time>-<id>/`` (DVC's cache is shared, so unchanged stages are restored).
3. Register the candidate policy (``retrain.arm``'s last round) as a new version of
   ``retrain.model_name`` in the shared registry (``MRT_TRACKING_URI``, else the repository's
   store), its weights copied into MLflow's artifacts, tagged with the hashes, the git commit,
   the pipeline run and the DVC path of the weights.
4. Evaluate champion and challenger on the candidate's (current) test problems at C_0 with the
   same seeds; the gate (``retrain.gate_*``) moves ``@champion`` or sets ``@challenger``. The
   decision goes to MLflow (experiment ``mrt-retrain``) and ``runs/retrain/decisions/``.
5. Remove candidate workspaces but the champion's and the last ``retrain.keep_challengers``.

    python -m flows.retrain --profile params.yaml            # or: make retrain
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task

from flows.pipeline import check_profile, mrt_pipeline, run_flow
from flows.workspace import DEFAULT_PROFILE, profile_path, workspace_lock
from mrt_lib.champion import decide
from mrt_lib.common import Paths, entry_environment
from mrt_lib.config import load_params, read_params_file
from mrt_lib.data import dataset_hash, load_problems
from mrt_lib.envs import environment
from mrt_lib.evaluation.gate import gate_budget, per_problem_values
from mrt_lib.model_registry import CHAMPION, download, register_candidate, version_by_alias
from mrt_lib.prefect_server import note_flow_run
from mrt_lib.retraining import (
    WORKSPACE_TAG,
    apply_verdict,
    artifact_root,
    changes,
    fingerprints,
    housekeeping,
    version_tags,
)
from mrt_lib.tracking import TRACKING_URI_ENV


def registry_uri(params, repo: Path) -> str:
    """The one registry every run shares: ``MRT_TRACKING_URI`` (a tracking server), else the
    repository's own store (its params' ``runtime.tracking_uri``, made absolute)."""
    uri = os.environ.get(TRACKING_URI_ENV) or params.runtime.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = f"{prefix}{(repo / uri[len(prefix):]).resolve()}"
    return uri


def git_commit(repo: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                           text=True).stdout.strip()
    return proc.stdout.strip() + ("-dirty" if dirty else "")


@task(name="register-candidate", cache_policy=None)
def register(uri: str, name: str, model_dir: str, tags: dict[str, str]) -> dict:
    version = register_candidate(uri, name, Path(model_dir), tags, artifacts=artifact_root(uri))
    return {"version": str(version.version), "source": version.source}


@task(name="evaluate-for-gate", cache_policy=None)
def evaluate_for_gate(workspace: str, challenger_dir: str, uri: str, name: str) -> dict:
    """Per-problem values of challenger and (when there is one) champion on the workspace's test
    problems; the champion's weights come from the registry."""
    ws = Path(workspace)
    params = load_params(ws / "params.yaml")
    problems = load_problems(Paths(ws), "test")
    out = {"budget": gate_budget(params), "n_problems": len(problems), "champion": None}
    with environment(params) as env, tempfile.TemporaryDirectory(dir=ws) as tmp:
        out["challenger"] = per_problem_values(params, Path(challenger_dir), problems, env, "challenger")
        if version_by_alias(uri, name, CHAMPION) is not None:
            champion_dir = download(uri, name, CHAMPION, Path(tmp))
            try:
                out["champion"] = per_problem_values(params, champion_dir, problems, env, "champion")
            except (ValueError, OSError) as exc:  # e.g. a champion of another environment
                print(f"the champion cannot be evaluated on these problems: {exc}")
                out["champion"] = {}
    return out


def retrain_run_name() -> str:
    return f"retrain-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


@flow(name="mrt-retrain", log_prints=True, flow_run_name=retrain_run_name)
def mrt_retrain(profile: str = DEFAULT_PROFILE, repo_dir: str = ".", force: bool = False) -> dict:
    """Train, register and gate a candidate under ``profile`` unless nothing changed since the
    champion (``force``: train anyway). Returns the decision (or the reason it was skipped)."""
    note_flow_run()
    entry_environment(needs_hub=True)  # as in main(): a deployment's run starts here
    repo = Path(repo_dir).resolve()
    params = check_profile(profile, repo_dir)
    cfg, uri = params.retrain, registry_uri(params, repo)
    current, data_note = fingerprints(params, read_params_file(profile_path(profile, repo)), repo)
    champion = version_by_alias(uri, cfg.model_name, CHAMPION)
    if champion is not None and not force:
        changed = changes(current, champion.tags)
        if not changed:
            reason = (f"skipped: code, params and data are those of {cfg.model_name} v{champion.version} "
                      f"(@champion; hashes {current})")
            print(reason)
            return {"skipped": True, "reason": reason}
        print(f"changed since {cfg.model_name} v{champion.version}: {', '.join(changed)}")
    with workspace_lock(repo / "runs" / "candidates"):  # one retraining at a time
        return _train_and_gate(profile, repo, params, cfg, uri, current, data_note)


def _train_and_gate(profile: str, repo: Path, params, cfg, uri: str, current: dict, data_note: str) -> dict:
    candidate = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    run = mrt_pipeline(profile=profile, repo_dir=str(repo), workdir=str(repo / "runs" / "candidates" / candidate))
    ws = Path(run["workspace"])
    arm, seed, last = params.candidate_policy()
    model_rel = Paths().rl_round(arm, seed, last) / "model"
    tags = version_tags(current, git_commit=git_commit(repo), dataset_hash=dataset_hash(Paths(ws)),
                        data_note=data_note, pipeline_run=run["pipeline_run"], dvc_path=str(model_rel),
                        workspace=candidate, profile=profile, arm=arm, seed=seed)
    version = register(uri, cfg.model_name, str(ws / model_rel), tags)
    print(f"registered {cfg.model_name} v{version['version']} from {model_rel} ({version['source']})")
    values = evaluate_for_gate(str(ws), str(ws / model_rel), uri, cfg.model_name)
    champion = values["champion"]
    verdict = decide(cfg.gate_metric, cfg.gate_margin, None if champion is None else champion.get(cfg.gate_metric),
                     values["challenger"][cfg.gate_metric], cfg.gate_level)
    decision = apply_verdict(uri, cfg.model_name, version["version"], verdict, repo / "runs" / "retrain" / "decisions",
                             candidate, artifact_root(uri), budget=values["budget"], n_problems=values["n_problems"],
                             means={who: {k: sum(v) / len(v) for k, v in (values[who] or {}).items()}
                                    for who in ("champion", "challenger") if values[who]})
    print(f"gate: {verdict.reason} -> v{version['version']} is @{decision['alias']}")
    holder = version_by_alias(uri, cfg.model_name, CHAMPION)
    removed = housekeeping(repo / "runs" / "candidates", holder.tags.get(WORKSPACE_TAG) if holder else None,
                           cfg.keep_challengers)
    for path in removed:
        print(f"removed the candidate workspace {path.name}")
    return decision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="a complete params file (default params.yaml)")
    parser.add_argument("--repo-dir", default=".")
    parser.add_argument("--force", action="store_true", help="train a candidate even when nothing changed")
    args = parser.parse_args(argv)
    entry_environment(needs_hub=True)
    run_flow(mrt_retrain, Path(args.repo_dir) / "runs" / "retrain", lambda: check_profile(args.profile, args.repo_dir),
             profile=args.profile, repo_dir=args.repo_dir, force=args.force)


if __name__ == "__main__":
    main()

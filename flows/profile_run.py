"""Run the pipeline under another params profile, in a workspace of its own.

A profile is a complete params file (``profiles/params_*.yaml``), e.g. the headline experiment.
Its workspace (``runs/<name>/`` by default, git-ignored; ``flows/workspace.py``) gets a fresh
copy of the pipeline code, ``dvc.yaml`` and the profile as ``params.yaml``, then the pipeline
flow runs every stage through DVC there. Re-running skips what is done and resumes an
interrupted RL round; a code change re-runs what depends on it. Outputs, ``dvc.lock`` and
``mlflow.db`` stay in the workspace, so the main pipeline's are never touched; DVC's cache is
shared with the repository, so upstream stages with the default's params are restored, not re-run.

    python -m flows.profile_run profiles/params_headline.yaml      # or: make headline
"""

from __future__ import annotations

import argparse

from flows.pipeline import check_profile, mrt_pipeline, run_flow
from flows.workspace import workspace_for
from mrt_lib.common import entry_environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a complete params file, e.g. profiles/params_headline.yaml")
    parser.add_argument("--workdir", default=None, help="workspace (default runs/<profile name>)")
    args = parser.parse_args(argv)
    entry_environment(needs_hub=True)  # telemetry off; each stage decides about the hub for itself
    run_flow(mrt_pipeline, workspace_for(args.profile, ".", args.workdir), lambda: check_profile(args.profile, "."),
             profile=args.profile, workdir=args.workdir)


if __name__ == "__main__":
    main()

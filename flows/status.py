"""What a team looks at each morning, without the UI: the last runs of every deployment with
their states, and the current champion with its numbers and the last gate decision.

    python -m flows.status          # or: make status (the server `make server` starts)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.retrain import registry_uri
from flows.workspace import DEFAULT_PROFILE
from mrt_lib.common import entry_environment, read_json
from mrt_lib.config import ConfigError, load_params
from mrt_lib.model_registry import CHALLENGER, CHAMPION, version_by_alias
from mrt_lib.prefect_server import ServerUnreachable, check_server


def deployment_lines(last: int = 3) -> list[str]:
    """Per deployment, its last ``last`` flow runs: name, state, start and duration; the message
    of a failed one."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    lines = []
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        for dep in sorted(client.read_deployments(), key=lambda d: (flows.get(d.flow_id, ""), d.name)):
            schedules = ", ".join(f"{s.schedule.cron if hasattr(s.schedule, 'cron') else s.schedule} "
                                  f"({'on' if s.active else 'paused'})" for s in dep.schedules) or "no schedule"
            lines.append(f"{flows.get(dep.flow_id, '?')}/{dep.name}  [{schedules}]")
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                                         sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=last)
            for run in runs or []:
                state = run.state.name if run.state else "?"
                start = f"{run.start_time:%Y-%m-%d %H:%M}" if run.start_time else "not started"
                took = f"{run.total_run_time.total_seconds():.0f} s" if run.total_run_time else ""
                lines.append(f"  {run.name:28s} {state:10s} {start}  {took}")
                if run.state and run.state.is_failed() and run.state.message:
                    lines += [f"    {line.strip()[:200]}" for line in run.state.message.splitlines()[:3]]
            if not runs:
                lines.append("  no runs yet")
    return lines


def champion_lines(uri: str, name: str, repo: Path) -> list[str]:
    lines = []
    for alias in (CHAMPION, CHALLENGER):
        version = version_by_alias(uri, name, alias)
        if version is None:
            lines.append(f"{name}@{alias}: none")
            continue
        tags = version.tags
        lines.append(f"{name}@{alias}: v{version.version}  commit {tags.get('mrt.git_commit', '?')[:12]}  "
                     f"{tags.get('mrt.arm', '?')} s{tags.get('mrt.seed', '?')}  {tags.get('mrt.verdict', '')}: "
                     f"{tags.get('mrt.reason', '')}")
    last = repo / "runs" / "retrain" / "decisions" / "last.json"
    if last.exists():
        d = read_json(last)
        means = "; ".join(f"{who} " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.items()))
                          for who, m in d.get("means", {}).items())
        lines.append(f"last decision {d['time']}: v{d['version']} -> @{d['alias']} ({d['reason']})")
        lines.append(f"  at B={d.get('budget')} on {d.get('n_problems')} test problems: {means}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="the params that name the registered model")
    parser.add_argument("--repo-dir", default=".")
    parser.add_argument("--runs", type=int, default=3, help="runs shown per deployment")
    args = parser.parse_args(argv)
    entry_environment()
    from prefect.settings import PREFECT_API_URL

    repo = Path(args.repo_dir).resolve()
    try:
        params = load_params(repo / args.profile)
    except ConfigError as exc:
        print(f"status: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    code = 0
    if not PREFECT_API_URL.value():
        print("deployments: PREFECT_API_URL is not set (make status sets it to the server make server starts)")
    else:
        try:
            check_server(PREFECT_API_URL.value())
            print("\n".join(deployment_lines(args.runs)))
        except ServerUnreachable as exc:
            print(f"deployments: {exc}", file=sys.stderr)
            code = 1
    print("\n".join(champion_lines(registry_uri(params, repo), params.retrain.model_name, repo)))
    raise SystemExit(code)


if __name__ == "__main__":
    main()

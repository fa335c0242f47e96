"""Fan-out of a DVC stage graph: every stage whose upstream stages are done runs, up to a limit.

The graph is DVC's own (``dvc dag --dot``, matrix stages expanded). ``fan_out`` submits every
ready stage (in a deterministic order) while fewer than ``limit`` run, waits for any to end,
and goes on; a stage that fails stops only what depends on it (the independent branches go on,
so one bad arm does not waste the others' GPU hours), and the result names the failures and
what was not run because of them. ``idempotency_key`` names one stage run by what it is made
from, so that an orchestrator run again after a kill finds the runs it started instead of
starting them twice (Prefect's ``run_deployment(idempotency_key=...)`` returns the existing run).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_NODE = re.compile(r'^"(?P<name>[^"]+)";$')
_EDGE = re.compile(r'^"(?P<up>[^"]+)" -> "(?P<down>[^"]+)";$')


def parse_dag_dot(text: str) -> dict[str, set[str]]:
    """``dvc dag --dot`` output -> stage -> the stages it depends on (edges point downstream)."""
    upstream: dict[str, set[str]] = {}
    for line in (raw.strip() for raw in text.splitlines()):
        if m := _EDGE.match(line):
            upstream.setdefault(m["up"], set())
            upstream.setdefault(m["down"], set()).add(m["up"])
        elif m := _NODE.match(line):
            upstream.setdefault(m["name"], set())
    return upstream


def stage_graph(repo_dir: str | Path, dvc: str = "dvc") -> dict[str, set[str]]:
    """The stage graph of the DVC project in ``repo_dir``."""
    proc = subprocess.run([dvc, "dag", "--dot"], cwd=repo_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc dag failed in {repo_dir}: {proc.stderr.strip()}")
    return parse_dag_dot(proc.stdout)


def check_acyclic(upstream: dict[str, set[str]]) -> None:
    """Raises ValueError naming the stages on a cycle or depending on an unknown stage."""
    unknown = sorted({u for ups in upstream.values() for u in ups} - set(upstream))
    if unknown:
        raise ValueError(f"stages depend on unknown stages {unknown}")
    done: set[str] = set()
    remaining = dict(upstream)
    while remaining:
        ready = [s for s, ups in remaining.items() if ups <= done]
        if not ready:
            raise ValueError(f"the stage graph has a cycle through {sorted(remaining)}")
        for s in ready:
            done.add(s)
            del remaining[s]


def idempotency_key(stage: str, **parts: Any) -> str:
    """One stage run's name for Prefect: the stage and a hash of what it is made from (the
    orchestrator passes the commit, the resolved params, the remote and the deployment: with the
    commit, the code and the inputs' recipe are fixed). Equal parts, equal keys."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return f"{stage}:{digest}"


FAILED_STATES = ("FAILED", "CRASHED", "CANCELLED")


def attempt_keys(key: str, attempts: int) -> list[str]:
    """The keys a stage's runs take in turn: ``key``, ``key#2``, ... ``key#<attempts>``."""
    return [key, *(f"{key}#{n}" for n in range(2, attempts + 1))]


def choose_attempt(key: str, state_by_key: dict[str, str | None], attempts: int) -> tuple[str, bool]:
    """The key to use for a stage, given the states of the runs that already hold its attempt
    keys: the first one whose run is not a failure, and whether a run holds it already (then it is
    waited for: a re-run orchestrator never starts a second job) or not (then one is started
    under it: a failure is retried under the next key). ``RuntimeError`` once every attempt failed."""
    for k in attempt_keys(key, attempts):
        if k not in state_by_key:
            return k, False
        if state_by_key[k] not in FAILED_STATES:
            return k, True
    raise RuntimeError(f"{key}: failed {attempts} times; look at its runs, fix the cause and commit it (a new "
                       "commit is a new key)")


@dataclass
class FanOutResult:
    """``completed`` in the order the stages ended; ``failed``: stage -> error message;
    ``not_run``: stages downstream of a failure; ``max_running``: the most at once."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)
    max_running: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run

    def summary(self) -> str:
        if self.ok:
            return f"{len(self.completed)} stages completed"
        failed = "; ".join(f"{s}: {m.splitlines()[0] if m else ''}" for s, m in self.failed.items())
        return (f"{len(self.failed)} stage(s) failed ({failed}); not run because of them: "
                f"{', '.join(self.not_run) or 'none'}; completed: {len(self.completed)}")


def fan_out(upstream: dict[str, set[str]], run_stage: Callable[[str], Any], limit: int,
            order: Callable[[str], Any] = str, on_done: Callable[[str], None] | None = None,
            stop: threading.Event | None = None) -> FanOutResult:
    """Run every stage of ``upstream`` with ``run_stage`` (in a thread; it returns when the
    stage has ended, raising if it failed), at most ``limit`` at a time, each only after all its
    upstream stages completed; ready stages start in ``order``. ``on_done`` is called in this
    thread as each stage completes (to restore its outputs, say); if it raises, the stage failed.
    When this thread is interrupted (SIGTERM, Ctrl-C), ``stop`` is set and the running stage
    threads are waited for: ``run_stage`` must return soon after ``stop`` is set."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    check_acyclic(upstream)
    result, done = FanOutResult(), set()
    pending, running = set(upstream), {}
    lock, active = threading.Lock(), [0]

    def tracked(stage: str):
        with lock:
            active[0] += 1
            result.max_running = max(result.max_running, active[0])
        try:
            return run_stage(stage)
        finally:
            with lock:
                active[0] -= 1

    pool = ThreadPoolExecutor(max_workers=limit)
    try:
        while pending or running:
            ready = sorted((s for s in pending if upstream[s] <= done), key=order)
            for stage in ready[:limit - len(running)]:
                running[pool.submit(tracked, stage)] = stage
                pending.discard(stage)
            if not running:
                break  # what is left waits on a failed stage
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: order(running[f])):
                _ended(running.pop(future), future, result, done, on_done)
    except BaseException:
        if stop is not None:
            stop.set()  # the running stage threads return at their next look (their jobs run on)
        pool.shutdown(wait=stop is not None, cancel_futures=True)
        raise
    pool.shutdown()
    result.not_run = sorted(pending, key=order)
    return result


def _ended(stage: str, future: Future, result: FanOutResult, done: set[str], on_done) -> None:
    exc = future.exception()
    if exc is not None and not isinstance(exc, Exception):
        raise exc  # KeyboardInterrupt, SystemExit: the orchestrator stops, it is not a stage failure
    if exc is None and on_done is not None:
        try:
            on_done(stage)
        except Exception as hook_exc:  # noqa: BLE001 - restoring a stage's outputs failed: the stage failed
            exc = hook_exc
    if exc is None:
        done.add(stage)
        result.completed.append(stage)
    else:
        result.failed[stage] = str(exc) or type(exc).__name__


def changed_stages(workspace: str | Path, dvc: str = "dvc") -> set[str]:
    """The stages ``dvc status`` finds out of date in ``workspace`` (missing outputs, changed
    deps or params)."""
    proc = subprocess.run([dvc, "status", "--json"], cwd=workspace, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed in {workspace}: {proc.stderr.strip()}")
    return set(json.loads(proc.stdout or "{}"))


def stages_to_run(upstream: dict[str, set[str]], changed: set[str]) -> dict[str, set[str]]:
    """The part of the graph to run: the changed stages and everything downstream of them (a
    stage whose inputs will change is out of date even where ``dvc status`` cannot see it yet),
    each depending only on stages that run too (the others are done)."""
    run = set(changed) & set(upstream)
    grew = True
    while grew:
        more = {s for s, ups in upstream.items() if ups & run} - run
        grew, run = bool(more), run | more
    return {s: upstream[s] & run for s in upstream if s in run}


def job_variables(resources, image: str | None, accepted: set[str] | None) -> tuple[dict[str, Any], list[str]]:
    """A stage's job variables from its ``resources`` (``StageResources``): the GPU count,
    CPU, memory and /dev/shm of its pod, the image, the process count as ``MRT_PROCESSES``, and
    for a stage with no GPU an empty node selector and no tolerations (placed on any node).
    Only the variables the target pool's base job template declares (``accepted``; None: all)
    are kept: a ``process`` pool has no GPUs to ask for. Returns them and the names dropped."""
    wanted: dict[str, Any] = {"gpus": resources.gpus, "cpu": resources.cpu, "memory": resources.memory,
                              "shm_size": resources.shm_size, "env": {"MRT_PROCESSES": str(resources.processes)}}
    if image:
        wanted["image"] = image
    if resources.gpus == 0:  # a CPU stage on the GPU pool's template: any node, not the GPU nodes' taint
        wanted.update(node_selector={}, tolerations=[])
    if accepted is None:
        return wanted, []
    return {k: v for k, v in wanted.items() if k in accepted}, sorted(set(wanted) - accepted)

"""Wall time of the pipeline fanned out over a stage pool vs one sequential ``dvc repro``.

One run, side by side on one machine: a Prefect server on loopback, a process pool standing in
for the GPU pool, a DVC remote in a directory, the smoke profile (2 arms x 2 seeds, 15 stages)
committed in a fresh project. Three ways, each from nothing (a fresh clone, an empty remote):
``dvc repro`` (sequential, in one process tree), the fan-out with 1 stage job at a time (what
the per-stage job costs: a flow run, a checkout, pulls and pushes) and with 2 at once. The
order is interleaved over ``--reps`` (seq, fan-1, fan-2, then reversed) and medians reported.

    .venv/bin/python -m benchmarks.fanout --reps 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.record import print_table, record
from tests.test_team import committed_project, local_team, run

REPO = Path(__file__).resolve().parents[1]


def sequential(repo: Path, work: Path, env: dict) -> float:
    clone = work / "sequential"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    start = time.perf_counter()
    run(["dvc", "repro"], clone, env, timeout=3600)
    return time.perf_counter() - start


def fanned_out(repo: Path, work: Path, env: dict, concurrency: int) -> float:
    clone = work / f"fanout{concurrency}"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.fanout", "--remote", str(work / f"remote{concurrency}"),
                           "--concurrency", str(concurrency)], cwd=clone, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"fan-out failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mrt-fanout-bench-"))
    repo = committed_project(root / "repo")
    times: dict[str, list[float]] = {"sequential dvc repro": [], "fan-out, 1 at a time": [], "fan-out, 2 at once": []}
    # a worker on the stage pool: stage jobs clone from the path the orchestrator gives them
    with local_team(root, repo, ["--pool", "mrt-stages", "--limit", "2"], log_level="WARNING") as server:
        env = server["env"]
        ways = [("sequential dvc repro", lambda w: sequential(repo, w, env)),
                ("fan-out, 1 at a time", lambda w: fanned_out(repo, w, env, 1)),
                ("fan-out, 2 at once", lambda w: fanned_out(repo, w, env, 2))]
        for rep in range(args.reps):
            for index, (name, way) in enumerate(ways if rep % 2 == 0 else reversed(ways)):
                work = root / f"rep{rep}-way{index}"
                work.mkdir()
                times[name].append(way(work))
                print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["sequential dvc repro"]
    print_table(["way", "median wall time (s)", "vs sequential"],
                [[name, f"{m:.1f}", f"{base / m:.2f}x"] for name, m in med.items()])
    record(REPO / "benchmarks" / "results" / "fanout.json", 1, times_s=times, median_s=med, reps=args.reps,
           stages=15, cpus=os.cpu_count())
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

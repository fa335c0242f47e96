"""Throughput of an RL round and of the warm-start SFT at 1 vs 2 data-parallel processes.

Side by side in one run on one machine, from the default pipeline's models (``make run``
first: ``data/dataset``, ``models/base``, ``models/warmstart``, ``data/backtracks``), each stage
as its own process exactly as DVC runs it (``python -m tasks.<stage>``, which launches itself
under ``accelerate launch`` when ``resources.processes`` is 2). Three ways:

- ``1 proc x 1 thread``: the reference;
- ``2 procs x 1 thread``: data-parallel, one torch thread each;
- ``1 proc x 2 threads``: the fair one-process baseline on the same 2 cores.

The order is interleaved over ``--reps`` (A B C, then C B A, ...) and medians reported. An RL round
is the default profile's round cut to ``--rl-steps`` steps (its validation included); the SFT is the
default profile's cut to ``--sft-steps`` steps. Times are the stage's own (``wall_seconds`` /
``train_seconds`` as the stage reports them: model loading and the launcher excluded) and the whole
process's (start to exit: what a user waits for).

    .venv/bin/python -m benchmarks.data_parallel --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.record import print_table, record

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WAYS = {"1 proc x 1 thread": (1, 1), "2 procs x 1 thread": (2, 1), "1 proc x 2 threads": (1, 2)}
NEEDED = ("data/dataset", "data/backtracks", "models/base", "models/warmstart")


def workspace(root: Path, processes: int, threads: int, rl_steps: int, sft_steps: int) -> Path:
    """A copy of the project's code and the default params, with the default pipeline's inputs."""
    from mrt_lib.layout import PACKAGES

    root.mkdir(parents=True)
    for name in PACKAGES:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in NEEDED:
        shutil.copytree(REPO / name, root / name)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runtime"]["torch_threads"] = threads
    raw["runtime"]["tracking_uri"] = "sqlite:///mlflow.db"  # the workspace's own
    raw["resources"]["default"]["processes"] = processes
    for stage in raw["resources"].get("stages", {}).values():
        stage["processes"] = processes
    raw["rl"].update(arms=["grpo"], seeds=[0], steps_per_round=rl_steps, save_every=rl_steps)
    raw["evaluate"]["models"] = ["base", "warmstart", "grpo"]
    sft = raw["sft_warmstart"]
    sft.update(max_steps=sft_steps, save_every=sft_steps, eval_every=sft_steps, warmup_steps=0)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def timed(ws: Path, *cmd: str) -> tuple[float, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=ws, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {ws}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return took, proc.stdout


def summary_of(stdout: str, stage: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith(f"{stage}: {{"))
    text = line.removeprefix(f"{stage}: ")
    try:
        return json.loads(text)
    except ValueError:  # the SFT prints a Python dict
        import ast

        return ast.literal_eval(text)


def rl_round(ws: Path) -> dict:
    shutil.rmtree(ws / "rl", ignore_errors=True)
    shutil.rmtree(ws / "checkpoints", ignore_errors=True)
    timed(ws, "tasks.rl_start", "--arm", "grpo", "--seed", "0")
    took, out = timed(ws, "tasks.rl_round", "--arm", "grpo", "--seed", "0", "--round", "1")
    s = summary_of(out, "rl_round")
    phases = {f"{k.removeprefix('seconds_')}_s": v for k, v in s.items()
              if k.startswith("seconds_") and k != "seconds_by_process"}
    return {"process_s": took, "stage_s": s["wall_seconds"], "rollouts": s["rollouts"],
            "tokens": s["generated_tokens"] + s["prefix_generated_tokens"], **phases}


def sft(ws: Path) -> dict:
    shutil.rmtree(ws / "models" / "warmstart", ignore_errors=True)
    shutil.rmtree(ws / "checkpoints", ignore_errors=True)
    took, out = timed(ws, "tasks.sft_warmstart")
    # the RL round starts from the warm-start: put the pipeline's back, so every round is the same
    shutil.rmtree(ws / "models" / "warmstart")
    shutil.copytree(REPO / "models" / "warmstart", ws / "models" / "warmstart")
    return {"process_s": took, "stage_s": summary_of(out, "sft_warmstart")["train_seconds"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rl-steps", type=int, default=10)
    parser.add_argument("--sft-steps", type=int, default=40)
    args = parser.parse_args(argv)
    missing = [n for n in NEEDED if not (REPO / n).exists()]
    if missing:
        raise SystemExit(f"benchmarks.data_parallel: {', '.join(missing)} missing: run `make run` first")
    root = Path(tempfile.mkdtemp(prefix="mrt-dp-bench-"))
    spaces = {way: workspace(root / str(i), *pn, args.rl_steps, args.sft_steps) for i, (way, pn) in
              enumerate(WAYS.items())}
    results: dict[str, dict[str, list[dict]]] = {way: {"rl": [], "sft": []} for way in WAYS}
    order = list(WAYS)
    for rep in range(args.reps):
        for way in order if rep % 2 == 0 else order[::-1]:
            results[way]["rl"].append(rl_round(spaces[way]))
            results[way]["sft"].append(sft(spaces[way]))
            print(f"rep {rep + 1} {way}: rl {results[way]['rl'][-1]} sft {results[way]['sft'][-1]}", flush=True)
    med = {way: {kind: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for kind, runs in by.items()}
           for way, by in results.items()}
    ref = med["1 proc x 1 thread"]
    rows = []
    for way, m in med.items():
        rl, s = m["rl"], m["sft"]
        rows.append([way, f"{rl['stage_s']:.1f}", f"{rl['rollouts'] / rl['stage_s']:.1f}",
                     f"{rl['tokens'] / rl['stage_s']:.0f}", f"{ref['rl']['stage_s'] / rl['stage_s']:.2f}x",
                     f"{rl['process_s']:.1f}", f"{s['stage_s']:.1f}", f"{ref['sft']['stage_s'] / s['stage_s']:.2f}x",
                     f"{s['process_s']:.1f}"])
    header = ["way", "RL round s", "rollouts/s", "gen tokens/s", "RL speed-up", "RL process s", "SFT train s",
              "SFT speed-up", "SFT process s"]
    print_table(header, rows)
    record(REPO / "benchmarks" / "results" / "data_parallel.json", 2, args=vars(args), medians=med, runs=results)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

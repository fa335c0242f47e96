"""The tuning budget of the headline experiment: the same number of settings for every RL arm,
each judged on the *validation* problems after one round from the same warm-start and seed.

Every arm gets 4 settings: two learning rates times its own second knob (alpha for the arms
with a progress bonus, the answer-now share for the mixed arm, a KL coefficient for GRPO, the
filter threshold for STaR). The best setting per arm (highest validation accuracy at the
training budget; ties to the lower learning rate) goes into the headline profile. Test problems
are never looked at here.

    .venv/bin/python -m flows.rl_tuning --root . --params profiles/params_headline.yaml

``--root`` must hold data/dataset, models/base and models/warmstart (e.g. after ``make run``);
each run writes under ``<root>/runs/tuning/`` and the table to benchmarks/results/rl_tuning.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prefect import flow

from flows.pipeline import run_flow
from mrt_lib.common import Paths, entry_environment, setup_process
from mrt_lib.config import load_params
from mrt_lib.measurements import record
from mrt_lib.prefect_server import note_flow_run
from tasks.rl_round import run_rl_round
from tasks.rl_start import run_rl_start

LRS = (1e-4, 3e-4)
SECOND = {
    "grpo": ("beta", (0.0, 0.05)),
    "mrt_prefix": ("alpha", (1.0, 3.0)),
    "mrt_dense": ("alpha", (1.0, 3.0)),
    "mrt_dense_live": ("alpha", (1.0, 3.0)),
    "length_penalty": ("length_penalty", (0.1, 0.3)),
    "mrt_mixed": ("answer_now", (2, 4)),
    "mrt_star": ("star_min_total_progress", (0.5, 0.9)),
}


def settings(arm: str) -> list[dict]:
    key, values = SECOND[arm]
    return [{"rl.lr": lr, f"rl.{key}": v} for lr in LRS for v in values]


def tuning_params(params_file: str, arm: str, setting: dict):
    """The profile with one arm, one seed, one round and ``setting``; the profile's tuned
    ``rl.overrides`` are dropped, since they would win over the setting (``RlConfig.for_arm``)."""
    return load_params(params_file, overrides={"rl.arms": [arm], "rl.seeds": [0], "rl.matched_arms": [],
                                               "rl.overrides": {}, **setting, "evaluate.models": ["base"],
                                               "rl.rounds": [{"n": 1, "prev": "r0"}]})


def workspace(root: Path, arm: str, setting: dict) -> Paths:
    name = "_".join(f"{k.split('.')[1]}{v:g}" for k, v in setting.items())
    ws = root / "runs" / "tuning" / arm / name
    for rel in ("data/dataset", "models/base", "models/warmstart"):
        link = ws / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((root / rel).resolve())
    return Paths(root=ws)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--params", default="profiles/params_headline.yaml")
    parser.add_argument("--arms", nargs="*", default=["grpo", "mrt_prefix", "mrt_mixed", "mrt_dense"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/rl_tuning.json")
    args = parser.parse_args(argv)
    entry_environment()  # in-process rounds from the pipeline's local folders: no hub, no telemetry
    best = run_flow(rl_tuning, Path(args.root), lambda: load_params(args.params), root=args.root,
                    params_file=args.params, arms=args.arms, threads=args.threads,
                    out=args.out)
    print("best per arm:", json.dumps(best, indent=1))


@flow(name="mrt-rl-tuning", log_prints=True)
def rl_tuning(root: str, params_file: str, arms: list[str], threads: int, out: str) -> dict:
    """Every setting of every arm, one round each on the validation problems; the best per arm."""
    note_flow_run()
    base = Path(root).resolve()
    rows = []
    for arm in arms:
        for setting in settings(arm):
            params = tuning_params(params_file, arm, setting)
            setup_process(threads, 0)
            paths = workspace(base, arm, setting)
            run_rl_start(params.rl.start, paths, arm, 0)
            t0 = time.time()
            s = run_rl_round(params, paths, arm, 0, 1)
            rows.append({"arm": arm, **setting, "val_accuracy": s["val_accuracy"], "val_regret": s["val_regret"],
                         "best_val_accuracy": s["best_val_accuracy"], "seconds": time.time() - t0})
            print(json.dumps(rows[-1]), flush=True)
    best = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        best[arm] = max(mine, key=lambda r: (r["val_accuracy"], -r["rl.lr"]))
    record(out, threads, rows=rows, best=best)
    return best


if __name__ == "__main__":
    main()

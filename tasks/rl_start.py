"""Stage ``rl_start``: where round 1 of every RL arm and seed starts (``rl.start``).

Writes ``rl/<arm>/s<seed>/r0/start.json`` naming the start model and the hash of its weights,
so round 1 has a predecessor like every later round (DVC cannot compute "the round before" in a
matrix stage) and re-runs when the start model changes.

    python -m tasks.rl_start --arm grpo --seed 0     # what dvc.yaml runs
    python -m tasks.rl_start --arm grpo --seed 0 --matched   # rl/grpo_<rl.match_compute>/s0/r0
"""

from __future__ import annotations

import argparse
import sys

from mrt_lib.common import Paths, entry_environment, missing_model_message, model_hash, write_json_atomic
from mrt_lib.config import load_params_or_exit


def run_rl_start(start: str, paths: Paths, arm: str, seed: int) -> dict:
    model = paths.model(start)
    if not (model / "config.json").exists():
        raise FileNotFoundError(missing_model_message(model))
    pointer = {"model": start, "weights_sha256": model_hash(model), "arm": arm, "seed": seed}
    write_json_atomic(paths.rl_round(arm, seed, 0) / "start.json", pointer)
    return pointer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--matched", action="store_true", help="the start of the arm's compute-matched run")
    args = parser.parse_args(argv)
    params = load_params_or_exit(args.params)
    entry_environment()
    arms, listed = (params.rl.matched_arms, "rl.matched_arms") if args.matched else (params.rl.arms, "rl.arms")
    if args.arm not in arms or args.seed not in params.rl.seeds:  # both form the output's path
        print(f"rl_start: arm {args.arm!r} seed {args.seed} is not in {listed} {arms} / rl.seeds "
              f"{params.rl.seeds}", file=sys.stderr)
        raise SystemExit(2)
    name = params.rl.matched_name(args.arm) if args.matched else args.arm
    try:
        print(f"rl_start: {run_rl_start(params.rl.start, Paths(), name, args.seed)}")
    except FileNotFoundError as exc:
        print(f"rl_start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

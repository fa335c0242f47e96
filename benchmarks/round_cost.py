"""Wall time of an RL round of mrt_dense against GRPO, side by side (issue 18's cost goal).

Both rounds are the default profile's, from the default pipeline's warm-start (run ``make run``
first). Each round runs as DVC runs it (``python -m tasks.rl_start``, then ``tasks.rl_round``,
in a copy of the project), in the order A B B A, repeated ``--reps`` times. The medians of the stage's own
``wall_seconds`` are reported, together with the phases and the ratio. The ratio is also given
per sampled token, since the two arms' rollouts are not exactly the same length, and with the
compute ledger of each round. With the default ``meta_prover.policy: round_start``, mrt_dense's
probes run on a frozen copy of the start policy. GRPO probes ``rl.log_probe_share`` of its
rollouts, for its logs.

    .venv/bin/python -m benchmarks.round_cost --reps 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import yaml

from benchmarks.data_parallel import NEEDED, summary_of, timed, workspace
from benchmarks.record import print_table, record

REPO = Path(__file__).resolve().parents[1]
ARMS = ("grpo", "mrt_dense")


def one_round(ws: Path, arm: str) -> dict:
    """One round of ``arm`` from the warm-start, as DVC runs it (its own process)."""
    shutil.rmtree(ws / "rl" / arm, ignore_errors=True)
    shutil.rmtree(ws / "checkpoints" / "rl" / arm, ignore_errors=True)
    timed(ws, "tasks.rl_start", "--arm", arm, "--seed", "0")
    _, out = timed(ws, "tasks.rl_round", "--arm", arm, "--seed", "0", "--round", "1")
    return summary_of(out, "rl_round")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default: the profile's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "round_cost.json"))
    args = parser.parse_args(argv)
    missing = [n for n in NEEDED if not (REPO / n).exists()]
    if missing:
        raise SystemExit(f"benchmarks.round_cost: {', '.join(missing)} missing: run `make run` first")
    runs = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        steps = args.steps or yaml.safe_load((REPO / "params.yaml").read_text())["rl"]["steps_per_round"]
        ws = workspace(Path(tmp) / "ws", 1, 2, steps, 40)
        raw = yaml.safe_load((ws / "params.yaml").read_text())
        raw["rl"]["arms"], raw["evaluate"]["models"] = list(ARMS), ["base", "warmstart", *ARMS]
        (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        for _ in range(args.reps):
            for arm in ARMS + ARMS[::-1]:  # A B B A
                s = one_round(ws, arm)
                runs[arm].append({k: v for k, v in s.items() if k != "seconds_by_process"})
                print(f"{arm}: {s['wall_seconds']:.1f} s", flush=True)
    med = {arm: {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
           for arm, rs in runs.items()}
    phases = sorted({k for m in med.values() for k in m if k.startswith("seconds_")})
    rows = [[arm, f"{m['wall_seconds']:.1f}", *[f"{m.get(p, 0.0):.1f}" for p in phases],
             f"{m['generated_tokens'] + m['prefix_generated_tokens']:,.0f}", f"{m['total_tokens']:,.0f}",
             f"{m['flops']:.3g}"] for arm, m in med.items()]
    print_table(["arm", "wall (s)", *[p.removeprefix("seconds_") for p in phases], "sampled tokens", "tokens",
                 "FLOPs"], rows)
    d, g = med["mrt_dense"], med["grpo"]
    ratio = d["wall_seconds"] / g["wall_seconds"]
    per_token = ratio * (g["generated_tokens"] + g["prefix_generated_tokens"]) / (
        d["generated_tokens"] + d["prefix_generated_tokens"])
    print(f"mrt_dense / grpo wall time: {ratio:.3f}x; per sampled token: {per_token:.3f}x "
          f"(goal: at most 1.3x at equal sampled tokens)")
    record(args.out, 2, runs=runs, medians=med, wall_ratio=ratio, wall_ratio_per_sampled_token=per_token)


if __name__ == "__main__":
    main()

"""Benchmark: interactive rollouts decoded over one KV cache vs re-encoding every step.

The embedded environment answers after every generated token, so rollouts cannot use
``model.generate``. *Incremental*: ``StepSession`` appends each step's ragged block (the token
and the environment's answer) to one cache. *Re-encode*: every step runs the whole batch again
(the engine's fallback, ``backend.next_tokens``). Both sample the same rollouts (same seed,
same draws: checked here), on the default profile's test problems and base model, side by side,
``--reps`` times; medians and their ratio are printed and written to
``benchmarks/results/rollout_decoding.json``.

    .venv/bin/python -m benchmarks.rollout_decoding          # needs models/base (make run); ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.record import print_table, record
from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.common import Paths
from mrt_lib.config import load_params
from mrt_lib.data import load_problems
from mrt_lib.generation import make_backend
from mrt_lib.generation.rollouts import RolloutEngine


class ReEncoding:
    """The same backend without ``open_session``: the engine re-reads every sequence each step."""

    def __init__(self, backend):
        self.backend, self.tokenizer, self.name = backend, backend.tokenizer, "re-encode"

    def next_tokens(self, *args):
        return self.backend.next_tokens(*args)

    def probe_logprobs_batch(self, *args):
        return self.backend.probe_logprobs_batch(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="*", default=[12, 36])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/rollout_decoding.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params, paths = load_params("params.yaml"), Paths()
    env = CodeSearchEnv(params.env.spec())
    backend = make_backend("hf", str(paths.base_model))
    problems = load_problems(paths, "test")
    rows = []
    for budget in args.budgets:
        engines = {"incremental": RolloutEngine(backend, env), "re-encode": RolloutEngine(ReEncoding(backend), env)}
        times = {name: [] for name in engines}
        outputs = {}
        for _ in range(args.reps):
            for name, engine in engines.items():
                t0 = time.perf_counter()
                outputs[name] = engine.run(problems, 4, budget, seed=0, batch_size=256)
                times[name].append(time.perf_counter() - t0)
        same = [r.token_ids for r in outputs["incremental"]] == [r.token_ids for r in outputs["re-encode"]]
        med = {name: statistics.median(v) for name, v in times.items()}
        rows.append({"budget": budget, "rollouts": len(problems) * 4, "median_incremental_s": med["incremental"],
                     "median_reencode_s": med["re-encode"], "ratio": med["re-encode"] / med["incremental"],
                     "identical_rollouts": same, "times": times})
    record(args.out, args.threads, args=vars(args), rows=rows)
    print_table(["budget", "rollouts", "re-encode median (s)", "incremental median (s)", "speed-up",
                 "identical rollouts"],
                [[r["budget"], r["rollouts"], f"{r['median_reencode_s']:.2f}", f"{r['median_incremental_s']:.2f}",
                  f"{r['ratio']:.2f}x", r["identical_rollouts"]] for r in rows])

if __name__ == "__main__":
    main()

"""Quick evaluation of a model folder at a few budgets, with the evaluate stage's seeds.

Same problems (test split), samples, seeds and bootstrap as ``tasks.evaluate``, without the
meta-prover curves, pass@k or extrapolation: accuracy with a 95% CI, wasted share, backtrack
rates and a count of junk actions (generated tokens that are neither a symbol, the backtrack
marker nor the termination text); with several folders, the paired difference in accuracy
of each against the first (same problems and draws), with a bootstrap CI over problems. For the
warm-start tuning loop (docs/LOG.md):

    python -m benchmarks.warmstart_eval models/base models/warmstart --budgets 12 24 36
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mrt_core.envs.code_search import CodeSearchEnv
from mrt_core.metrics import bootstrap_ci
from mrt_lib.common import Paths, derive_seed, setup_process
from mrt_lib.config import load_params
from mrt_lib.data import load_problems
from mrt_lib.envs import backend_for
from mrt_lib.envs.code_search import failures
from mrt_lib.evaluation.rows import model_row
from mrt_lib.generation.rollouts import RolloutEngine


def evaluate_folder(params, paths: Paths, folder: str, budgets: list[int]) -> dict:
    cfg = params.evaluate
    env = CodeSearchEnv(params.env.spec())
    backend = backend_for(params, folder)
    engine = RolloutEngine(backend, env, cfg.temperature, params.env.continuation_text)
    problems = load_problems(paths, "test")
    spec = env.spec
    out = {}
    for budget in budgets:
        rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "eval", budget), cfg.batch_size,
                           cfg.budget_forcing)
        events = [failures(env, r, engine.id_text) for r in rolls]
        row = model_row(rolls, cfg.n_samples, cfg.n_bootstrap, derive_seed(cfg.seed, "boot", budget), events)
        junk = caret_stop = 0
        for r in rolls:
            acts = r.generated_texts(engine.id_text, r.start_len)
            if r.answer_start >= 0:
                acts = acts[: len(acts) - len(r.answer_ids)]
            junk += sum(not (a in spec.symbols or a == spec.backtrack_text or a == spec.termination_text[0])
                        for a in acts)
            caret_stop += r.stopped_by == "policy" and len(acts) >= 2 and acts[-2] == spec.backtrack_text
        row["junk_per_rollout"] = junk / len(rolls)
        row["backtrack_then_stop"] = caret_stop / len(rolls)
        row["per_problem"] = np.array([r.correct for r in rolls], float).reshape(-1, cfg.n_samples).mean(1).tolist()
        out[budget] = row
    return out


def fmt(name: str, rows: dict) -> str:
    lines = []
    for b, r in rows.items():
        lines.append(f"{name:28s} B={b:2d} acc={r['accuracy']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}] "
                     f"wasted={r['wasted_share']:.2f} bt|first={r['backtrack_after_failed_first']:.2f} "
                     f"bt|deep={r['backtrack_after_deep_failure']:.2f} bt/roll={r['backtracks_per_rollout']:.2f} "
                     f"junk={r['junk_per_rollout']:.2f} ^stop={r['backtrack_then_stop']:.2f} "
                     f"policy_stop={r['stopped_by_policy']:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--budgets", nargs="+", type=int, default=[12, 24, 36])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--json", default=None, help="append one JSON line per folder here")
    args = ap.parse_args()
    params = load_params(args.params)
    setup_process(params.runtime.torch_threads, params.evaluate.seed)
    first = None
    for folder in args.folders:
        t0 = time.time()
        rows = evaluate_folder(params, Paths(), folder, args.budgets)
        print(fmt(folder, rows), f"({time.time() - t0:.0f} s)", flush=True)
        if first is None:
            first = (folder, rows)
        else:
            for b in args.budgets:
                diff = np.array(rows[b]["per_problem"]) - np.array(first[1][b]["per_problem"])
                lo, hi = bootstrap_ci(diff, params.evaluate.n_bootstrap, derive_seed(params.evaluate.seed, "boot", b))
                rows[b]["diff_vs_first"] = [float(diff.mean()), lo, hi]
                print(f"{'':28s} B={b:2d} {folder} - {first[0]}: {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] (paired)")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"folder": folder, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()

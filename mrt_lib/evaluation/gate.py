"""The per-problem numbers the champion gate compares (``mrt_lib/champion.py``).

Champion and challenger are evaluated on the same test problems at the training budget C_0
(``rl.train_budget``) with the same seeds (common random numbers, like ``evaluate``): per
problem, the accuracy of ``evaluate.n_samples`` rollouts and their mean normalised regret
(METHOD.md (6)) read from the meta-prover's J after every episode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mrt_core.regret import regret_curve
from mrt_lib.common import derive_seed
from mrt_lib.envs import backend_for, family
from mrt_lib.generation.curves import curves_for


def gate_budget(params) -> int:
    """C_0: the budget the policy was trained for."""
    return params.rl.train_budget


def per_problem_values(params, model_dir: Path, problems, env, name: str = "model") -> dict[str, list[float]]:
    """``{"accuracy": [...], "regret": [...]}``, one value per problem of ``problems`` (in their
    order), for the model saved in ``model_dir``."""
    cfg, budget = params.evaluate, gate_budget(params)
    backend = backend_for(params, model_dir)
    engine = family(params.env.kind).engine(backend, env, cfg.temperature, params.env)
    rolls = engine.run(problems, cfg.n_samples, budget, derive_seed(cfg.seed, "gate", budget), cfg.batch_size,
                       cfg.budget_forcing, desc=f"gate {name} B={budget}")
    curves = curves_for(engine, rolls, params.meta_prover, derive_seed(cfg.seed, "gate-curves"))
    order = {p.id: i for i, p in enumerate(problems)}
    correct, regret = np.zeros(len(problems)), np.zeros(len(problems))
    counts = np.zeros(len(problems))
    for r, c in zip(rolls, curves):
        i = order[r.problem.id]
        correct[i] += float(r.correct)
        regret[i] += regret_curve(np.array(c.tokens), np.array(c.j), [budget])[0]
        counts[i] += 1
    return {"accuracy": (correct / counts).tolist(), "regret": (regret / counts).tolist()}

"""mrt_core: the Meta Reinforcement Fine-Tuning (MRT) algorithm as a pure library.

Pure means: torch, numpy and the standard library only. No files, no MLflow, no Prefect,
no environment variables. ``tasks/`` performs model calls and I/O; this package says what
to ask a model and how to combine the answers. Equation numbers refer to docs/METHOD.md.

    episodes      episodes as spans of a trace; segmenters (reflection, backtrack, attempts)
    meta_prover   forced-termination probe requests; J estimators (sampled, exact)     (1)-(3)
    regret        progress, cumulative and normalised regret, regret curves            (4)-(7)
    advantages    GRPO, termination baseline, dense per-episode bonus, mixed group     (8)-(13)
    loss          the clipped policy-gradient loss with KL                             (14)
    metrics       accuracy, bootstrap CI, pass@k, maj@k, token efficiency              (15)-(17)
    envs          environments and graders behind Protocols: the embedded code search; text
                  problems (math): templates, answer extraction, dataset hygiene
"""

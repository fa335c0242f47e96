"""mrt_core: the Meta Reinforcement Fine-Tuning (MRT) algorithm as a pure library.

Pure means: torch, numpy and the standard library only. No files, no MLflow, no Prefect,
no environment variables. ``tasks/`` performs model calls and I/O; this package says what
to ask a model and how to combine the answers.
"""

__all__ = ["envs"]

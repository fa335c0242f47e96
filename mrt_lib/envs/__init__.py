"""Environment families, registered by ``env.kind``: each is one object that gives a stage
everything that depends on the kind of problem (the environment, its rollout engine, the
dataset rows, the tokenizer check, reference policies, backtrack events). No stage branches on
the kind; it asks ``family(params.env.kind)``."""

import importlib
import pkgutil

from mrt_lib.envs.base import (
    REGISTRY,
    EnvFamily,
    GradingMeter,
    backend_for,
    backend_for_or_exit,
    environment,
    family,
    register,
)

__all__ = ["REGISTRY", "EnvFamily", "GradingMeter", "backend_for", "backend_for_or_exit", "environment", "family",
           "register"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")

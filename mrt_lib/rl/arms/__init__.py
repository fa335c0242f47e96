"""The RL arms, one module each, registered by name (``base.REGISTRY``). Every module of this
package is imported here, so a new arm's file registers it."""

import importlib
import pkgutil

from mrt_lib.rl.arms.base import REGISTRY, Arm, get_arm, register

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")

ARM_NAMES: tuple[str, ...] = tuple(REGISTRY)

__all__ = ["ARM_NAMES", "REGISTRY", "Arm", "get_arm", "register"]

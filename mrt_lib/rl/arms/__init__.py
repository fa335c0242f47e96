"""The RL arms, one module each, registered by name (``base.REGISTRY``)."""

from mrt_lib.rl.arms import grpo, length_penalty, mrt_dense, mrt_mixed, mrt_prefix, mrt_star  # noqa: F401  (register)
from mrt_lib.rl.arms.base import REGISTRY, Arm, get_arm, register

ARM_NAMES: tuple[str, ...] = tuple(REGISTRY)

__all__ = ["ARM_NAMES", "REGISTRY", "Arm", "get_arm", "register"]

"""What an RL arm is, and the registry that maps ``rl.arms`` names to arms.

Every arm trains through the same round (``tasks/rl_round.py``): same prefixes, same rollouts,
same loss. An arm only says how a step's grouped rollouts become per-token advantages
(METHOD.md (8)-(13), (21)), which ``rl.*`` settings that reads, whether the first
``rl.answer_now`` samples of a group answer at once, and which meta-prover reads its advantage
needs (counted in the arm's compute). The math stays in ``mrt_core.advantages``.

A new arm is one module in this package that defines an ``Arm`` and calls ``register``, plus
its test; ``mrt_lib.rl.arms`` imports every module of the package, so nothing else changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import torch

from mrt_core.advantages import GroupedRollouts
from mrt_lib.registry import Registry

if TYPE_CHECKING:
    from mrt_lib.config import RlConfig

Probes = Literal["none", "prefix", "episodes"]


class Arm(Protocol):
    """One RL arm. ``probes``: the meta-prover reads its advantages need beyond the rollouts
    themselves: ``none``; ``prefix`` (J(mu | c) of each prefix, once); ``episodes`` (J after every
    episode of every continuation). ``prover``: a variant that fixes which model reads J (so one
    run can compare ``mrt_dense`` offline and online)."""

    name: str
    settings: tuple[str, ...]  # the rl.* fields ``advantages`` reads (tunable per arm: rl.overrides)
    answer_now: bool
    probes: Probes
    prover: str | None  # the meta_prover.policy this arm always uses (a variant), or None: the section's

    def advantages(self, batch: GroupedRollouts, cfg: "RlConfig") -> torch.Tensor:
        """Per-token advantages (P, G, T), zero where ``batch.mask`` is False."""
        ...


REGISTRY: Registry[Arm] = Registry("RL arm", "name")
register = REGISTRY.register
get_arm = REGISTRY.get  # the error lists the known arms

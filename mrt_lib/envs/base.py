"""What an environment family offers the stages, and the registry by ``env.kind``.

A new family is one module in this package defining an ``EnvFamily`` and calling
``register`` (``mrt_lib.envs`` imports every module of the package), plus its test and its
name in ``EnvConfig.kind``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

from mrt_core.envs.base import Environment
from mrt_lib.generation.factory import build_backend, build_backend_or_exit
from mrt_lib.registry import Registry


class EnvFamily(Protocol):
    """``backtracks``: whether the MRT-B warm-start stages (backtrack synthesis, warm-start SFT)
    apply; where they do not, those stages write a note saying so. ``dataset_sections``: the
    params sections ``build_dataset`` logs for this family."""

    kind: str
    backtracks: bool
    dataset_sections: tuple[str, ...]

    def open(self, env_cfg, template_cfg, grader_cfg) -> AbstractContextManager[Environment]:
        """The environment; resources it holds (grader workers) are released on exit."""
        ...

    def engine(self, backend, env: Environment, temperature: float, env_cfg) -> Any:
        """The rollout engine for ``env`` (per-token with feedback, or text)."""
        ...

    def check_tokenizer(self, tokenizer, env_cfg, template_cfg) -> None:
        """Raise ``ValueError`` naming what the tokenizer cannot write back unchanged."""
        ...

    def dataset_rows(self, env_cfg, build_cfg, template_cfg) -> tuple[dict[str, list[dict]], dict]:
        """Rows of the train/val/test splits and what else ``meta.json`` records."""
        ...

    def reference_policies(self, env_cfg, p_informed: float) -> list[tuple[str, Callable, bool]]:
        """(name, guess function, stochastic) of policies simulated exactly beside the models;
        empty where none is known."""
        ...

    def backtrack_events(self, env: Environment, rolls: list, id_text: dict) -> list[list[tuple[int, bool]]]:
        """Per rollout, (step an attempt failed at, whether the policy backtracked next)."""
        ...


REGISTRY: Registry[EnvFamily] = Registry("env.kind", "kind")
register = REGISTRY.register
family = REGISTRY.get  # the error lists the known kinds


def environment(cfg) -> AbstractContextManager[Environment]:
    """The environment ``cfg`` (params, or a stage's sections with ``env``, ``template`` and
    ``grader``) configures."""
    return family(cfg.env.kind).open(cfg.env, cfg.template, cfg.grader)


def backend_for(cfg, model_path):
    """The ``generation`` backend for ``model_path``, its tokenizer checked against the
    configured environment (``cfg``: params or a stage's sections with ``generation``, ``env``
    and ``template``)."""
    return build_backend(cfg.generation, model_path, _tokenizer_check(cfg))


def backend_for_or_exit(stage: str, cfg, model_path):
    """``backend_for`` at a stage entry point: a missing backend or model exits with status 2."""
    return build_backend_or_exit(stage, cfg.generation, model_path, _tokenizer_check(cfg))


def _tokenizer_check(cfg) -> Callable:
    fam = family(cfg.env.kind)
    return lambda tok: fam.check_tokenizer(tok, cfg.env, cfg.template)

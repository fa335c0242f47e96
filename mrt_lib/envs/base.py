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

    def grading_counts(self, env: Environment) -> dict[str, int]:
        """Counts of the answers graded so far by outcome (``mrt_lib.grading.OUTCOMES``, plus
        retries); empty where grading is exact and cannot time out."""
        ...


REGISTRY: Registry[EnvFamily] = Registry("env.kind", "kind")
register = REGISTRY.register
family = REGISTRY.get  # the error lists the known kinds


def environment(cfg) -> AbstractContextManager[Environment]:
    """The environment ``cfg`` (params, or a stage's sections with ``env``, ``template`` and
    ``grader``) configures."""
    return family(cfg.env.kind).open(cfg.env, cfg.template, cfg.grader)


class GradingMeter:
    """The environment's grading counts, as deltas since the last ``take()``, keyed
    ``grader_<outcome>``: per RL step or per evaluated model, so that a resumed stage records
    the same counts as an uninterrupted one. Empty for environments that grade exactly."""

    def __init__(self, cfg, env: Environment):
        self._family, self._env, self._cfg = family(cfg.env.kind), env, cfg.grader
        self._last = self._family.grading_counts(env)

    def take(self) -> dict[str, int]:
        now = self._family.grading_counts(self._env)
        delta = {f"grader_{k}": v - self._last.get(k, 0) for k, v in now.items()}
        self._last = now
        return delta

    def check(self, rows) -> dict[str, int]:
        """Sum the ``grader_*`` counts of ``rows`` (what ``take`` returned, possibly inside larger
        dicts) and raise ``GradingError`` past ``grader.max_timeout_share``; returns the sums."""
        from mrt_lib.grading import check_timeouts

        total: dict[str, int] = {}
        for row in rows:
            for k, v in row.items():
                if k.startswith("grader_"):
                    total[k] = total.get(k, 0) + v
        if total:
            check_timeouts({k.removeprefix("grader_"): v for k, v in total.items()}, self._cfg.max_timeout_share,
                           self._cfg.timeout_s)
        return total


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

"""The environment and rollout engine a params file configures (edges of every stage).

``env.kind: code_search`` gives the embedded interactive environment and its per-token engine;
``env.kind: math`` gives text problems (``MathEnv`` with the math-verify grader, whose worker
processes live as long as the ``environment`` context) and the text engine. Stages only talk to
the engine's common methods, so the same stage serves both by configuration alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from mrt_core.envs.code_search import CodeSearchEnv
from mrt_core.envs.math_text import MathEnv
from tasks.config import Params
from tasks.generation.rollouts import RolloutEngine
from tasks.generation.text_rollouts import TextRolloutEngine


@contextmanager
def environment(params: Params) -> Iterator[CodeSearchEnv | MathEnv]:
    """The configured environment; the math grader's workers are stopped on exit."""
    if params.env.kind == "code_search":
        yield CodeSearchEnv(params.env.spec())
        return
    from tasks.grading import build_grader  # imported here: math-verify only for math problems

    with build_grader(params.grader) as grader:
        yield MathEnv(params.template.spec(), grader)


def make_engine(backend, env, temperature: float, params: Params) -> RolloutEngine:
    """The rollout engine for ``env``: per-token with environment feedback, or text."""
    if isinstance(env, MathEnv):
        return TextRolloutEngine(backend, env, temperature)
    return RolloutEngine(backend, env, temperature, params.env.continuation_text)

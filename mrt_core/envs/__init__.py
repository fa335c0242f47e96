"""Reasoning environments behind small interfaces (see ``base``).

Text problems (math) live in ``math_text`` (the environment), ``templates`` (the strings),
``answers`` (answer extraction) and ``problem_text`` (dataset hygiene); they are imported by
their module names, not from here, so that configuration code stays light.
"""

from mrt_core.envs.base import Environment, Grader, Problem, Role, Segment
from mrt_core.envs.code_search import CodeSearchEnv, CodeSearchSpec, SearchState

__all__ = [
    "CodeSearchEnv",
    "CodeSearchSpec",
    "Environment",
    "Grader",
    "Problem",
    "Role",
    "SearchState",
    "Segment",
]

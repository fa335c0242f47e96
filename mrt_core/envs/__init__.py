"""Reasoning environments behind small interfaces (see ``base``)."""

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

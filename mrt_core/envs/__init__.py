"""Reasoning environments behind small interfaces (see ``base``)."""

from mrt_core.envs.base import Environment, Grader, Problem, Role, Segment
from mrt_core.envs.code_search import CodeSearchEnv, CodeSearchSpec, SearchState
from mrt_core.envs.math_text import MathEnv, MathTemplate, render_prompt

__all__ = [
    "CodeSearchEnv",
    "CodeSearchSpec",
    "Environment",
    "Grader",
    "MathEnv",
    "MathTemplate",
    "Problem",
    "Role",
    "SearchState",
    "Segment",
    "render_prompt",
]

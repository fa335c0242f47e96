"""The embedded code-search family: a hidden code guessed digit by digit with higher/lower
feedback (``mrt_core.envs.code_search``), its per-token rollout engine, the code space split
into train/val/test, and the reference policies simulated exactly (bisection, the base data
policy)."""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass

from mrt_core.envs.code_search import CodeSearchEnv, base_guess_fn, bisection_guess
from mrt_lib.envs.base import register
from mrt_lib.generation.rollouts import Rollout, RolloutEngine
from mrt_lib.modeling import check_round_trip


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Disjoint index lists covering ``range(n)``, shuffled with ``seed``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val, n_test = max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
    if n_val + n_test >= n:
        raise ValueError(f"problem space of {n} is too small for the val/test fractions")
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def failures(env: CodeSearchEnv, r: Rollout, id_text: dict) -> list[tuple[int, bool]]:
    """(step the attempt failed at, whether the policy backtracked next) for every failed
    attempt of a rollout that something followed."""
    spec = env.spec
    failed_obs = {spec.obs_higher + spec.obs_attempt_end, spec.obs_lower + spec.obs_attempt_end}
    state = env.initial_state(r.problem)
    actions = r.generated_texts(id_text, r.start_len)
    out = []
    for i, a in enumerate(actions[:-1]):
        result = env.step(state, a)
        state = result.state
        if result.observation in failed_obs:  # a guess was wrong: the attempt failed
            out.append((state.last_fail_step, actions[i + 1] == spec.backtrack_text))
    return out


def first_failure_backtracked(env: CodeSearchEnv, r: Rollout, id_text: dict) -> bool | None:
    """Did the policy backtrack right after its first failed attempt? None when the first
    attempt did not fail or nothing followed it."""
    events = failures(env, r, id_text)
    return events[0][1] if events else None


@dataclass(frozen=True)
class CodeSearchFamily:
    kind: str = "code_search"
    backtracks: bool = True
    dataset_sections: tuple[str, ...] = ("build_dataset", "env")

    @contextmanager
    def open(self, env_cfg, template_cfg=None, grader_cfg=None):
        yield CodeSearchEnv(env_cfg.spec())

    def engine(self, backend, env, temperature: float, env_cfg) -> RolloutEngine:
        return RolloutEngine(backend, env, temperature, env_cfg.continuation_text)

    def check_tokenizer(self, tokenizer, env_cfg, template_cfg=None) -> None:
        check_round_trip(tokenizer, env_cfg.spec().alphabet())

    def dataset_rows(self, env_cfg, build_cfg, template_cfg=None) -> tuple[dict[str, list[dict]], dict]:
        """The code space (V ** D codes) enumerated, shuffled with ``build_dataset.seed`` and cut
        into disjoint splits."""
        env = CodeSearchEnv(env_cfg.spec())
        splits = split_indices(env.spec.problem_space(), build_cfg.val_fraction, build_cfg.test_fraction,
                               build_cfg.seed)
        rows = {}
        for split, indices in splits.items():
            rows[split] = [{"id": p.id, "prompt": p.prompt, "answer": p.answer, "env": self.kind, "split": split}
                           for p in (env.make_problem(i) for i in indices)]
        return rows, {"problem_space": env_cfg.spec().problem_space()}

    def reference_policies(self, env_cfg, p_informed: float) -> list:
        data_policy = base_guess_fn(env_cfg.spec().n_values, p_informed)
        return [("bisection", bisection_guess, False), ("data_policy", data_policy, True)]

    def backtrack_events(self, env, rolls: list, id_text: dict) -> list[list[tuple[int, bool]]]:
        return [failures(env, r, id_text) for r in rolls]

    def grading_counts(self, env) -> dict[str, int]:
        return {}  # the hidden code is compared exactly


register(CodeSearchFamily())

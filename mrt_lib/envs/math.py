"""The math family: text problems from a dataset (hub id or files), the R1 think template,
the math-verify grader (whose worker processes live as long as the environment is open) and the
text rollout engine. No reference policy is known; the MRT-B warm-start does not apply."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from mrt_core.envs.math_text import MathEnv
from mrt_lib.envs.base import register
from mrt_lib.generation.text_rollouts import TextRolloutEngine


@dataclass(frozen=True)
class MathFamily:
    kind: str = "math"
    backtracks: bool = False
    dataset_sections: tuple[str, ...] = ("build_dataset", "env", "template")

    @contextmanager
    def open(self, env_cfg, template_cfg, grader_cfg):
        from mrt_lib.grading import build_grader  # imported here: math-verify only for math problems

        with build_grader(grader_cfg) as grader:
            yield MathEnv(template_cfg.spec(), grader)

    def engine(self, backend, env, temperature: float, env_cfg=None) -> TextRolloutEngine:
        return TextRolloutEngine(backend, env, temperature)

    def check_tokenizer(self, tokenizer, env_cfg, template_cfg) -> None:
        """The template's fixed strings encode and decode back unchanged."""
        for name in ("think_close", "termination_text", "continuation_text"):
            text = getattr(template_cfg, name)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if text and tokenizer.decode(ids) != text:
                raise ValueError(f"the model's tokenizer does not write template.{name}={text!r} back unchanged "
                                 f"(got {tokenizer.decode(ids)!r}): fix the template string for this model")

    def dataset_rows(self, env_cfg, build_cfg, template_cfg) -> tuple[dict[str, list[dict]], dict]:
        from mrt_lib.data.text_sources import build_text_rows

        rows, report = build_text_rows(build_cfg, template_cfg.spec(), self.kind)
        return rows, {"source": build_cfg.source.model_dump(), "cleaning": report}

    def reference_policies(self, env_cfg, p_informed: float) -> list:
        return []

    def backtrack_events(self, env, rolls: list, id_text: dict) -> list[list[tuple[int, bool]]]:
        return [[] for _ in rolls]

    def grading_counts(self, env) -> dict[str, int]:
        return {k: v for k, v in env.grader.stats().items() if k not in ("errors_seen", "restarts")}


register(MathFamily())

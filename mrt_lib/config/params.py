"""The whole params file, ``Params``: its sections and the rules that tie sections together
(each error names what to change)."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from mrt_lib.config.data_sources import BuildDatasetConfig
from mrt_lib.config.rl import RlConfig
from mrt_lib.config.sections import (
    BuildStarDataConfig,
    EnvConfig,
    EvaluateConfig,
    GenerationConfig,
    GraderConfig,
    MetaProverConfig,
    PolicyConfig,
    ResourcesConfig,
    RetrainConfig,
    RuntimeConfig,
    Section,
    SftWarmstartConfig,
    SynthesizeBacktracksConfig,
    TemplateConfig,
    TrainBaseConfig,
)


class Params(Section):
    """The whole ``params.yaml``: one section per stage plus shared ones."""

    env: EnvConfig = EnvConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    generation: GenerationConfig = GenerationConfig()
    build_dataset: BuildDatasetConfig = BuildDatasetConfig()
    template: TemplateConfig = TemplateConfig()
    grader: GraderConfig = GraderConfig()
    policy: PolicyConfig = PolicyConfig()
    meta_prover: MetaProverConfig = MetaProverConfig()
    train_base: TrainBaseConfig = TrainBaseConfig()
    synthesize_backtracks: SynthesizeBacktracksConfig = SynthesizeBacktracksConfig()
    sft_warmstart: SftWarmstartConfig = SftWarmstartConfig()
    build_star_data: BuildStarDataConfig = BuildStarDataConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    rl: RlConfig = RlConfig()
    retrain: RetrainConfig = RetrainConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @model_validator(mode="after")
    def _models_exist(self) -> "Params":
        known = {"base", "warmstart", *self.rl.arms, *self.rl.matched_names}
        unknown = [m for m in self.evaluate.models if m not in known]
        if unknown:
            raise ValueError(f"evaluate.models {unknown} are not produced by this pipeline: use base, warmstart or "
                             f"an arm of rl.arms ({', '.join(self.rl.arms)}) or a matched run "
                             f"({', '.join(self.rl.matched_names) or 'none'})")
        return self

    @model_validator(mode="after")
    def _retrain_candidate_exists(self) -> "Params":
        arm, seed = self.retrain.arm, self.retrain.seed
        if arm is not None and arm not in self.rl.arms:
            raise ValueError(f"retrain.arm={arm!r} is not an arm of rl.arms ({', '.join(self.rl.arms)})")
        if seed is not None and seed not in self.rl.seeds:
            raise ValueError(f"retrain.seed={seed} is not a seed of rl.seeds {self.rl.seeds}")
        return self

    def candidate_policy(self) -> tuple[str, int, int]:
        """The arm, seed and round whose model scheduled retraining registers (``retrain``)."""
        arm = self.retrain.arm or ("mrt_dense" if "mrt_dense" in self.rl.arms else self.rl.arms[-1])
        seed = self.retrain.seed if self.retrain.seed is not None else self.rl.seeds[0]
        return arm, seed, self.rl.rounds[-1].n

    @model_validator(mode="after")
    def _variant_matches_env(self) -> "Params":
        variant, echo = self.synthesize_backtracks.variant, self.env.backtrack_echo
        if variant == "backtrack_shared_prefix" and not echo or variant == "backtrack_no_repeat" and echo:
            raise ValueError(
                f"synthesize_backtracks.variant={variant!r} needs env.backtrack_echo={not echo} "
                "(the environment re-writes the shared prefix only when echoing)"
            )
        return self

    @model_validator(mode="after")
    def _source_matches_env(self) -> "Params":
        embedded = self.build_dataset.source.kind == "embedded"
        if embedded != (self.env.kind == "code_search"):
            raise ValueError(
                f"build_dataset.source.kind={self.build_dataset.source.kind!r} does not fit "
                f"env.kind={self.env.kind!r}: the embedded source makes code_search problems; hf and files "
                "sources hold text problems (env.kind: math)"
            )
        if self.env.kind == "math" and self.policy.init != "pretrained":
            raise ValueError("env.kind=math needs policy.init=pretrained and policy.model: train_base trains "
                             "code-search policies only")
        return self

    @model_validator(mode="before")
    @classmethod
    def _text_problems_start_from_base(cls, raw: Any) -> Any:
        """With env.kind math, settings left unset default to what text problems need: the base
        model where the warm-start would be named (it is built for the code-search environment
        only), and the sampled meta-prover (the answer set is not finite)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("env"), dict) or raw["env"].get("kind") != "math":
            return raw
        raw = dict(raw)
        for section, key, value in (("rl", "start", "base"), ("build_star_data", "model", "base"),
                                    ("evaluate", "models", ["base"]), ("meta_prover", "estimator", "sampled")):
            part = dict(raw.get(section) or {})
            part.setdefault(key, value)
            raw[section] = part
        return raw

    @model_validator(mode="after")
    def _no_warmstart_for_text_problems(self) -> "Params":
        if self.env.kind == "code_search":
            return self
        named = {"rl.start": self.rl.start, "build_star_data.model": self.build_star_data.model}
        uses = [name for name, value in named.items() if value == "warmstart"]
        uses += ["evaluate.models"] if "warmstart" in self.evaluate.models else []
        if uses:
            raise ValueError(f"{', '.join(uses)} name the warm-start model, which is built for the code-search "
                             "environment only (MRT-B backtracking traces): use base with env.kind math")
        return self

    @model_validator(mode="after")
    def _exact_needs_a_finite_answer_set(self) -> "Params":
        if self.env.kind == "math" and self.meta_prover.estimator == "exact":
            raise ValueError("meta_prover.estimator=exact needs a finite answer set (env.kind code_search): use "
                             "sampled for math problems")
        return self

    @model_validator(mode="after")
    def _math_context_fits(self) -> "Params":
        if self.env.kind != "math":
            return self
        longest = max(self.evaluate.budgets + self.evaluate.extrapolation_budgets)
        need = longest + self.template.max_answer_tokens
        if need > self.policy.max_context:
            raise ValueError(f"evaluate budget {longest} + template.max_answer_tokens="
                             f"{self.template.max_answer_tokens} exceed policy.max_context={self.policy.max_context} "
                             "(before counting the prompt): lower the budgets or raise max_context")
        return self

    @model_validator(mode="after")
    def _context_fits(self) -> "Params":
        if self.env.kind != "code_search":
            return self
        # A step is one generated token plus at most len(obs)+len(attempt_end) env tokens.
        env = self.env
        per_step = 1 + max(len(env.obs_higher), len(env.obs_lower), len(env.obs_invalid)) + max(
            len(env.obs_attempt_end), len(env.obs_correct) + len(env.obs_solved)
        )
        fixed = len(env.prompt_template) + 2 + len(env.termination_text) + env.n_digits
        ctx = self.train_base.model.max_seq_len
        longest = {"evaluate budget": max(self.evaluate.budgets + self.evaluate.extrapolation_budgets),
                   "rl.train_budget": self.rl.train_budget, "train_base.max_steps": self.train_base.max_steps}
        for name, steps in longest.items():
            need = fixed + per_step * steps
            if need > ctx:
                raise ValueError(f"{name} {steps} needs up to {need} tokens, more than train_base.model.max_seq_len="
                                 f"{ctx}: raise max_seq_len or lower the budget")
        return self

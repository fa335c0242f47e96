"""Typed configuration: one pydantic model per ``params.yaml`` section.

A bad file fails before any stage writes anything, with exit status 2 and one line per
problem naming the key, the bad value and what is allowed (``load_params_or_exit``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mrt_core.envs.code_search import CodeSearchSpec


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvConfig(Section):
    """The reasoning environment and every string the model sees in it."""

    kind: Literal["code_search"] = Field("code_search", description="environment family")
    symbols: str = Field("01234567", min_length=2, description="one character per digit value")
    n_digits: int = Field(3, ge=1, le=8, description="digits in the hidden code (steps per attempt)")
    prompt_template: str = Field("Q{n_digits}:", description="prompt; may use {n_digits}")
    obs_higher: str = Field(">", min_length=1, description="feedback: hidden digit is higher")
    obs_lower: str = Field("<", min_length=1, description="feedback: hidden digit is lower")
    obs_correct: str = Field("=", min_length=1, description="feedback: digit is right")
    obs_attempt_end: str = Field("\n", min_length=1, description="appended when an attempt fails")
    obs_solved: str = Field("!", min_length=1, description="appended when the code is found")
    obs_invalid: str = Field("?", min_length=1, description="feedback to a malformed step")
    termination_text: str = Field("A:", min_length=1, description="forces the answer (meta-prover)")
    continuation_text: str = Field("", description="budget forcing: appended when a stop is overridden")
    backtrack_text: str = Field("^", min_length=1, max_length=1,
                                description="backtrack marker; followed by symbols[j] = back to step j")
    obs_backtrack: str = Field("\n", min_length=1, description="feedback to a valid backtrack")
    backtrack_echo: bool = Field(True, description="the environment re-writes the kept digits after a backtrack")

    @field_validator("symbols")
    @classmethod
    def _distinct(cls, v: str) -> str:
        if len(set(v)) != len(v):
            raise ValueError(f"symbols must be distinct characters, got {v!r}")
        return v

    @model_validator(mode="after")
    def _strings_do_not_collide(self) -> "EnvConfig":
        for name in ("obs_higher", "obs_lower", "obs_correct", "obs_attempt_end", "obs_solved", "obs_invalid"):
            if set(getattr(self, name)) & set(self.symbols):
                raise ValueError(f"{name}={getattr(self, name)!r} shares characters with symbols")
        if self.termination_text[0] in self.symbols:
            raise ValueError("termination_text must not start with a symbol (it must differ from a guess)")
        if self.backtrack_text in self.symbols or self.backtrack_text == self.termination_text[0]:
            raise ValueError(f"backtrack_text={self.backtrack_text!r} must differ from symbols and the "
                             "termination text")
        return self

    def spec(self) -> CodeSearchSpec:
        return CodeSearchSpec(**self.model_dump(exclude={"kind"}))


class RuntimeConfig(Section):
    """Process-wide settings applied by every stage entry point."""

    torch_threads: int = Field(2, ge=1, description="fixed torch thread count (determinism)")
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking store")
    experiment: str = Field("mrt", min_length=1, description="MLflow experiment name")


class GenerationConfig(Section):
    """Which generation backend every stage uses (``hf`` on CPU/GPU, ``vllm`` on GPU only)."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf (transformers) or vllm (needs the gpu extra)")
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    vllm_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


class BuildDatasetConfig(Section):
    seed: int = Field(0, description="shuffles the code space before splitting")
    val_fraction: float = Field(0.125, gt=0, lt=1)
    test_fraction: float = Field(0.125, gt=0, lt=1)

    @model_validator(mode="after")
    def _train_left(self) -> "BuildDatasetConfig":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave training problems")
        return self


class ModelConfig(Section):
    """A small Llama-architecture causal LM trained from scratch."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(3, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    max_seq_len: int = Field(192, ge=16, description="context length (positions)")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        return self


class TrainBaseConfig(Section):
    """Base policy: trained from scratch on traces of a deliberately wasteful search policy."""

    seed: int = 0
    p_informed: float = Field(0.3, ge=0, le=1, description="share of guesses inside the known interval")
    p_give_up: float = Field(0.02, ge=0, le=1, description="stop after a failed attempt")
    p_cut: float = Field(0.15, ge=0, le=1, description="forced answer at a step boundary")
    max_steps: int = Field(40, ge=1, description="longest base trace, in steps")
    model: ModelConfig = ModelConfig()
    steps: int = Field(800, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    eval_every: int = Field(100, ge=1, description="validation loss period (steps)")
    checkpoint_every: int = Field(100, ge=1, description="resume checkpoint period (steps)")
    n_val_traces: int = Field(256, ge=1)


class EvaluateConfig(Section):
    seed: int = 0
    models: list[Literal["base", "warmstart"]] = Field(["base", "warmstart"], min_length=1,
                                                       description="models to evaluate")
    budgets: list[int] = Field([6, 12, 18, 24, 36], min_length=1, description="generated-token budgets")
    n_samples: int = Field(4, ge=1, description="rollouts per test problem and budget")
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(256, ge=1)
    budget_forcing: bool = Field(False, description="override stops before the budget (continuation_text)")
    n_bootstrap: int = Field(1000, ge=10, description="bootstrap resamples over problems")
    reference_samples: int = Field(16, ge=1, description="simulations per problem for reference policies")
    vote_samples: int = Field(8, ge=1, description="forced answers per prefix for the votes-vs-episode regret")
    zero_threshold: float = Field(1e-3, ge=0, description="progress at or below this is zero (exact J)")
    efficiency_levels: list[float] = Field([0.2, 0.4, 0.6], description="accuracy levels for token efficiency")
    extrapolation_budgets: list[int] = Field([], description="budgets past `budgets`, run with budget forcing")

    @model_validator(mode="after")
    def _extrapolation_past_budgets(self) -> "EvaluateConfig":
        x = self.extrapolation_budgets
        if x and (sorted(set(x)) != x or x[0] <= self.budgets[-1]):
            raise ValueError(f"extrapolation_budgets {x} must be increasing and above the largest budget "
                             f"{self.budgets[-1]}")
        return self

    @field_validator("budgets")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v) or sorted(set(v)) != v:
            raise ValueError(f"budgets must be positive and strictly increasing, got {v}")
        return v


class SynthesizeBacktracksConfig(Section):
    """MRT-B warm-start data: failed first attempts, the best step to return to, a new attempt."""

    seed: int = 0
    variant: Literal["restart", "backtrack_shared_prefix", "backtrack_no_repeat"] = Field(
        "backtrack_shared_prefix", description="restart | backtrack_shared_prefix | backtrack_no_repeat")
    n_problems: int = Field(384, ge=1, description="training problems to try (first ones of the split)")
    estimator: Literal["exact", "sampled"] = Field(
        "exact", description="success per step prefix: exact (teacher-forced) or sampled (K resamples)")
    n_resamples: int = Field(16, ge=1, description="K: resamples per step prefix (sampled estimator)")
    search_budget: int = Field(36, ge=1, description="generated tokens the base search may use to fail")
    searches_per_problem: int = Field(4, ge=1, description="independent base searches per problem")
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(256, ge=1)
    max_malformed_share: float = Field(0.2, ge=0, le=1, description="fail the stage above this share")


class SftWarmstartConfig(Section):
    """Warm-start SFT on the backtrack traces (TRL SFTTrainer)."""

    seed: int = 0
    loss_on: Literal["response", "suffix"] = Field(
        "response", description="response: every generated token; suffix: only after the failed first attempt")
    max_steps: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    eval_every: int = Field(25, ge=1, description="logging and validation period (steps)")
    save_every: int = Field(50, ge=1, description="checkpoint period (steps), for resuming")
    min_rows: int = Field(8, ge=1, description="fail when fewer warm-start traces exist")
    replay_share: float = Field(0.5, ge=0, lt=1, description="share of base data-policy traces mixed in")
    replay_backtrack: float = Field(0.0, ge=0, le=1, description="in the replayed traces, probability of a "
                                    "backtrack instead of a restart after an attempt fails past step 0")
    replay_informed_after_backtrack: bool = Field(
        False, description="the attempt after a replayed backtrack guesses inside the feedback's interval")
    init_new_tokens: bool = Field(False, description="start never-generated action tokens at the mean action embedding")


class BuildStarDataConfig(Section):
    """MRT-STaR data: correct traces whose episodes make progress under the meta-prover."""

    seed: int = 0
    model: Literal["base", "warmstart"] = Field("warmstart", description="the policy that samples")
    n_problems: int = Field(384, ge=1)
    n_samples: int = Field(2, ge=1, description="traces per problem")
    budget: int = Field(24, ge=1, description="generated-token budget per trace")
    temperature: float = Field(1.0, gt=0)
    batch_size: int = Field(256, ge=1)
    min_total_progress: float = Field(0.5, description="keep traces whose total progress is at least this")
    max_zero_share: float = Field(0.5, ge=0, le=1, description="... and at most this share of zero-progress episodes")
    zero_threshold: float = Field(1e-3, ge=0, description="progress at or below this is zero (exact estimator)")


class Params(Section):
    """The whole ``params.yaml``: one section per stage plus shared ones."""

    env: EnvConfig = EnvConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    generation: GenerationConfig = GenerationConfig()
    build_dataset: BuildDatasetConfig = BuildDatasetConfig()
    train_base: TrainBaseConfig = TrainBaseConfig()
    synthesize_backtracks: SynthesizeBacktracksConfig = SynthesizeBacktracksConfig()
    sft_warmstart: SftWarmstartConfig = SftWarmstartConfig()
    build_star_data: BuildStarDataConfig = BuildStarDataConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

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
    def _context_fits(self) -> "Params":
        # A step is one generated token plus at most len(obs)+len(attempt_end) env tokens.
        env = self.env
        per_step = 1 + max(len(env.obs_higher), len(env.obs_lower), len(env.obs_invalid)) + max(
            len(env.obs_attempt_end), len(env.obs_correct) + len(env.obs_solved)
        )
        fixed = len(env.prompt_template) + 2 + len(env.termination_text) + env.n_digits
        ctx = self.train_base.model.max_seq_len
        longest = max(self.evaluate.budgets + self.evaluate.extrapolation_budgets)
        need_eval = fixed + per_step * longest
        need_train = fixed + per_step * self.train_base.max_steps
        if need_eval > ctx:
            raise ValueError(
                f"evaluate budget {longest} needs up to {need_eval} tokens, "
                f"more than train_base.model.max_seq_len={ctx}: raise max_seq_len or lower the budget"
            )
        if need_train > ctx:
            raise ValueError(
                f"train_base.max_steps={self.train_base.max_steps} needs up to {need_train} tokens, "
                f"more than train_base.model.max_seq_len={ctx}: raise max_seq_len or lower max_steps"
            )
        return self


class ConfigError(ValueError):
    """A params file that cannot be used; the message names every problem."""


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file; raise ``ConfigError`` with readable messages."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from exc


def format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"  {key}{shown}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def stage_params(doc: str, argv: list[str] | None = None) -> Params:
    """The command line of every stage entry point: ``--params FILE`` (default params.yaml),
    validated, exit status 2 on a bad file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file to validate and use")
    return load_params_or_exit(parser.parse_args(argv).params)


def load_params_or_exit(path: str | Path = "params.yaml") -> Params:
    """For entry points: on a bad config print the problems and exit with status 2."""
    try:
        return load_params(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

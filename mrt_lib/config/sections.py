"""One pydantic model per ``params.yaml`` section (``extra="forbid"``, documented fields,
defaults from the paper, checks within a section)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mrt_core.envs.code_search import CodeSearchSpec
from mrt_core.envs.templates import MathTemplate

Split = Literal["train", "val", "test"]


class Section(BaseModel):
    """A params section: unknown keys refused, values frozen, floats finite (a NaN or infinite
    learning rate, threshold or limit is never what was meant), and a YAML ``true`` never
    read as the number 1."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, raw):
        if isinstance(raw, dict):
            for name, value in raw.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and field.annotation in (int, float):
                    raise ValueError(f"{name}: a number is needed here, not the boolean {str(value).lower()}")
        return raw


def _periods_fit(section: str, steps: int, steps_key: str, **periods: int) -> None:
    """Warm-up and every period must fit in the run: one longer than it silently disables what
    it controls (no checkpoint to resume from, no validation, a schedule that never ends its
    warm-up)."""
    for key, value in periods.items():
        if value > steps:
            raise ValueError(f"{section}.{key}={value} is longer than {section}.{steps_key}={steps}: it would "
                             f"never take effect; lower it to at most {steps}")


class EnvConfig(Section):
    """The reasoning environment and every string the model sees in it."""

    kind: Literal["code_search", "math"] = Field(
        "code_search", description="environment family: code_search (embedded; the fields below) or math (text "
        "problems from build_dataset.source; its strings are in the template section)")
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

    torch_threads: int = Field(2, ge=1, le=256, description="fixed torch thread count (determinism)")
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking store: a SQLite file inside the "
                              "workspace (a shared store is given by the MRT_TRACKING_URI environment variable)")
    experiment: str = Field("mrt", min_length=1, description="MLflow experiment name")

    @field_validator("tracking_uri")
    @classmethod
    def _store_inside_the_workspace(cls, v: str) -> str:
        """A params file may not point the store outside the workspace: a relative SQLite path
        without ``..``. A server or an absolute path is set explicitly by whoever runs the
        pipeline, through ``MRT_TRACKING_URI``."""
        path = v.removeprefix("sqlite:///")
        if not v.startswith("sqlite:///") or path.startswith("/") or ".." in Path(path).parts or not path:
            raise ValueError(f"{v!r} is not a SQLite file inside the workspace (e.g. sqlite:///mlflow.db); set "
                             "MRT_TRACKING_URI to use a tracking server or a store elsewhere")
        return v


class GenerationConfig(Section):
    """Which generation backend every stage uses (``hf`` on CPU/GPU, ``vllm`` on GPU only)."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf (transformers) or vllm (needs the gpu extra)")
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    vllm_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


class TemplateConfig(Section):
    """Every string the model sees around a text problem (env.kind: math): prompt, end of thinking,
    termination text (forces the answer), budget-forcing continuation, episode markers."""

    style: Literal["r1_think", "backtrack"] = Field("r1_think", description="r1_think (<think> block, episodes at "
                                                    "reflection markers) | backtrack (numbered steps)")
    prompt: str = Field(MathTemplate.prompt, description="the prompt; {problem} is replaced by the problem text")
    think_close: str = Field(MathTemplate.think_close, min_length=1, description="the policy ends thinking with it")
    termination_text: str = Field(MathTemplate.termination_text, min_length=1,
                                  description="forces the answer (the meta-prover's question)")
    continuation_text: str = Field(MathTemplate.continuation_text,
                                   description="budget forcing: appended when the policy's early stop is overridden")
    answer_pattern: str | None = Field(None, description="regex for the answer (group 'answer' or 1); null: the "
                                       "last \\boxed{...}")
    reflection_markers: list[str] | None = Field(
        None, description="r1_think: a paragraph opening with one starts an episode; null: the built-in list "
        "(mrt_core.episodes.DEFAULT_REFLECTION_MARKERS)")
    ignore_within: int = Field(2, ge=0, description="r1_think: a marker 1..ignore_within paragraphs after the "
                               "last episode start is ignored (the authors' splitter: 2; 0 keeps every marker)")
    max_episodes: int | None = Field(None, ge=1, description="r1_think: merge the tail past this many episodes")
    group_size: int = Field(1, ge=1, description="r1_think: merge every group_size episodes into one")
    step_text: str = Field(MathTemplate.step_text, description="backtrack: how a step starts; {n} = its number")
    backtrack_text: str = Field(MathTemplate.backtrack_text, description="backtrack: starts an episode; {n} = step")
    max_answer_tokens: int = Field(MathTemplate.max_answer_tokens, ge=1, description="longest forced answer")

    @model_validator(mode="before")
    @classmethod
    def _min_gap_was_renamed(cls, raw):
        if isinstance(raw, dict) and "min_gap" in raw:
            raise ValueError("min_gap: renamed ignore_within, with the authors' meaning (a marker 1..ignore_within "
                             "paragraphs after the last episode start is ignored); min_gap: g is ignore_within: g - 1, "
                             "and the authors' rule is ignore_within: 2")
        return raw

    @model_validator(mode="after")
    def _valid_template(self) -> "TemplateConfig":
        self.spec()  # MathTemplate's checks, with their messages
        return self

    def spec(self) -> MathTemplate:
        fields = self.model_dump()
        if fields["reflection_markers"] is not None:
            fields["reflection_markers"] = tuple(fields["reflection_markers"])
        return MathTemplate(**fields)


class GraderConfig(Section):
    """The math grader (mrt_lib/grading.py, math-verify in worker processes)."""

    timeout_s: float = Field(3.0, gt=0, le=300, description="wall-clock limit per answer; past it the answer is "
                             "wrong (at most 5 minutes: a larger one stalls the stage on one bad answer)")
    workers: int = Field(1, ge=1, description="worker processes (answers graded in parallel from threads)")
    max_answer_chars: int = Field(512, ge=1, description="longer answers are wrong without parsing")
    float_rounding: int = Field(6, ge=0, description="decimals compared for floats")
    memory_limit_mb: int = Field(4096, ge=0, description="address-space cap per worker (0: none)")
    max_timeout_share: float = Field(0.05, ge=0, le=1, description="a stage fails when more of its graded answers "
                                     "than this time out even at twice timeout_s (the limit is too small for the "
                                     "machine: the accuracies would measure its load)")


class RetrainConfig(Section):
    """Scheduled retraining: the registered model and the champion gate (``mrt_lib.champion``)."""

    model_name: str = Field("mrt-policy", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                            description="the registered model in MLflow's registry")
    gate_metric: Literal["regret", "accuracy"] = Field("regret", description="compared per test problem at the "
                                                       "training budget C_0 (regret: lower is better)")
    gate_margin: float = Field(0.01, ge=0, le=1, description="the mean paired gain a challenger needs")
    gate_level: float = Field(0.95, gt=0.5, lt=1, description="its paired interval at this level must exclude 0")
    keep_challengers: int = Field(3, ge=0, description="candidate workspaces kept besides the champion's")
    arm: str | None = Field(None, description="the RL arm whose last round is the candidate policy; null: mrt_dense "
                            "when it is an arm, else the last of rl.arms")
    seed: int | None = Field(None, description="that arm's seed; null: the first of rl.seeds")


# Kubernetes quantities (the GPU pool's template checks the same): CPU may be milli ("500m"),
# memory may not ("32m" is 0.032 bytes, a classic slip for 32Mi)
CPU_QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)m?$"
MEMORY_QUANTITY = r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$"
STAGE_NAMES = ("build_dataset", "train_base", "synthesize_backtracks", "sft_warmstart", "build_star_data", "rl_start",
               "rl_round", "rl_start_matched", "rl_matched", "evaluate", "report")  # dvc.yaml's stages, in pipeline
# order (matrix stages by group); a compute-matched run's stages are jobs of the same kind as the arm's own
SAME_JOB = {"rl_start_matched": "rl_start", "rl_matched": "rl_round"}


class StageResources(Section):
    """What one stage's job asks a cluster for: the stage deployment's job variables."""

    gpus: int = Field(0, ge=0, le=64, description="nvidia.com/gpu limit of the stage's pod (0: a CPU node)")
    cpu: str = Field("2", pattern=CPU_QUANTITY, description="CPU request and limit (Kubernetes quantity)")
    memory: str = Field("8Gi", pattern=MEMORY_QUANTITY, description="memory request and limit (Kubernetes quantity)")
    shm_size: str = Field("1Gi", pattern=MEMORY_QUANTITY, description="size of /dev/shm (a memory emptyDir: NCCL, "
                          "data loader workers)")
    processes: int = Field(1, ge=1, le=64, description="data-parallel processes of train_base, sft_warmstart and "
                           "rl_round: the stage launches itself under accelerate launch (other stages: 1)")


class ResourcesConfig(Section):
    """Per-stage resources for fan-out (``flows/fanout.py``): ``default`` for every stage, a
    stage group's entry (``rl_round`` covers every round) instead where there is one. Read by the
    orchestrator, and for ``processes`` by the training stages (a DVC param of theirs: N processes
    give the one-process update up to float summation order, not byte for byte)."""

    default: StageResources = StageResources()
    stages: dict[str, StageResources] = Field({}, description="stage group -> its resources")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: dict) -> dict:
        unknown = sorted(set(v) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(f"unknown stages {unknown}: use the stage names of dvc.yaml ({', '.join(STAGE_NAMES)})")
        return v

    def for_stage(self, stage: str) -> StageResources:
        """``rl_round@mrt_dense-0-round1`` -> the ``rl_round`` entry, else ``default`` (``rl_matched``
        takes ``rl_round``'s entry unless it has its own)."""
        group = stage.partition("@")[0]
        return self.stages.get(group, self.stages.get(SAME_JOB.get(group, group), self.default))


PROVER_POLICIES = ("round_start", "live", "base", "folder")


class MetaProverConfig(Section):
    """How ``J(mu | c)`` is estimated wherever the pipeline reads it (METHOD.md (2)-(3))."""

    estimator: Literal["exact", "sampled"] = Field(
        "exact", description="exact: teacher-forced probability of the reference (finite answer sets only) | "
        "sampled: K forced answers per prefix, graded")
    samples: int = Field(8, ge=1, description="K: forced answers per prefix (sampled estimator; with "
                         "max_samples, the first draw of adaptive K)")
    max_samples: int | None = Field(None, ge=1, description="sampled: adaptive K up to this many answers per prefix, "
                                    "drawn samples at a time while J's interval is wider than +-half_width; "
                                    "null: always K = samples")
    half_width: float = Field(0.1, gt=0, le=0.5, description="adaptive K: the interval half-width to reach")
    z: float = Field(1.96, gt=0, description="sampled: J's interval is +-z standard errors (Agresti-Coull)")
    shrink: Literal["none", "interval", "snr"] = Field(
        "none", description="RL bonus from sampled progress: none | interval (only progress whose interval "
        "excludes 0) | snr (scaled by snr^2/(1+snr^2)); exact J has no error and is never shrunk")
    policy: str = Field("round_start", description="RL rounds: the model that reads J: round_start (the round's "
                        "start policy, frozen: the paper's offline form) | live (the policy being trained, at "
                        "each step) | base (models/base) | folder (meta_prover.folder: a frozen checkpoint)")
    folder: str = Field("models/base", description="policy: folder: the prover's model folder, relative to the "
                        "workspace (a DVC dependency of every round); it must share the policy's tokenizer")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        if v not in PROVER_POLICIES:
            raise ValueError(f"meta_prover.policy must be one of {', '.join(PROVER_POLICIES)}, got {v!r} "
                             "(a model folder goes in meta_prover.folder with policy: folder)")
        return v

    @field_validator("folder")
    @classmethod
    def _inside_workspace(cls, v: str) -> str:
        if not v or Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"meta_prover.folder must be a folder inside the workspace, relative and without "
                             f"'..', got {v!r}")
        return v

    @model_validator(mode="after")
    def _k_range(self) -> "MetaProverConfig":
        if self.max_samples is not None and self.max_samples < self.samples:
            raise ValueError(f"meta_prover.max_samples={self.max_samples} must be at least samples={self.samples}")
        return self


class PolicyConfig(Section):
    """Where the base policy comes from: trained here from scratch (train_base, the embedded
    default) or a pretrained causal LM (hub id or local folder) for text problems."""

    init: Literal["scratch", "pretrained"] = Field("scratch", description="scratch | pretrained")
    model: str | None = Field(None, description="pretrained: hub id (e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B) "
                              "or a local folder")
    revision: str | None = Field(None, min_length=1, description="pretrained from the hub: the commit hash (or tag) "
                                 "to load, so that a re-run gets the same weights; needed for a hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="pretrained: weights dtype")
    max_context: int = Field(32768, ge=16, description="pretrained: the model's context length in tokens")

    @model_validator(mode="after")
    def _model_named(self) -> "PolicyConfig":
        if self.init == "pretrained" and not self.model:
            raise ValueError("policy.init=pretrained needs policy.model (a hub id or a local folder)")
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

    @model_validator(mode="after")
    def _periods_fit_the_run(self) -> "TrainBaseConfig":
        _periods_fit("train_base", self.steps, "steps", warmup_steps=self.warmup_steps,
                     eval_every=self.eval_every, checkpoint_every=self.checkpoint_every)
        return self


class EvaluateConfig(Section):
    seed: int = 0
    models: list[str] = Field(["base", "warmstart"], min_length=1,
                              description="models to evaluate: base, warmstart, or an RL arm of rl.arms (every seed)")
    rl_rounds: Literal["all", "last"] = Field("all", description="evaluate every RL round, or only each arm's last")
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

    @model_validator(mode="after")
    def _periods_fit_the_run(self) -> "SftWarmstartConfig":
        _periods_fit("sft_warmstart", self.max_steps, "max_steps", warmup_steps=self.warmup_steps,
                     eval_every=self.eval_every, save_every=self.save_every)
        return self


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

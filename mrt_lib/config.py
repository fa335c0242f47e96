"""Typed configuration: one pydantic model per ``params.yaml`` section.

A bad file fails before any stage writes anything, with exit status 2 and one line per
problem naming the key, the bad value and what is allowed (``load_params_or_exit``).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mrt_core.envs.code_search import CodeSearchSpec
from mrt_core.envs.templates import MathTemplate
from mrt_lib.rl.arms import REGISTRY as ARM_REGISTRY
from mrt_lib.rl.arms import get_arm

Split = Literal["train", "val", "test"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    torch_threads: int = Field(2, ge=1, description="fixed torch thread count (determinism)")
    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking store")
    experiment: str = Field("mrt", min_length=1, description="MLflow experiment name")


class GenerationConfig(Section):
    """Which generation backend every stage uses (``hf`` on CPU/GPU, ``vllm`` on GPU only)."""

    backend: Literal["hf", "vllm"] = Field("hf", description="hf (transformers) or vllm (needs the gpu extra)")
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    vllm_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


class ColumnsConfig(Section):
    """Which source columns hold the problem, its answer and its id (hf and files sources)."""

    problem: str = Field("problem", min_length=1, description="problem statement column")
    answer: str | None = Field("answer", description="reference answer column; null: take it from `solution`")
    solution: str | None = Field(None, description="worked solution column: its last \\boxed{} is the answer "
                                 "where the answer column is absent or empty")
    id: str | None = Field(None, description="id column (unique); null: ids from a hash of the problem text")

    @model_validator(mode="after")
    def _some_answer(self) -> "ColumnsConfig":
        if self.answer is None and self.solution is None:
            raise ValueError("set columns.answer or columns.solution: the reference answer must come from somewhere")
        return self


class EmbeddedSource(Section):
    """The embedded code-search problems, generated here (the default)."""

    kind: Literal["embedded"] = "embedded"


class HFSplitConfig(Section):
    """One of our splits from a Hugging Face dataset split; unset fields fall back to the source's."""

    split: str = Field(min_length=1, description="the dataset's split (hub split expressions like train[:500] work)")
    dataset: str | None = Field(None, description="hub id or save_to_disk folder; null: the source's dataset")
    config_name: str | None = None
    revision: str | None = None
    columns: ColumnsConfig | None = Field(None, description="null: the source's columns")


class HFSource(Section):
    """Hugging Face datasets: a hub id (read with ``datasets.load_dataset``) or a folder written
    by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with ``load_from_disk``).
    Each of our splits names a split of ``dataset``, or its own dataset (train on one set,
    test on MATH-500)."""

    kind: Literal["hf"]
    dataset: str | None = Field(None, description="hub id (e.g. HuggingFaceH4/MATH-500) or a save_to_disk folder; "
                                "the default of every split")
    config_name: str | None = Field(None, description="the dataset's configuration (hub only)")
    revision: str | None = Field(None, description="hub revision (commit) to pin; recommended")
    splits: dict[Split, Union[str, HFSplitConfig]] = Field(
        description="our split -> the dataset's split name, or {split, dataset, config_name, revision, columns}; "
        "train and test needed, val optional (else cut from train)")
    columns: ColumnsConfig = ColumnsConfig()

    @field_validator("splits")
    @classmethod
    def _train_and_test(cls, v: dict) -> dict:
        return _need_train_and_test(v)

    @model_validator(mode="after")
    def _every_split_has_a_dataset(self) -> "HFSource":
        orphans = [k for k in ("train", "val", "test") if k in self.splits and not self.dataset
                   and (isinstance(self.splits[k], str) or self.splits[k].dataset is None)]
        if orphans:
            raise ValueError(f"splits {orphans} name no dataset: set build_dataset.source.dataset or theirs")
        return self

    def split_config(self, split: str) -> HFSplitConfig:
        """Our ``split`` with every field resolved."""
        value = self.splits[split]
        spec = HFSplitConfig(split=value) if isinstance(value, str) else value
        return HFSplitConfig(split=spec.split, dataset=spec.dataset or self.dataset,
                             config_name=spec.config_name if spec.dataset else self.config_name,
                             revision=spec.revision if spec.dataset else self.revision,
                             columns=spec.columns or self.columns)

    def columns_for(self, split: str) -> ColumnsConfig:
        return self.split_config(split).columns


class FilesSource(Section):
    """Local files: JSON Lines (.jsonl) or Parquet (.parquet), one or more per split."""

    kind: Literal["files"]
    files: dict[Split, list[str]] = Field(description="our split -> paths (relative to the working directory); "
                                          "train and test needed, val optional (else cut from train)")
    columns: ColumnsConfig = ColumnsConfig()

    def columns_for(self, split: str) -> ColumnsConfig:
        return self.columns

    @field_validator("files")
    @classmethod
    def _known_formats(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        _need_train_and_test(v)
        for split, paths in v.items():
            if not paths:
                raise ValueError(f"files.{split} lists no file")
            bad = [p for p in paths if not p.endswith((".jsonl", ".parquet"))]
            if bad:
                raise ValueError(f"files.{split}: {bad} are neither .jsonl nor .parquet")
        return v


def _need_train_and_test(v: dict) -> dict:
    missing = [s for s in ("train", "test") if s not in v]
    if missing:
        raise ValueError(f"missing split(s) {missing}: train and test are needed (val is cut from train if absent)")
    return v


SourceConfig = Annotated[Union[EmbeddedSource, HFSource, FilesSource], Field(discriminator="kind")]


class ContaminationConfig(Section):
    """Train/eval contamination checks (hf and files sources): exact match after normalisation,
    and word n-gram overlap."""

    ngram: int = Field(8, ge=1, description="n of the word n-grams")
    threshold: float = Field(0.5, gt=0, le=1, description="share of an eval problem's n-grams found in one "
                             "training problem that counts as contamination")
    action: Literal["drop", "report", "fail"] = Field(
        "drop", description="drop: remove the contaminated problem from the earlier split (train before val "
        "before test); report: keep it; fail: stop the stage. Always reported in meta.json")


class BuildDatasetConfig(Section):
    seed: int = Field(0, description="shuffles the problems before splitting")
    val_fraction: float = Field(0.125, gt=0, lt=1, description="embedded; hf/files: share of train cut for val "
                                "when the source has no val split")
    test_fraction: float = Field(0.125, gt=0, lt=1, description="embedded only (hf/files name their test split)")
    source: SourceConfig = Field(EmbeddedSource(), description="embedded | hf | files")
    max_bad_share: float = Field(0.05, ge=0, le=1, description="hf/files: fail when more rows than this share "
                                 "have a missing or unparseable problem or answer")
    contamination: ContaminationConfig = ContaminationConfig()
    max_rows: dict[Split, int] = Field({}, description="hf/files: keep at most this many rows of a split "
                                       "(a seeded sample, after cleaning)")

    @model_validator(mode="after")
    def _train_left(self) -> "BuildDatasetConfig":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave training problems")
        if any(n < 1 for n in self.max_rows.values()):
            raise ValueError(f"max_rows must be positive, got {self.max_rows}")
        return self


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
    min_gap: int = Field(2, ge=0, description="r1_think: paragraphs between kept episode starts")
    max_episodes: int | None = Field(None, ge=1, description="r1_think: merge the tail past this many episodes")
    group_size: int = Field(1, ge=1, description="r1_think: merge every group_size episodes into one")
    step_text: str = Field(MathTemplate.step_text, description="backtrack: how a step starts; {n} = its number")
    backtrack_text: str = Field(MathTemplate.backtrack_text, description="backtrack: starts an episode; {n} = step")
    max_answer_tokens: int = Field(MathTemplate.max_answer_tokens, ge=1, description="longest forced answer")

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

    timeout_s: float = Field(3.0, gt=0, description="wall-clock limit per answer; past it the answer is wrong")
    workers: int = Field(1, ge=1, description="worker processes (answers graded in parallel from threads)")
    max_answer_chars: int = Field(512, ge=1, description="longer answers are wrong without parsing")
    float_rounding: int = Field(6, ge=0, description="decimals compared for floats")
    memory_limit_mb: int = Field(4096, ge=0, description="address-space cap per worker (0: none)")


class MetaProverConfig(Section):
    """How ``J(mu | c)`` is estimated wherever the pipeline reads it (METHOD.md (2)-(3))."""

    estimator: Literal["exact", "sampled"] = Field(
        "exact", description="exact: teacher-forced probability of the reference (finite answer sets only) | "
        "sampled: K forced answers per prefix, graded")
    samples: int = Field(8, ge=1, description="K: forced answers per prefix (sampled estimator)")


class PolicyConfig(Section):
    """Where the base policy comes from: trained here from scratch (train_base, the embedded
    default) or a pretrained causal LM (hub id or local folder) for text problems."""

    init: Literal["scratch", "pretrained"] = Field("scratch", description="scratch | pretrained")
    model: str | None = Field(None, description="pretrained: hub id (e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B) "
                              "or a local folder")
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


class RoundLink(Section):
    """One RL round and the round it starts from (DVC cannot compute a predecessor, so the
    chain is spelled out: ``{n: 1, prev: r0}, {n: 2, prev: r1}, ...``; r0 is ``rl.start``)."""

    n: int = Field(ge=1, description="round number")
    prev: str = Field(description="the round it starts from: r<n-1>")


# settings that may differ between arms (rl.overrides): the optimiser's, and what each arm's
# advantages read (its ``settings``); everything else is matched compute, equal for every arm
TUNABLE = {"lr", "weight_decay", "beta", "clip"} | {s for arm in ARM_REGISTRY.values() for s in arm.settings}


class RlConfig(Section):
    """Iterative on-policy RL rounds: MRT and its baselines through one loop (METHOD.md (8)-(14))."""

    arms: list[str] = Field(["grpo", "mrt_dense"], min_length=1, description="RL arms by name (mrt_lib/rl/arms): "
                            + " | ".join(ARM_REGISTRY))
    seeds: list[int] = Field([0], min_length=1, description="one run of every arm per seed")
    rounds: list[RoundLink] = Field([RoundLink(n=1, prev="r0")], min_length=1,
                                    description="the round chain, one DVC stage per (arm, seed, round)")
    start: Literal["base", "warmstart"] = Field("warmstart", description="round 1 starts here; also the KL reference")
    alpha: float = Field(1.0, ge=0, description="weight of the progress bonus")
    train_budget: int = Field(24, ge=2, description="C_0: generated tokens per trace (prefix + continuation)")
    max_prefix_episodes: int = Field(3, ge=0, description="prefixes keep 0..this many episodes of a rollout of "
                                     "the round's start policy")
    prompts_per_step: int = Field(16, ge=1, description="prefixes per policy update")
    group_size: int = Field(8, ge=2, description="G: samples from each prefix")
    answer_now: int = Field(2, ge=1, description="mrt_mixed: samples of each group that answer at once")
    steps_per_round: int = Field(20, ge=1, description="policy updates per round")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    beta: float = Field(0.0, ge=0, description="KL(pi || reference) coefficient in the loss (always measured)")
    clip: float = Field(0.2, gt=0, description="PPO ratio clip")
    ppo_epochs: int = Field(1, ge=1, description="passes over each step's rollouts (1 = on-policy)")
    max_grad_norm: float = Field(1.0, gt=0)
    temperature: float = Field(1.0, gt=0)
    backend: Literal["hf", "vllm"] = Field("hf", description="generates the rollouts: hf (the training model "
                                           "itself) | vllm (its own copy, synced after every update; GPU)")
    micro_batch: int = Field(256, ge=1, description="sequences per forward/backward (gradient accumulation)")
    batch_size: int = Field(256, ge=1, description="rollouts generated together")
    save_every: int = Field(5, ge=1, description="steps between resume checkpoints")
    keep: Literal["last", "last_and_best"] = Field(
        "last_and_best", description="checkpoints a round keeps: its last policy, and the snapshot (every "
        "save_every steps) that validated best when that is not the last")
    val_problems: int = Field(64, ge=1, description="validation problems per round (val split)")
    val_samples: int = Field(2, ge=1)
    sample_rows: int = Field(32, ge=0, description="rollouts per round logged to MLflow as a table")
    star_min_total_progress: float = Field(0.5, description="mrt_star: keep correct traces with this much progress")
    star_max_zero_share: float = Field(0.5, ge=0, le=1, description="... and at most this share of zero episodes")
    zero_threshold: float = Field(1e-3, ge=0, description="progress at or below this is zero (exact J)")
    length_penalty: float = Field(0.1, ge=0, description="length_penalty: lambda, the reward a trace that "
                                  "spends the whole training budget gives up")
    overrides: dict[str, dict[str, float]] = Field(
        {}, description=f"per-arm settings (the result of tuning each arm): any of {', '.join(sorted(TUNABLE))}")

    @field_validator("arms")
    @classmethod
    def _registered_arms(cls, v: list[str]) -> list[str]:
        for name in v:
            get_arm(name)  # the error names the registered arms
        return v

    @model_validator(mode="after")
    def _overrides_are_tunable(self) -> "RlConfig":
        for arm, values in self.overrides.items():
            get_arm(arm)
            bad = sorted(set(values) - TUNABLE)
            if bad:
                raise ValueError(f"rl.overrides.{arm}: {bad} cannot differ between arms (matched compute); "
                                 f"tunable per arm: {', '.join(sorted(TUNABLE))}")
            self.for_arm(arm)  # the merged settings must validate too
        return self

    def for_arm(self, arm: str) -> "RlConfig":
        """The settings ``arm`` trains with: these, with its ``overrides`` applied (validated)."""
        values = self.overrides.get(arm, {})
        if not values:
            return self
        merged = self.model_dump() | {k: (int(v) if k == "answer_now" else v) for k, v in values.items()}
        return RlConfig.model_validate(merged | {"overrides": {}})

    @model_validator(mode="after")
    def _chain(self) -> "RlConfig":
        expected = [{"n": i + 1, "prev": f"r{i}"} for i in range(len(self.rounds))]
        if [r.model_dump() for r in self.rounds] != expected:
            shown = ", ".join(f"{{n: {e['n']}, prev: {e['prev']}}}" for e in expected)
            raise ValueError(f"rl.rounds must be the chain [{shown}] (each round starts from the one before)")
        if self.answer_now >= self.group_size:
            raise ValueError(f"rl.answer_now={self.answer_now} must be below rl.group_size={self.group_size}")
        if len(set(self.arms)) != len(self.arms) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("rl.arms and rl.seeds must not repeat")
        return self


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

    @model_validator(mode="after")
    def _models_exist(self) -> "Params":
        known = {"base", "warmstart", *self.rl.arms}
        unknown = [m for m in self.evaluate.models if m not in known]
        if unknown:
            raise ValueError(f"evaluate.models {unknown} are not produced by this pipeline: use base, warmstart or "
                             f"an arm of rl.arms ({', '.join(self.rl.arms)})")
        return self

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


class ConfigError(ValueError):
    """A params file that cannot be used; the message names every problem."""


INHERIT = "inherit"


def read_params_file(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a params file. A profile may start with ``inherit: <params file>``
    (relative to itself): that file is read first and the profile's sections are merged over it
    (mappings key by key, anything else replaced), so a profile says only what it changes."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file (run from the repository root or pass --params)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: inherits from itself ({' -> '.join(str(p) for p in seen)})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop(INHERIT, None)
    if parent is None:
        return raw
    return _merge(read_params_file(path.parent / parent, (*seen, path.resolve())), raw)


def _merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``, mappings key by key; a mapping whose ``kind`` changes (a data source,
    say) replaces the inherited one whole, since the other kind's keys do not apply to it."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        mergeable = isinstance(value, dict) and isinstance(old, dict) and value.get("kind", old.get("kind")) == \
            old.get("kind")
        out[key] = _merge(old, value) if mergeable else value
    return out


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file (following ``inherit``); raise ``ConfigError`` with
    readable messages."""
    path = Path(path)
    raw = read_params_file(path)
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
    """The keys of the section at ``loc``; a tagged union (``source``) is followed through the
    tag pydantic puts in the location (``build_dataset.source.hf.<key>``)."""
    model: type[BaseModel] = Params
    parts = list(loc)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        members = _model_members(field.annotation) if field is not None else []
        if len(members) > 1 and parts:
            tag = str(parts.pop(0))
            members = [m for m in members if m.model_fields.get("kind") and tag in typing.get_args(
                m.model_fields["kind"].annotation)]
        if len(members) != 1:
            return []
        model = members[0]
    return sorted(model.model_fields)


def _model_members(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation names (itself, or the members of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


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



class StageConfig:
    """The sections of params one stage reads, and only those: the stage's ``SECTIONS``, which
    are the sections of its ``params`` in ``dvc.yaml`` (``tests/test_stage_sections.py``), so a
    stage cannot read a setting DVC does not track. Reading any other section fails naming it."""

    def __init__(self, source: "Params | StageConfig", names: tuple[str, ...]):
        self._names = tuple(names)
        self._sections = {name: getattr(source, name) for name in names}

    def __getattr__(self, name: str):
        sections = self.__dict__.get("_sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"this stage reads only the params sections {self.__dict__.get('_names')}, not "
                             f"{name!r}: add it to the stage's SECTIONS and to its params in dvc.yaml")

    def model_dump_json(self) -> str:
        """The stage's sections as canonical JSON (its config hash)."""
        return json.dumps({n: s.model_dump(mode="json") for n, s in self._sections.items()}, sort_keys=True)


def for_stage(params: "Params | StageConfig", names: tuple[str, ...]) -> StageConfig:
    """``params`` narrowed to a stage's sections (the error names a section it lacks)."""
    return StageConfig(params, names)

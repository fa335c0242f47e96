"""The ``rl`` section: the round chain, the arms and the settings that may differ between them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from mrt_lib.config.sections import Section
from mrt_lib.rl.arms import REGISTRY as ARM_REGISTRY
from mrt_lib.rl.arms import get_arm


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
    log_probe_share: float = Field(0.25, ge=0, le=1, description="share of the rollouts the meta-prover still "
                                   "reads, for the logged progress metrics only, in arms whose advantages do not "
                                   "read J there (grpo, length_penalty, mrt_mixed; the prefix pool of every arm but "
                                   "mrt_prefix); 1: all, 0: none")
    star_min_total_progress: float = Field(0.5, description="mrt_star: keep correct traces with this much progress")
    star_max_zero_share: float = Field(0.5, ge=0, le=1, description="... and at most this share of zero episodes")
    zero_threshold: float = Field(1e-3, ge=0, description="progress at or below this is zero (exact J)")
    length_penalty: float = Field(0.1, ge=0, description="length_penalty: lambda, the reward a trace that "
                                  "spends the whole training budget gives up")
    match_compute: Literal["structure", "tokens", "flops"] = Field(
        "structure", description="structure: every arm the same prefixes, groups and updates | tokens | flops: "
        "besides, each of rl.matched_arms runs again as <arm>_<unit>, updating on fresh prompts until its "
        "compute (mrt_core.compute) reaches rl.match_target's, round by round")
    matched_arms: list[str] = Field([], description="the baselines that get a compute-matched run (rl_matched stages)")
    match_target: str = Field("mrt_dense", description="the arm whose compute the matched runs reach")
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
            try:  # the merged settings must validate too, named as rl.overrides.<arm> (not rl.<key>)
                self.for_arm(arm)
            except ValidationError as exc:
                problems = "; ".join((f"{'.'.join(map(str, e['loc']))}={e['input']!r}: " if e['loc'] else "")
                                     + e['msg'].removeprefix('Value error, ') for e in exc.errors())
                raise ValueError(f"rl.overrides.{arm}: {problems}") from None
        return self

    @model_validator(mode="after")
    def _matching(self) -> "RlConfig":
        if not self.matched_arms:
            return self
        if self.match_compute == "structure":
            raise ValueError(f"rl.matched_arms {self.matched_arms} need rl.match_compute: tokens or flops "
                             "(at matched structure an arm is its own run)")
        if self.match_target not in self.arms:
            raise ValueError(f"rl.match_target {self.match_target!r} must be one of rl.arms ({', '.join(self.arms)})")
        bad = [a for a in self.matched_arms if a not in self.arms or a == self.match_target]
        if bad or len(set(self.matched_arms)) != len(self.matched_arms):
            raise ValueError(f"rl.matched_arms {self.matched_arms}: each must be one of rl.arms, once, and not the "
                             f"target {self.match_target!r}")
        return self

    def matched_name(self, arm: str) -> str:
        """The output name of ``arm``'s compute-matched run: ``rl/<arm>_<unit>/...``."""
        return f"{arm}_{self.match_compute}"

    @property
    def matched_names(self) -> list[str]:
        return [self.matched_name(a) for a in self.matched_arms]

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

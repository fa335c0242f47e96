"""The generation interface every stage uses (the backends: ``hf``, ``vllm_backend``; made by ``factory``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from mrt_lib.generation.prefix_tree import ProbeJob


class StepDecoder(Protocol):
    """Incremental decoding of a batch of interactive rollouts (optional backend capability,
    ``backend.open_session(seqs)``): ``logits`` (B, V) predict each row's next token; ``append``
    adds a block of tokens per row (possibly empty) and returns the new logits."""

    logits: torch.Tensor

    def append(self, blocks: Sequence[Sequence[int]]) -> torch.Tensor: ...


class BackendUnavailable(RuntimeError):
    """The configured backend cannot run on this machine (message says how to fix it)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``n`` completions per prompt, each at most ``max_new_tokens`` long,
    ending early at EOS or right after any ``stop`` string (kept in the text)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int = 0
    logprobs: bool = False
    ignore_eos: bool = False  # run to max_new_tokens (benchmarks)


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. ``text == tokenizer.decode(token_ids)``; ``logprobs[i]`` is the
    model's (untempered) log-probability of ``token_ids[i]``; finish_reason: "stop" | "length"."""

    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...] | None
    finish_reason: str


@runtime_checkable
class GenerationBackend(Protocol):
    """What every backend offers; all token ids are the tokenizer's."""

    name: str
    tokenizer: Any

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (token ids)."""

    def next_tokens(self, seqs: Sequence[Sequence[int]], temperature: float,
                    generator: torch.Generator | Sequence[torch.Generator]) -> list[int]:
        """One sampled next token per sequence (the step of an interactive rollout); with a list,
        sequence i draws from ``generator[i]`` alone."""

    def token_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Teacher-forced log-probability of every token after the first: len(seq) - 1 each."""

    def probe_sampled(self, job: ProbeJob, term_ids: list[int], answer_len: int, k: int, temperature: float,
                      generator: torch.Generator) -> torch.Tensor:
        """K answers of ``answer_len`` tokens after each cut + termination: (n_cuts, k, answer_len)."""

    def probe_logprobs(self, job: ProbeJob, term_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
        """Teacher-forced log-probs of ``answer_ids`` after each cut + termination: (n_cuts, len)."""

    def probe_logprobs_batch(self, jobs: list[ProbeJob], term_ids: list[int],
                             answers: list[list[int]]) -> list[torch.Tensor]:
        """``probe_logprobs`` for many rollouts (each with its own answer) in as few passes as the
        backend can: one (n_cuts_i, len(answers[i])) tensor per job."""

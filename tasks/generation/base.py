"""The generation interface every stage uses, and the backend factory."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from tasks.generation.prefix_tree import ProbeJob
from tasks.modeling import check_tokenizer

VLLM_HINT = (
    "the 'vllm' generation backend needs vLLM, which is CUDA-only: on a GPU machine run "
    "`.venv/bin/pip install -e '.[gpu]'`, or set generation.backend: hf in params.yaml"
)


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

    def next_tokens(self, seqs: Sequence[Sequence[int]], temperature: float, generator: torch.Generator) -> list[int]:
        """One sampled next token per sequence (the step of an interactive rollout)."""

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


def require_backend(kind: str) -> None:
    """Raise ``BackendUnavailable`` when backend ``kind`` cannot run on this machine."""
    if kind not in ("hf", "vllm"):
        raise BackendUnavailable(f"unknown generation backend {kind!r}: use 'hf' or 'vllm'")
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable(VLLM_HINT)


def make_backend(kind: str, model_path: str, **options: Any) -> GenerationBackend:
    """The backend named ``kind`` for the model at ``model_path`` (a folder or a hub id).

    Fails at once with ``BackendUnavailable`` (before any output is written) when ``vllm`` is
    asked for on a machine without it."""
    require_backend(kind)
    if kind == "hf":
        from tasks.generation.hf import HFBackend

        return HFBackend.from_pretrained(model_path, **options)
    from tasks.generation.vllm_backend import VLLMBackend

    return VLLMBackend(model_path, **options)


def build_backend_or_exit(stage: str, params, model_path) -> GenerationBackend:
    """``build_backend`` for a stage entry point: a missing backend or model exits with status
    2 and the message, before the stage writes or logs anything."""
    try:
        return build_backend(params, model_path)
    except (BackendUnavailable, FileNotFoundError) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_backend(params, model_path) -> GenerationBackend:
    """The backend ``params.generation`` configures, for ``model_path`` (a pipeline folder or a
    hub id), with its tokenizer checked against the environment. Raises ``BackendUnavailable``
    or ``FileNotFoundError`` before anything is written."""
    require_backend(params.generation.backend)  # a missing vLLM is reported before a missing model
    if isinstance(model_path, Path) and not (model_path / "config.json").exists():
        raise FileNotFoundError(f"{model_path} holds no model: run the stage that writes it first (dvc repro)")
    gen = params.generation
    backend = make_backend(gen.backend, str(model_path), gpu_memory_utilization=gen.vllm_gpu_memory_utilization,
                           dtype=gen.vllm_dtype)
    check_tokenizer(backend.tokenizer, params)
    return backend

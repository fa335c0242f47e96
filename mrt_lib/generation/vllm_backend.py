"""The ``vllm`` backend (GPU; the optional ``gpu`` extra), thin over vLLM's offline API.

Written against vLLM's documented ``LLM`` / ``SamplingParams`` API with automatic prefix
caching on, so the meta-prover's K answers after each prefix reuse that prefix's KV blocks.
vLLM is CUDA-only; the request-building and output-parsing functions below are pure and
unit-tested without it (what has run where: docs/engine.md).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mrt_lib.generation.base import Completion, SamplingParams
from mrt_lib.generation.prefix_tree import ProbeJob


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` matching ``params`` (and the hf backend:
    stop strings are kept in the text, logprobs are of the chosen tokens)."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": params.seed,
        "stop": list(params.stop),
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
        "ignore_eos": params.ignore_eos,
    }
    if params.logprobs:
        kwargs["logprobs"] = 0  # 0 = only the sampled token's log-probability
    return kwargs


def token_prompts(prompts: Sequence[Sequence[int]]) -> list[dict[str, list[int]]]:
    """Prompts as vLLM ``TokensPrompt`` dicts (no re-tokenisation of our token ids)."""
    return [{"prompt_token_ids": list(p)} for p in prompts]


def parse_completion(output: Any) -> Completion:
    """A vLLM ``CompletionOutput`` as our ``Completion``."""
    token_ids = tuple(output.token_ids)
    logprobs = None
    if getattr(output, "logprobs", None):
        logprobs = tuple(step[t].logprob for step, t in zip(output.logprobs, token_ids))
    reason = "stop" if output.finish_reason == "stop" else "length"
    return Completion(token_ids, output.text, logprobs, reason)


def parse_outputs(outputs: Sequence[Any]) -> list[list[Completion]]:
    """vLLM ``RequestOutput``s (one per prompt, in order) -> completions per prompt."""
    return [[parse_completion(c) for c in sorted(req.outputs, key=lambda c: c.index)] for req in outputs]


def probe_prompts(job: ProbeJob, term_ids: list[int]) -> list[list[int]]:
    """One prompt per cut: the prefix and the termination text. With prefix caching the
    rollout's KV blocks are computed once and shared by every cut's prompt."""
    return [list(job.token_ids[:cut]) + list(term_ids) for cut in job.cuts]


def answer_token_matrix(parsed: list[list[Completion]], answer_len: int, pad_id: int) -> torch.Tensor:
    """(n_cuts, k, answer_len) answer tokens, padded with ``pad_id`` when one stopped early."""
    rows = [[list(c.token_ids[:answer_len]) + [pad_id] * (answer_len - len(c.token_ids[:answer_len])) for c in cut]
            for cut in parsed]
    return torch.tensor(rows, dtype=torch.long)


def prompt_answer_logprobs(output: Any, answer_ids: list[int]) -> list[float]:
    """Log-probs of the last ``len(answer_ids)`` prompt tokens from a RequestOutput made with
    ``prompt_logprobs=0`` (vLLM returns, per prompt position, a dict token id -> Logprob)."""
    tail = output.prompt_logprobs[-len(answer_ids):]
    return [step[t].logprob for step, t in zip(tail, answer_ids)]


class VLLMBackend:
    """Generation with vLLM (implements ``GenerationBackend``). GPU only."""

    name = "vllm"

    def __init__(self, model_path: str, gpu_memory_utilization: float = 0.85, dtype: str = "auto", seed: int = 0,
                 **_: Any):
        from vllm import LLM  # imported here: the package is optional

        self.llm = LLM(model=model_path, enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
                       dtype=dtype, seed=seed)
        self.tokenizer = self.llm.get_tokenizer()

    def _generate(self, prompts: Sequence[Sequence[int]], **kwargs: Any):
        from vllm import SamplingParams as VSamplingParams

        return self.llm.generate(token_prompts(prompts), VSamplingParams(**kwargs), use_tqdm=False)

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        return parse_outputs(self._generate(prompts, **sampling_kwargs(params)))

    def next_tokens(self, seqs: Sequence[Sequence[int]], temperature: float,
                    generator: torch.Generator | Sequence[torch.Generator]) -> list[int]:
        gens = generator if isinstance(generator, Sequence) else [generator] * len(seqs)
        # one request seed per sequence, from its own generator (per-sample common random numbers)
        params = [sampling_kwargs(SamplingParams(n=1, temperature=temperature, max_new_tokens=1,
                                                 seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g))))
                  for g in gens]
        outs = parse_outputs(self._generate_each(seqs, params))
        return [o[0].token_ids[0] if o[0].token_ids else self.tokenizer.eos_token_id for o in outs]

    def _generate_each(self, prompts: Sequence[Sequence[int]], kwargs: list[dict]):
        from vllm import SamplingParams as VSamplingParams

        return self.llm.generate(token_prompts(prompts), [VSamplingParams(**k) for k in kwargs], use_tqdm=False)

    def token_logprobs(self, seqs: Sequence[Sequence[int]]) -> list[list[float]]:
        outs = self._generate(seqs, max_tokens=1, prompt_logprobs=0, temperature=0.0)
        return [prompt_answer_logprobs(o, list(s[1:])) for o, s in zip(outs, seqs)]

    def probe_sampled(self, job: ProbeJob, term_ids: list[int], answer_len: int, k: int, temperature: float,
                      generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        params = SamplingParams(n=k, temperature=temperature, max_new_tokens=answer_len, seed=seed)
        parsed = self.sample(probe_prompts(job, term_ids), params)
        return answer_token_matrix(parsed, answer_len, self.tokenizer.pad_token_id or 0)

    def probe_logprobs(self, job: ProbeJob, term_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
        prompts = [p + list(answer_ids) for p in probe_prompts(job, term_ids)]
        outs = self._generate(prompts, max_tokens=1, prompt_logprobs=0, temperature=0.0)
        return torch.tensor([prompt_answer_logprobs(o, answer_ids) for o in outs])

    def sync_weights(self, named_parameters) -> None:
        """Load updated training weights into the engine (RL: generation stays on-policy), then
        drop the prefix cache computed with the old weights. The engine's model is reached the
        way colocated RL trainers reach it; the attribute path is vLLM-version specific."""
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, tensor in named_parameters:
            model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()

    def probe_logprobs_batch(self, jobs: list[ProbeJob], term_ids: list[int],
                             answers: list[list[int]]) -> list[torch.Tensor]:
        prompts = [p + list(a) for job, a in zip(jobs, answers) for p in probe_prompts(job, term_ids)]
        outs = iter(self._generate(prompts, max_tokens=1, prompt_logprobs=0, temperature=0.0))
        return [torch.tensor([prompt_answer_logprobs(next(outs), a) for _ in job.cuts])
                for job, a in zip(jobs, answers)]

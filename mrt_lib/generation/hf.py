"""The ``hf`` backend: transformers models on CPU or CUDA.

``sample`` uses ``model.generate`` (KV cache, n samples per prompt, temperature/top-p, stop
strings); ``next_tokens`` is the single step interactive rollouts need; probes share each
rollout's prefix computation through ``prefix_tree``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from mrt_lib.generation.base import Completion, SamplingParams
from mrt_lib.generation.incremental import StepSession
from mrt_lib.generation.prefix_tree import (
    ProbeJob,
    _draw,
    batched_cut_logprobs,
    shared_prefix_logprobs,
    shared_prefix_sample,
)
from mrt_lib.modeling import load_policy
from mrt_lib.sequences import pad_left, pad_right


def _right_padded(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the index of each row's last real token."""
    ids, _ = pad_right(seqs, pad_id)
    return ids, torch.tensor([len(s) - 1 for s in seqs])


def trim_completion(tokens: list[int], tokenizer, stop: Sequence[str], eos_ids: set[int],
                    logprobs: list[float] | None) -> Completion:
    """Cut generated ``tokens`` at EOS (kept) or right after the first stop string (kept)."""
    end, reason = len(tokens), "length"
    for i, t in enumerate(tokens):
        if t in eos_ids:
            end, reason = i + 1, "stop"
            break
    if stop:
        # the first token whose text completes a stop string: decode a window of the last few
        # tokens only (a stop string spans at most as many tokens as it has characters), so
        # long thinking is scanned in linear time
        width = max(map(len, stop)) + 1
        for i in range(1, end + 1):
            text = tokenizer.decode(tokens[max(0, i - width):i])
            if any(s in text for s in stop):
                end, reason = i, "stop"
                break
    kept = tokens[:end]
    lp = tuple(logprobs[:end]) if logprobs is not None else None
    return Completion(tuple(kept), tokenizer.decode(kept), lp, reason)


class StopOnText(StoppingCriteria):
    """Finishes every row whose new text ends with a stop string. Decodes a window of the last
    few tokens per row (transformers' own stop-string criterion cannot handle every tokenizer,
    e.g. the embedded character vocabulary)."""

    def __init__(self, tokenizer, stop: Sequence[str], prompt_len: int):
        self.tok, self.stop, self.prompt_len = tokenizer, tuple(stop), prompt_len
        self.width = max(map(len, stop)) + 1

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:].tolist()
        done = [any(s in self.tok.decode(row[-self.width:]) for s in self.stop) for row in new]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFBackend:
    """Generation with a transformers causal LM (implements ``GenerationBackend``)."""

    name = "hf"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str, **_: object) -> "HFBackend":
        model, tokenizer = load_policy(path)
        return cls(model, tokenizer)

    @torch.no_grad()
    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        tok = self.tokenizer
        expanded = [p for p in prompts for _ in range(params.n)]  # n rows per prompt (greedy too)
        ids, attention = pad_left(expanded, tok.pad_token_id)
        torch.manual_seed(params.seed)  # generate() draws from the global generator
        greedy = params.temperature == 0
        out = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=attention.to(self.device), do_sample=not greedy,
            temperature=None if greedy else params.temperature, top_p=None if greedy else params.top_p,
            top_k=None, max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id,
            eos_token_id=None if params.ignore_eos else tok.eos_token_id, return_dict_in_generate=True,
            output_logits=params.logprobs,
            stopping_criteria=StoppingCriteriaList([StopOnText(tok, params.stop, ids.shape[1])]) if params.stop
            else None,  # rows that wrote a stop string finish; generation ends when all have
        )
        new = out.sequences[:, ids.shape[1]:].cpu()
        logprobs = None
        if params.logprobs:  # untempered model log-probs of the chosen tokens
            logits = torch.stack(out.logits, dim=1).float().cpu()
            logprobs = torch.log_softmax(logits, -1).gather(-1, new[..., None]).squeeze(-1)
        eos = set() if params.ignore_eos else {tok.eos_token_id}
        completions = [
            trim_completion(new[i].tolist(), tok, params.stop, eos, None if logprobs is None else logprobs[i].tolist())
            for i in range(new.shape[0])
        ]
        return [completions[p * params.n:(p + 1) * params.n] for p in range(len(prompts))]

    @torch.no_grad()
    def next_tokens(self, seqs: Sequence[Sequence[int]], temperature: float,
                    generator: torch.Generator | Sequence[torch.Generator]) -> list[int]:
        # right padding is safe: causal attention never looks at the pads after a sequence
        ids, last = _right_padded(seqs, self.tokenizer.pad_token_id)
        logits = self.model(input_ids=ids.to(self.device)).logits[torch.arange(len(seqs)), last]
        return _draw(logits, temperature, generator).tolist()

    @torch.no_grad()
    def token_logprobs(self, seqs: Sequence[Sequence[int]], batch_size: int = 64) -> list[list[float]]:
        out = []
        for b in range(0, len(seqs), batch_size):
            chunk = seqs[b : b + batch_size]
            ids, _ = _right_padded(chunk, self.tokenizer.pad_token_id)
            logp = torch.log_softmax(self.model(input_ids=ids.to(self.device)).logits.float().cpu(), -1)
            picked = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
            out += [picked[row, : len(s) - 1].tolist() for row, s in enumerate(chunk)]
        return out

    def probe_sampled(self, job: ProbeJob, term_ids: list[int], answer_len: int, k: int, temperature: float,
                      generator: torch.Generator) -> torch.Tensor:
        return shared_prefix_sample(self.model, job, term_ids, answer_len, k, temperature, generator)

    def probe_logprobs(self, job: ProbeJob, term_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
        return shared_prefix_logprobs(self.model, job, term_ids, answer_ids)

    def probe_logprobs_batch(self, jobs: list[ProbeJob], term_ids: list[int], answers: list[list[int]],
                             batch_size: int = 64) -> list[torch.Tensor]:
        return batched_cut_logprobs(self.model, jobs, term_ids, answers, self.tokenizer.pad_token_id, batch_size)

    def open_session(self, seqs: Sequence[Sequence[int]]) -> StepSession:
        """Incremental decoding of a batch of interactive rollouts over one KV cache."""
        return StepSession(self.model, seqs, self.tokenizer.pad_token_id)

"""The vllm backend's request building and output parsing, without vLLM installed (fakes
shaped like vLLM's RequestOutput / CompletionOutput / Logprob objects)."""

from types import SimpleNamespace as NS

import pytest
import torch

from mrt_lib.generation import SamplingParams
from mrt_lib.generation.prefix_tree import ProbeJob
from mrt_lib.generation.vllm_backend import (
    answer_token_matrix,
    parse_outputs,
    probe_prompts,
    prompt_answer_logprobs,
    sampling_kwargs,
    token_prompts,
)


def test_sampling_kwargs_mirror_our_params():
    kw = sampling_kwargs(SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=32, stop=("\n",), seed=3,
                                        logprobs=True))
    assert kw == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": 3, "stop": ["\n"],
                  "include_stop_str_in_output": True, "skip_special_tokens": False, "ignore_eos": False,
                  "logprobs": 0}
    assert "logprobs" not in sampling_kwargs(SamplingParams())


def test_token_prompts_and_probe_prompts_share_the_rollout_prefix():
    assert token_prompts([[1, 2], [3]]) == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    job = ProbeJob((10, 11, 12, 13), (2, 4))
    assert probe_prompts(job, [7, 8]) == [[10, 11, 7, 8], [10, 11, 12, 13, 7, 8]]


def completion(index, ids, text, lps, reason):
    logprobs = [{t: NS(logprob=lp)} for t, lp in zip(ids, lps)] if lps else None
    return NS(index=index, token_ids=ids, text=text, logprobs=logprobs, finish_reason=reason)


def test_parse_outputs_orders_by_index_and_reads_chosen_logprobs():
    req = NS(outputs=[completion(1, [5], "b", [-2.0], "length"), completion(0, [4, 9], "a\n", [-0.5, -0.25], "stop")])
    parsed = parse_outputs([req])
    assert [c.text for c in parsed[0]] == ["a\n", "b"]
    assert parsed[0][0].logprobs == (-0.5, -0.25) and parsed[0][0].finish_reason == "stop"
    assert parsed[0][1].finish_reason == "length"
    assert parse_outputs([NS(outputs=[completion(0, [4], "a", None, "stop")])])[0][0].logprobs is None


def test_answer_matrix_pads_early_stops():
    parsed = parse_outputs([NS(outputs=[completion(0, [1, 2, 3], "", None, "length"),
                                        completion(1, [4], "", None, "stop")])])
    assert answer_token_matrix(parsed, 3, pad_id=0).tolist() == [[[1, 2, 3], [4, 0, 0]]]


def test_prompt_logprobs_of_the_answer_tail():
    out = NS(prompt_logprobs=[None, {5: NS(logprob=-1.0)}, {6: NS(logprob=-0.1)}, {7: NS(logprob=-0.2)}])
    assert prompt_answer_logprobs(out, [6, 7]) == pytest.approx([-0.1, -0.2])
    assert torch.tensor([prompt_answer_logprobs(out, [6, 7])]).shape == (1, 2)

"""Shared-prefix probes equal naive per-prefix probes (the equivalence the speed-up rests on)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mrt_lib.generation.prefix_tree import (
    ProbeJob,
    naive_logits,
    naive_logprobs,
    naive_sample,
    shared_prefix_logits,
    shared_prefix_logprobs,
    shared_prefix_sample,
)


def tiny_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=24, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def job(length=80, cuts=(5, 17, 30, 61, 80), seed=1):
    gen = torch.Generator().manual_seed(seed)
    return ProbeJob(tuple(torch.randint(3, 24, (length,), generator=gen).tolist()), cuts)


TERM, ANSWER = [7, 8], [3, 4, 5]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_next_token_logits_match_naive(dtype, tol):
    # tolerance stated: 1e-10 in float64 (summation order only), 1e-4 in float32
    model, j = tiny_model(dtype), job()
    shared, naive = shared_prefix_logits(model, j, TERM + ANSWER), naive_logits(model, j, TERM + ANSWER)
    assert shared.shape == naive.shape == (5, 5, 24)
    assert (shared - naive).abs().max().item() < tol
    assert (shared_prefix_logprobs(model, j, TERM, ANSWER) - naive_logprobs(model, j, TERM, ANSWER)).abs().max() < tol


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_answers_match_naive(seed):
    model, j = tiny_model(seed=seed), job(seed=seed)
    shared = shared_prefix_sample(model, j, TERM, 4, k=3, temperature=0, generator=None)
    naive = naive_sample(model, j, TERM, 4, k=3, temperature=0, generator=None)
    assert shared.shape == (5, 3, 4) and torch.equal(shared, naive)


def test_sampled_answers_follow_the_same_distribution():
    # 400 samples of the first answer token after one cut: both ways give matching frequencies
    model, j = tiny_model(), job(cuts=(40,))
    probs = torch.softmax(naive_logits(model, j, TERM)[0, -1], -1)
    for fn in (shared_prefix_sample, naive_sample):
        draws = fn(model, j, TERM, 1, k=400, temperature=1.0, generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(draws.flatten(), minlength=24).double() / 400
        assert (freq - probs).abs().max() < 0.08


def test_probe_job_validates_cuts():
    with pytest.raises(ValueError, match="strictly increasing"):
        ProbeJob((1, 2, 3), (2, 2))
    with pytest.raises(ValueError, match="must lie in"):
        ProbeJob((1, 2, 3), (4,))

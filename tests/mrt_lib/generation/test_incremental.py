"""Incremental decoding with ragged appends and batched tree probes equal plain forwards."""

import random

import pytest
import torch

from mrt_lib.config import ModelConfig
from mrt_lib.generation.incremental import StepSession
from mrt_lib.generation.prefix_tree import ProbeJob, batched_cut_logprobs, naive_logprobs
from mrt_lib.modeling import build_char_tokenizer, build_model


@pytest.fixture(scope="module")
def model():
    tok = build_char_tokenizer("0123456789<>=!?^A:\nQ")
    m = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_seq_len=128),
                    tok, seed=0).double().eval()
    return m, tok


def plain_last_logits(m, seq):
    with torch.no_grad():
        return m(input_ids=torch.tensor([seq])).logits[0, -1]


def test_ragged_appends_give_the_logits_of_a_plain_forward(model):
    m, tok = model
    rng = random.Random(0)
    vocab = list(range(3, len(tok)))
    seqs = [[rng.choice(vocab) for _ in range(n)] for n in (3, 7, 1, 5)]
    session = StepSession(m, seqs, tok.pad_token_id)
    for step in range(6):
        for row, s in enumerate(seqs):
            assert torch.allclose(session.logits[row].double(), plain_last_logits(m, s), atol=1e-9), (step, row)
        # rows append 0-3 tokens; row 2 appends nothing at odd steps (its logits must stay)
        blocks = [[rng.choice(vocab) for _ in range(rng.randint(1, 3))] for _ in seqs]
        if step % 2:
            blocks[2] = []
        for s, b in zip(seqs, blocks):
            s += b
        session.append(blocks)


def test_batched_tree_probes_equal_naive_per_prefix_forwards(model):
    m, tok = model
    rng = random.Random(1)
    vocab = list(range(3, len(tok)))
    jobs = [ProbeJob(tuple(rng.choice(vocab) for _ in range(n)), cuts) for n, cuts in ((9, (1, 4, 9)), (5, (2, 3)),
                                                                                       (12, (12,)))]
    term, answers = [5, 6], [[7, 8, 9], [10], [11, 12]]
    got = batched_cut_logprobs(m, jobs, term, answers, tok.pad_token_id, batch_size=2)
    for job, ans, g in zip(jobs, answers, got):
        ref = naive_logprobs(m, job, term, ans)
        assert g.shape == (len(job.cuts), len(ans))
        assert torch.allclose(g.double(), ref.double(), atol=1e-9)

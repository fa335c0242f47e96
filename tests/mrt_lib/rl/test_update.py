"""The RL update's pieces on hand-made inputs: log-probs at the sampling temperature, and
gradient accumulation over micro-batches that changes nothing but memory."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mrt_lib.config import RlConfig
from mrt_lib.rl.update import make_accelerator, policy_update
from mrt_lib.sequences import token_logp


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token logits are always [0, ln 3]."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        logits = torch.tensor([0.0, math.log(3.0)]).expand(*input_ids.shape, 2)
        return SimpleNamespace(logits=logits)


def test_token_logp_is_the_log_softmax_at_the_sampling_temperature():
    ids = torch.tensor([[0, 1, 0]])
    at1 = token_logp(FixedLogits(), ids, torch.ones_like(ids))
    # T = 1: p(1) = 3/4, p(0) = 1/4
    assert at1[0].tolist() == pytest.approx([math.log(0.75), math.log(0.25)])
    at2 = token_logp(FixedLogits(), ids, torch.ones_like(ids), temperature=2.0)
    # T = 2: logits [0, ln 3 / 2] -> p(1) = sqrt 3 / (1 + sqrt 3) = 0.633975, p(0) = 0.366025
    assert at2[0].tolist() == pytest.approx([math.log(0.633975), math.log(0.366025)], abs=1e-5)


def updated_weights(micro_batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    model, ref = LlamaForCausalLM(config), LlamaForCausalLM(config)
    ref.load_state_dict(model.state_dict())
    cfg = RlConfig(prompts_per_step=2, group_size=2, answer_now=1, micro_batch=micro_batch, beta=0.1, lr=0.1,
                   max_grad_norm=1e9)
    accelerator = make_accelerator(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    # four rollouts of unequal length (padding and token weights differ between micro-batches)
    seqs = [[1, 2, 3, 4, 5], [1, 2, 6], [1, 7, 8, 9], [1, 3]]
    rolls = [SimpleNamespace(token_ids=s) for s in seqs]
    T = max(map(len, seqs))
    adv = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0], [0.0, -1.0, -1.0, 0, 0], [0.0, 0.5, 0.5, 0.5, 0],
                        [0.0, -2.0, 0, 0, 0]])
    mask = torch.tensor([[0.0] + [1.0] * (len(s) - 1) + [0.0] * (T - len(s)) for s in seqs])
    stats = policy_update(accelerator, model, ref, optimizer, rolls, adv, mask, cfg, pad_id=0)
    assert stats["n_tokens"] == 10
    return {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}


def test_micro_batches_give_the_update_of_one_batch():
    whole, halves, singles = updated_weights(4), updated_weights(2), updated_weights(1)
    torch.manual_seed(0)
    start = LlamaForCausalLM(LlamaConfig(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=16)).state_dict()
    assert any(not torch.equal(whole[k], start[k]) for k in whole)  # the update moved the policy
    for k in whole:
        torch.testing.assert_close(halves[k], whole[k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(singles[k], whole[k], atol=1e-6, rtol=1e-5)

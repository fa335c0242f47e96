"""The policy update of a round on Accelerate: the clipped loss (``mrt_core.loss``, METHOD.md
(14)) over micro-batches with one optimizer step per epoch; DeepSpeed ZeRO through Accelerate's
config (``infra/accelerate``)."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from mrt_core.loss import policy_loss
from mrt_lib.distributed import GROUP_TIMEOUT, all_sum, launched_world, rank_and_size, shard
from mrt_lib.generation.rollouts import Rollout
from mrt_lib.sequences import micro_batches, pad_right, token_logp


def policy_update(accelerator, model, ref_model, optimizer, rolls: list[Rollout], adv: torch.Tensor,
                  mask: torch.Tensor, cfg, pad_id: int) -> dict:
    """``ppo_epochs`` passes of the clipped loss (METHOD.md (14)) over one step's rollouts, in
    micro-batches whose losses are weighted by their share of counted tokens.

    Under N processes ``rolls`` is this process's shard: the weights use the token count of
    the whole step (summed over the processes), and the loss is scaled by N because the
    gradient all-reduce averages over processes, so the update is the one-process update on
    the whole step's batch. The returned statistics are those of the whole step."""
    ids, attn = pad_right([r.token_ids for r in rolls], pad_id)
    adv, mask = adv[:, 1:], mask[:, 1:]  # token t is predicted at t-1
    _, world = rank_and_size()
    total = int(all_sum([int(mask.sum())])[0])
    if total == 0:
        return {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "n_tokens": 0}
    chunks = micro_batches(len(rolls), cfg.micro_batch)
    temp = cfg.temperature  # the policy the rollouts were sampled from
    plain = accelerator.unwrap_model(model)  # no-grad passes skip the DDP wrapper (no collectives)
    with torch.no_grad():
        old = [token_logp(plain, ids[c], attn[c], temp) for c in chunks]
        ref = [token_logp(ref_model, ids[c], attn[c], temp) for c in chunks]
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
    for _ in range(cfg.ppo_epochs):  # one optimizer step per epoch, gradients accumulated over the chunks
        for c, old_c, ref_c in zip(chunks, old, ref):
            with accelerator.accumulate(model):
                logp = token_logp(model, ids[c], attn[c], temp)
                n = int(mask[c].sum())
                if n:
                    loss, stats = policy_loss(logp, old_c, adv[c], mask[c], ref_c, cfg.beta, cfg.clip, cfg.clip)
                    for key, value in (("loss", loss.item()), ("kl", stats.kl), ("clip_fraction", stats.clip_fraction)):
                        sums[key] += value * n / total / cfg.ppo_epochs
                else:  # nothing counted here, but every chunk takes part (DeepSpeed counts micro-steps)
                    loss = logp.sum() * 0.0
                # Accelerate divides by the accumulation steps; the weights n / total already average
                accelerator.backward(loss * (n / total) * accelerator.gradient_accumulation_steps * world)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    loss, kl, clip_fraction = all_sum([sums["loss"], sums["kl"], sums["clip_fraction"]])
    return {"loss": loss, "kl": kl, "clip_fraction": clip_fraction, "n_tokens": total}


def make_accelerator(cfg) -> Accelerator:
    """Accelerate with one optimizer step per update: gradients accumulate over the update's
    micro-batches. Under DeepSpeed (``accelerate launch --config_file infra/accelerate/...``) its
    ``auto`` micro-batch is set here (no dataloader to infer it from). Under N processes each
    accumulates over the micro-batches of its own 1/N of the step's rollouts."""
    _, size = launched_world()
    shard(cfg.prompts_per_step, 0, size)  # refuses a step that does not split evenly, before any work
    steps = len(micro_batches(cfg.prompts_per_step // size * cfg.group_size, cfg.micro_batch))
    accelerator = Accelerator(gradient_accumulation_steps=steps,
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=GROUP_TIMEOUT)])
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch
    return accelerator


def full_named_parameters(accelerator, model):
    """(name, full tensor) of every parameter of the unwrapped model; under DeepSpeed ZeRO-3 each
    partitioned parameter is gathered while it is read."""
    unwrapped = accelerator.unwrap_model(model)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or plugin.zero_stage != 3:
        for name, param in unwrapped.named_parameters():
            yield name, param.data
        return
    import deepspeed

    for name, param in unwrapped.named_parameters():
        with deepspeed.zero.GatheredParameters([param]):
            yield name, param.data

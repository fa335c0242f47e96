"""TRL's ``SFTTrainer`` set up for the warm-start, and its losses forwarded to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTConfig

from mrt_lib.common import kill_point
from mrt_lib.distributed import GROUP_TIMEOUT, shard


class LossLogger(TrainerCallback):
    """Forwards the Trainer's train/validation losses to a ``log(metrics, step)`` function."""

    def __init__(self, log):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.log and logs:
            picked = {k: float(v) for k, v in logs.items() if k in ("loss", "eval_loss", "learning_rate")}
            if picked:
                self.log({("train_loss" if k == "loss" else k): v for k, v in picked.items()}, state.global_step)


class CheckpointKillPoint(TrainerCallback):
    """The test hook ``mrt_lib.common.kill_point("sft_warmstart.checkpoint")`` after each save."""

    def on_save(self, args, state, control, **kwargs):
        kill_point("sft_warmstart.checkpoint")


def sft_args(cfg, max_length: int, output_dir: str, has_val: bool, processes: int = 1) -> SFTConfig:
    """TRL's settings from the ``sft_warmstart`` section: checkpoints every ``save_every`` steps
    into ``output_dir``, loss on the completion mask, CPU unless CUDA is there.

    ``batch_size`` is the global batch: under N processes each takes ``batch_size / N`` rows of
    it (Accelerate hands process i the i-th per-device slice of the seeded order), and the loss is
    averaged over the tokens of all processes, so a step is the one-process step on the same rows."""
    per_device = len(shard(cfg.batch_size, 0, processes))
    return SFTConfig(
        output_dir=output_dir, max_steps=cfg.max_steps, per_device_train_batch_size=per_device,
        average_tokens_across_devices=True, ddp_timeout=int(GROUP_TIMEOUT.total_seconds()),
        per_device_eval_batch_size=per_device, learning_rate=cfg.lr, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, logging_steps=cfg.eval_every,
        eval_strategy="steps" if has_val else "no", eval_steps=cfg.eval_every, save_strategy="steps",
        save_steps=cfg.save_every, save_total_limit=1, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        completion_only_loss=True, max_length=max_length, bf16=False, fp16=False,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=False,
    )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-<step>`` in ``folder`` that the Trainer finished writing: its
    ``trainer_state.json`` (written last) exists and reads as JSON. A folder a kill cut short is
    skipped, so a re-run resumes from the one before instead of failing on it."""
    complete = []
    for d in folder.glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        try:
            json.loads((d / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if step.isdigit():
            complete.append((int(step), d))
    return str(max(complete)[1]) if complete else None

"""Stage ``sft_warmstart``: supervised fine-tuning of the base model on the backtrack traces.

TRL's ``SFTTrainer`` (transformers Trainer on Accelerate) on pre-tokenised rows: ``input_ids``
and a ``completion_mask`` that is True only on GENERATED tokens (the prompt, the environment's
feedback and forced tokens never enter the loss); with ``loss_on: suffix`` the failed first
attempt is masked too, so only the backtrack and the new attempt are learned. Checkpoints go
to ``checkpoints/sft_warmstart/`` every ``save_every`` steps and a re-run resumes from the last
one. The model is saved in Hugging Face format (safetensors) under ``models/warmstart``.

    python -m tasks.sft_warmstart            # what dvc.yaml runs
"""

from __future__ import annotations

import pickle
import sys

import torch
from transformers import AutoModelForCausalLM
from trl import SFTTrainer

from mrt_lib.common import (
    WARMSTART_SCOPE,
    Paths,
    atomic_path,
    entry_environment,
    model_hash,
    read_jsonl,
    require_model,
    setup_process,
    sha256_text,
    write_not_applicable,
)
from mrt_lib.config import Params, for_stage, stage_params
from mrt_lib.data import dataset_hash, load_problems
from mrt_lib.distributed import WorldError, check_world, die_with_launcher, launch_as, launched_world
from mrt_lib.envs import family
from mrt_lib.modeling import check_round_trip, load_policy
from mrt_lib.resume import ResumeState, UnsafeStateError, code_version, fingerprint, unsafe_state
from mrt_lib.tracking import stage_run
from mrt_lib.training.sft import CheckpointKillPoint, LossLogger, last_complete_checkpoint, sft_args
from mrt_lib.training.warmstart_data import WarmstartDataError, build_datasets, init_new_action_tokens, replay_rows

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "sft_warmstart", "train_base", "resources")


def run_sft_warmstart(params: Params, paths: Paths, log=None) -> dict:
    """Fine-tune ``models/base`` on ``data/backtracks`` into ``models/warmstart``."""
    processes = params.resources.for_stage("sft_warmstart").processes
    params = for_stage(params, SECTIONS)
    if not family(params.env.kind).backtracks:
        return write_not_applicable(paths.warmstart_model, "sft_warmstart", WARMSTART_SCOPE)
    _, tokenizer = load_policy(paths.base_model)
    check_round_trip(tokenizer, params.env.spec().alphabet())
    rows = read_jsonl(paths.backtracks / "traces.jsonl")
    share = params.sft_warmstart.replay_share
    n_replay = round(len(rows) * share / (1 - share))
    problems = load_problems(paths, "train")
    replay = replay_rows(params.env, params.train_base, params.sft_warmstart, problems, n_replay) if n_replay else []
    train, val = build_datasets(rows, tokenizer, params.sft_warmstart, replay)
    state = ResumeState(paths.checkpoints / "sft_warmstart", fingerprint(
        sft_warmstart=params.sft_warmstart.model_dump(), train_base=params.train_base.model_dump(),
        env=params.env.model_dump(), base=model_hash(paths.base_model), dataset=dataset_hash(paths),
        traces=sha256_text((paths.backtracks / "traces.jsonl").read_text()), code=code_version("sft_warmstart"),
        processes=processes),
        "sft_warmstart")
    resume = last_complete_checkpoint(state.folder) if state.usable() else None
    ckpt_dir = state.open()  # TRL writes its checkpoints here
    model = AutoModelForCausalLM.from_pretrained(paths.base_model, dtype=torch.float32)
    new_tokens = []
    if params.sft_warmstart.init_new_tokens:  # against the base policy's own traces (no backtracks)
        reference = replay_rows(params.env, params.train_base, params.sft_warmstart, problems, max(n_replay, 256),
                                backtrack=False)
        new_tokens = init_new_action_tokens(model, tokenizer, list(rows) + replay, reference)
    args = sft_args(params.sft_warmstart, params.train_base.model.max_seq_len, str(ckpt_dir), val is not None,
                    processes)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tokenizer,
                         callbacks=[LossLogger(log), CheckpointKillPoint()])
    check_world("sft_warmstart", processes, trainer.accelerator.num_processes)
    try:  # the Trainer loads a checkpoint with weights_only=True: a crafted pickle raises, never runs
        result = trainer.train(resume_from_checkpoint=resume)
    except pickle.UnpicklingError as exc:
        if resume is None:
            raise
        raise unsafe_state(state, exc) from None
    final_eval = trainer.evaluate() if val is not None else {}
    if trainer.accelerator.is_main_process:  # one writer; the others wait for the model to be there
        with atomic_path(paths.warmstart_model) as tmp:
            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        state.clear()
    trainer.accelerator.wait_for_everyone()
    return {"n_train": len(train), "n_val": len(val) if val is not None else 0, "n_replay": len(replay),
            "n_new_tokens": len(new_tokens),
            "train_loss": result.training_loss, "train_seconds": result.metrics["train_runtime"],
            "val_loss": final_eval.get("eval_loss", float("nan")), "resumed": resume is not None}


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    launch_as("sft_warmstart", argv, params.resources.for_stage("sft_warmstart").processes,
              params.sft_warmstart.batch_size)
    die_with_launcher()
    entry_environment()
    setup_process(params.runtime.torch_threads, params.sft_warmstart.seed)
    paths = Paths()
    if family(params.env.kind).backtracks:
        require_model("sft_warmstart", paths.base_model)
    with stage_run("sft_warmstart", params.runtime.tracking_uri, params.runtime.experiment,
                   {"sft_warmstart": params.sft_warmstart.model_dump()}) as mlflow:
        try:
            summary = run_sft_warmstart(params, paths, log=lambda m, step: mlflow.log_metrics(m, step=step))
        except (WarmstartDataError, UnsafeStateError, WorldError) as exc:
            print(f"sft_warmstart: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
    if launched_world()[0] == 0:
        print(f"sft_warmstart: {summary}")


if __name__ == "__main__":
    main()

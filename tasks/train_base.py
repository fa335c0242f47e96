"""Stage ``train_base``: a small Llama-architecture model trained from scratch on base search traces.

The traces come from a deliberately wasteful policy (``base_guess_fn``: re-enters confirmed
digits, but guesses inside the known interval only ``p_informed`` of the time), and end with
the termination text and a Bayes-optimal forced answer, so the model learns both a base policy
that wastes steps and a meta-prover whose forced answer reads the feedback. Only GENERATED
tokens enter the loss (environment and forced tokens never do).

Resumable: every ``checkpoint_every`` steps the full training state is saved under
``checkpoints/train_base/``; a re-run with the same config continues from there.

    python -m tasks.train_base               # what dvc.yaml runs
"""

from __future__ import annotations

import math
import re
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.common import (
    Paths,
    atomic_path,
    entry_environment,
    exit_on,
    is_hub_id,
    kill_point,
    model_hash,
    setup_process,
    write_json_atomic,
)
from mrt_lib.config import Params, StageConfig, for_stage, stage_params
from mrt_lib.data import dataset_hash, load_problems
from mrt_lib.distributed import (
    GROUP_TIMEOUT,
    WorldError,
    all_sum,
    check_world,
    die_with_launcher,
    launch_as,
    launched_world,
)
from mrt_lib.envs import family
from mrt_lib.modeling import build_char_tokenizer, build_model
from mrt_lib.resume import ResumeState, code_version, fingerprint
from mrt_lib.tracking import stage_run
from mrt_lib.training.base_traces import TraceSampler, shard_loss, validation_loss

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "policy", "template", "train_base", "resources")


def import_pretrained(params: StageConfig, paths: Paths) -> dict:
    """``policy.init: pretrained``: the base model is ``policy.model`` (a hub id or a folder),
    saved under ``paths.base_model`` with its tokenizer, so every later stage (and DVC) sees the
    exact weights the pipeline started from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, revision = params.policy.model, params.policy.revision
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=getattr(torch, params.policy.dtype))
    family(params.env.kind).check_tokenizer(tokenizer, params.env, params.template)
    with atomic_path(paths.base_model) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "source.json", {"model": source, "revision": revision, "dtype": params.policy.dtype})
    return {"n_params": sum(p.numel() for p in model.parameters()), "imported_from": source,
            "weights_sha256": model_hash(paths.base_model)}


def run_train_base(params: Params, paths: Paths, log=None) -> dict:
    """Train and save the base model under ``paths.base_model`` (or import the pretrained one,
    ``policy.init: pretrained``); returns summary metrics."""
    processes = params.resources.for_stage("train_base").processes
    params = for_stage(params, SECTIONS)
    if params.policy.init == "pretrained":
        return import_pretrained(params, paths)
    cfg = params.train_base
    env = CodeSearchEnv(params.env.spec())
    tokenizer = build_char_tokenizer(env.spec.alphabet())
    train = TraceSampler(env, load_problems(paths, "train"), cfg, tokenizer)
    val = TraceSampler(env, load_problems(paths, "val"), cfg, tokenizer)
    val_batches = [val.batch(i, cfg.batch_size, "val") for i in range(math.ceil(cfg.n_val_traces / cfg.batch_size))]

    model = build_model(cfg.model, tokenizer, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    state = ResumeState(paths.checkpoints / "train_base", fingerprint(
        train_base=cfg.model_dump(), env=params.env.model_dump(), dataset=dataset_hash(paths),
        code=code_version("train_base"), processes=processes), "train_base")
    start = _resume(state, model, optimizer, scheduler)
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=GROUP_TIMEOUT)])
    check_world("train_base", processes, accelerator.num_processes)
    rank, world = accelerator.process_index, accelerator.num_processes
    plain = model
    model, optimizer = accelerator.prepare(model, optimizer)  # DDP over the processes (identity on one)

    model.train()
    t0, history = time.time(), []
    for step in tqdm(range(start, cfg.steps), desc="train_base", initial=start, total=cfg.steps, mininterval=2,
                     disable=rank != 0):
        loss = shard_loss(model, train.batch(step, cfg.batch_size), rank, world)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            row = {"step": done, "train_loss": all_sum([loss.item()])[0] / world,
                   "val_loss": validation_loss(plain, val_batches)}
            history.append(row)
            if log:
                log({"train_loss": row["train_loss"], "val_loss": row["val_loss"]}, done)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            if rank == 0:  # every process holds the same weights and optimizer state
                _save_checkpoint(state, done, plain, optimizer, scheduler)
            accelerator.wait_for_everyone()
            kill_point("train_base.checkpoint")

    if rank == 0:
        with atomic_path(paths.base_model) as tmp:
            plain.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        state.clear()
    accelerator.wait_for_everyone()
    n_params = sum(p.numel() for p in plain.parameters())
    final_val = history[-1]["val_loss"] if history else validation_loss(plain, val_batches)
    return {"n_params": n_params, "final_val_loss": final_val, "train_seconds": time.time() - t0, "resumed_from": start}


def _save_checkpoint(state: ResumeState, step, model, optimizer, scheduler) -> None:
    """Model, optimizer, scheduler and RNG after ``step`` updates, in the stage's resume state."""
    checkpoint = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(state.open() / "state.pt") as tmp:
        torch.save(checkpoint, tmp)


def _resume(state: ResumeState, model, optimizer, scheduler) -> int:
    """The step to continue from: 0, or that of a resume state with this run's fingerprint."""
    path = state.folder / "state.pt"
    if not state.usable() or not path.exists():
        return 0
    try:  # tensors and plain containers only: a crafted pickle is refused, never run
        checkpoint = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable state: start over, saying why)
        print(f"train_base: refusing the resume state {path} ({type(exc).__name__}: it is not a plain "
              "checkpoint); starting over")
        state.clear()
        return 0
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    print(f"train_base: resuming at step {checkpoint['step']}")
    return checkpoint["step"]


def check_hub_revision(policy) -> None:
    """A hub model is loaded at a named revision (exit 2 without one); a branch or tag, which can
    move, is allowed with a warning."""
    if policy.revision is None:
        print(f"train_base: policy.model={policy.model!r} is not a local folder, so it comes from the model hub: "
              f"set policy.revision to its commit hash (or a tag) so that a re-run loads the same weights",
              file=sys.stderr)
        raise SystemExit(2)
    if not re.fullmatch(r"[0-9a-f]{40}", policy.revision):
        print(f"train_base: warning: policy.revision={policy.revision!r} is not a commit hash; the weights it names "
              f"can change between runs", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    if params.policy.init == "scratch":  # an import is one process's work
        launch_as("train_base", argv, params.resources.for_stage("train_base").processes, params.train_base.batch_size)
    die_with_launcher()
    from_hub = params.policy.init == "pretrained" and is_hub_id(params.policy.model)
    entry_environment(needs_hub=from_hub)
    if from_hub:
        check_hub_revision(params.policy)
    setup_process(params.runtime.torch_threads, params.train_base.seed)
    paths = Paths()
    with stage_run("train_base", params.runtime.tracking_uri, params.runtime.experiment,
                   {"train_base": params.train_base.model_dump(), "env": params.env.model_dump(),
                    "policy": params.policy.model_dump()}) as mlflow:
        with exit_on(WorldError, "train_base", 2):
            summary = run_train_base(params, paths, log=lambda m, step: mlflow.log_metrics(m, step=step))
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
        if params.policy.init == "scratch":  # an imported model is already where it came from
            mlflow.log_artifacts(str(paths.base_model), artifact_path="model")
        else:
            mlflow.set_tag("policy.source", params.policy.model)
    if launched_world()[0] == 0:
        print(f"train_base: {summary}")


if __name__ == "__main__":
    main()

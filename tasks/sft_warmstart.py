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

import random
import sys
import zlib

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from mrt_core.envs.base import Problem, Role, Segment
from mrt_core.envs.code_search import CodeSearchEnv, TraceConfig, base_guess_fn, synthesize_trace
from mrt_lib.common import (
    WARMSTART_SCOPE,
    Paths,
    atomic_path,
    derive_seed,
    model_hash,
    read_jsonl,
    setup_process,
    sha256_text,
    write_not_applicable,
)
from mrt_lib.config import Params, for_stage, stage_params
from mrt_lib.data import dataset_hash, load_problems
from mrt_lib.envs import family
from mrt_lib.modeling import check_round_trip, encode_segments, load_policy
from mrt_lib.resume import ResumeState, code_version, fingerprint
from mrt_lib.tracking import stage_run

# the params sections the stage reads: the sections of its params in dvc.yaml
SECTIONS = ("env", "sft_warmstart", "train_base")


class WarmstartDataError(ValueError):
    """The warm-start data is missing or too small to train on."""


def encode_row(tokenizer, row: dict, loss_on: str) -> tuple[list[int], list[int]]:
    """Token ids and the completion mask (1 = in the loss) of one synthesized trace: generated
    tokens only, and with ``loss_on == "suffix"`` only from ``row["suffix_start"]`` on."""
    segments = [Segment(text, Role(role)) for text, role in row["segments"]]
    ids, mask = encode_segments(tokenizer, segments)
    offsets = tokenizer("".join(s.text for s in segments), add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    start_at = row["suffix_start"] if loss_on == "suffix" else 0
    mask = [m and start >= start_at for m, (start, _) in zip(mask, offsets)]
    return ids, [int(m) for m in mask]


def is_val(problem_id: str, fraction: float) -> bool:
    """A stable split by problem id (the same rows are held out on every run)."""
    return zlib.crc32(problem_id.encode()) % 10_000 < fraction * 10_000


def replay_rows(params: Params, problems: list[Problem], n: int, backtrack: bool = True) -> list[dict]:
    """``n`` traces of the base data policy (what the base model was trained on), mixed into the
    warm-start data so that fine-tuning on backtracks does not erase the rest of the policy.

    With ``sft_warmstart.replay_backtrack`` > 0 (and ``backtrack``) a failure past step 0 is
    followed, with that probability, by a backtrack to the confirmed prefix instead of a restart,
    and with ``replay_informed_after_backtrack`` the attempt after it guesses inside the
    feedback's interval, as the successful attempts of the backtrack traces do: the backtrack is
    then taught in every context the policy meets (after any failure past step 0, after an
    earlier backtrack), not only right after the first one (docs/LOG.md)."""
    env = CodeSearchEnv(params.env.spec())
    cfg = params.train_base
    guess = base_guess_fn(env.spec.n_values, cfg.p_informed)
    trace_cfg = TraceConfig(p_give_up=cfg.p_give_up, p_cut=cfg.p_cut, max_steps=cfg.max_steps,
                            p_backtrack=params.sft_warmstart.replay_backtrack if backtrack else 0.0)
    rng = random.Random(derive_seed(params.sft_warmstart.seed, "replay"))
    after = base_guess_fn(env.spec.n_values, 1.0) if params.sft_warmstart.replay_informed_after_backtrack else None
    rows = []
    for _ in range(n):
        problem = rng.choice(problems)
        segments = synthesize_trace(env, problem, guess, trace_cfg, rng, after)
        rows.append({"problem_id": problem.id, "segments": [[s.text, s.role.value] for s in segments],
                     "suffix_start": 0})
    return rows


def build_datasets(rows: list[dict], tokenizer, params: Params,
                   replay: list[dict] = ()) -> tuple[Dataset, Dataset | None]:
    cfg = params.sft_warmstart
    if len(rows) < cfg.min_rows:
        raise WarmstartDataError(f"{len(rows)} warm-start traces, fewer than sft_warmstart.min_rows={cfg.min_rows}: "
                                 "check data/backtracks/meta.json for the reject counts")
    split = {"train": {"input_ids": [], "completion_mask": []}, "val": {"input_ids": [], "completion_mask": []}}
    for row in list(rows) + list(replay):
        ids, mask = encode_row(tokenizer, row, cfg.loss_on)
        part = split["val" if is_val(row["problem_id"], cfg.val_fraction) else "train"]
        part["input_ids"].append(ids)
        part["completion_mask"].append(mask)
    if not split["train"]["input_ids"]:
        raise WarmstartDataError("every warm-start trace fell in the validation split: "
                                 "lower sft_warmstart.val_fraction")
    val = Dataset.from_dict(split["val"]) if split["val"]["input_ids"] else None
    return Dataset.from_dict(split["train"]), val


def generated_ids(tokenizer, rows: list[dict]) -> set[int]:
    """Token ids that the rows ask the policy to generate (inside the loss)."""
    out = set()
    for row in rows:
        ids, mask = encode_row(tokenizer, row, "response")
        out |= {t for t, m in zip(ids, mask) if m}
    return out


@torch.no_grad()
def init_new_action_tokens(model, tokenizer, rows: list[dict], replay: list[dict]) -> list[int]:
    """Start tokens that the warm-start rows generate but the base never did (the backtrack
    marker) at the mean embedding of the tokens the base does generate (``replay``: traces of
    the base data policy without backtracks).

    Why: a token the base never had to produce was pushed down during pre-training along with
    every other unused token (<unk>, <pad>, feedback symbols); with tied embeddings, raising it
    from there raises all of them, and the fine-tuned policy starts writing junk actions
    (docs/LOG.md). From the mean action embedding it is raised alone."""
    base_ids = generated_ids(tokenizer, replay)
    new = sorted(generated_ids(tokenizer, rows) - base_ids)
    if new and base_ids:
        emb = model.get_input_embeddings().weight
        emb[new] = emb[sorted(base_ids)].mean(0)
    return new


class LossLogger(TrainerCallback):
    """Forwards the Trainer's train/validation losses to a ``log(metrics, step)`` function."""

    def __init__(self, log):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.log and logs:
            picked = {k: float(v) for k, v in logs.items() if k in ("loss", "eval_loss", "learning_rate")}
            if picked:
                self.log({("train_loss" if k == "loss" else k): v for k, v in picked.items()}, state.global_step)


def sft_args(params: Params, output_dir: str, has_val: bool) -> SFTConfig:
    cfg = params.sft_warmstart
    return SFTConfig(
        output_dir=output_dir, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, learning_rate=cfg.lr, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, logging_steps=cfg.eval_every,
        eval_strategy="steps" if has_val else "no", eval_steps=cfg.eval_every, save_strategy="steps",
        save_steps=cfg.save_every, save_total_limit=1, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        completion_only_loss=True, max_length=params.train_base.model.max_seq_len, bf16=False, fp16=False,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=False,
    )


def run_sft_warmstart(params: Params, paths: Paths, log=None) -> dict:
    """Fine-tune ``models/base`` on ``data/backtracks`` into ``models/warmstart``."""
    params = for_stage(params, SECTIONS)
    if not family(params.env.kind).backtracks:
        return write_not_applicable(paths.warmstart_model, "sft_warmstart", WARMSTART_SCOPE)
    _, tokenizer = load_policy(paths.base_model)
    check_round_trip(tokenizer, params.env.spec().alphabet())
    rows = read_jsonl(paths.backtracks / "traces.jsonl")
    share = params.sft_warmstart.replay_share
    n_replay = round(len(rows) * share / (1 - share))
    problems = load_problems(paths, "train")
    replay = replay_rows(params, problems, n_replay) if n_replay else []
    train, val = build_datasets(rows, tokenizer, params, replay)
    state = ResumeState(paths.checkpoints / "sft_warmstart", fingerprint(
        sft_warmstart=params.sft_warmstart.model_dump(), train_base=params.train_base.model_dump(),
        env=params.env.model_dump(), base=model_hash(paths.base_model), dataset=dataset_hash(paths),
        traces=sha256_text((paths.backtracks / "traces.jsonl").read_text()), code=code_version("sft_warmstart")),
        "sft_warmstart")
    resume = get_last_checkpoint(str(state.folder)) if state.usable() else None
    ckpt_dir = state.open()  # TRL writes its checkpoints here
    model = AutoModelForCausalLM.from_pretrained(paths.base_model, dtype=torch.float32)
    new_tokens = []
    if params.sft_warmstart.init_new_tokens:  # against the base policy's own traces (no backtracks)
        reference = replay_rows(params, problems, max(n_replay, 256), backtrack=False)
        new_tokens = init_new_action_tokens(model, tokenizer, list(rows) + replay, reference)
    trainer = SFTTrainer(model=model, args=sft_args(params, str(ckpt_dir), val is not None), train_dataset=train,
                         eval_dataset=val, processing_class=tokenizer, callbacks=[LossLogger(log)])
    result = trainer.train(resume_from_checkpoint=resume)
    final_eval = trainer.evaluate() if val is not None else {}
    with atomic_path(paths.warmstart_model) as tmp:
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    state.clear()
    return {"n_train": len(train), "n_val": len(val) if val is not None else 0, "n_replay": len(replay),
            "n_new_tokens": len(new_tokens),
            "train_loss": result.training_loss,
            "val_loss": final_eval.get("eval_loss", float("nan")), "resumed": resume is not None}


def main(argv: list[str] | None = None) -> None:
    params = stage_params(__doc__, argv)
    setup_process(params.runtime.torch_threads, params.sft_warmstart.seed)
    paths = Paths()
    with stage_run("sft_warmstart", params.runtime.tracking_uri, params.runtime.experiment,
                   {"sft_warmstart": params.sft_warmstart.model_dump()}) as mlflow:
        try:
            summary = run_sft_warmstart(params, paths, log=lambda m, step: mlflow.log_metrics(m, step=step))
        except WarmstartDataError as exc:
            print(f"sft_warmstart: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
    print(f"sft_warmstart: {summary}")


if __name__ == "__main__":
    main()

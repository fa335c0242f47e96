"""The warm-start SFT data: backtrack traces and replayed base-policy traces as token ids with
a completion mask (1 = in the loss: GENERATED tokens only), split by problem id; and the
embedding start of tokens the base never generated."""

from __future__ import annotations

import random
import zlib

import torch
from datasets import Dataset

from mrt_core.envs.base import Problem, Role, Segment
from mrt_core.envs.code_search import CodeSearchEnv, TraceConfig, base_guess_fn, synthesize_trace
from mrt_lib.common import derive_seed
from mrt_lib.modeling import encode_segments


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


def replay_rows(env_cfg, base_cfg, sft_cfg, problems: list[Problem], n: int, backtrack: bool = True) -> list[dict]:
    """``n`` traces of the base data policy (what the base model was trained on), mixed into the
    warm-start data so that fine-tuning on backtracks does not erase the rest of the policy.

    With ``sft_warmstart.replay_backtrack`` > 0 (and ``backtrack``) a failure past step 0 is
    followed, with that probability, by a backtrack to the confirmed prefix instead of a restart,
    and with ``replay_informed_after_backtrack`` the attempt after it guesses inside the
    feedback's interval, as the successful attempts of the backtrack traces do: the backtrack is
    then taught in every context the policy meets (after any failure past step 0, after an
    earlier backtrack), not only right after the first one (docs/LOG.md)."""
    env, cfg = CodeSearchEnv(env_cfg.spec()), base_cfg  # the base data policy: train_base's settings
    guess = base_guess_fn(env.spec.n_values, cfg.p_informed)
    trace_cfg = TraceConfig(p_give_up=cfg.p_give_up, p_cut=cfg.p_cut, max_steps=cfg.max_steps,
                            p_backtrack=sft_cfg.replay_backtrack if backtrack else 0.0)
    rng = random.Random(derive_seed(sft_cfg.seed, "replay"))
    after = base_guess_fn(env.spec.n_values, 1.0) if sft_cfg.replay_informed_after_backtrack else None
    rows = []
    for _ in range(n):
        problem = rng.choice(problems)
        segments = synthesize_trace(env, problem, guess, trace_cfg, rng, after)
        rows.append({"problem_id": problem.id, "segments": [[s.text, s.role.value] for s in segments],
                     "suffix_start": 0})
    return rows


def build_datasets(rows: list[dict], tokenizer, cfg, replay: list[dict] = ()) -> tuple[Dataset, Dataset | None]:
    """Train and validation datasets (``input_ids``, ``completion_mask``) of the warm-start rows
    and the replayed base traces, split by problem id (``cfg``: the ``sft_warmstart`` section)."""
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

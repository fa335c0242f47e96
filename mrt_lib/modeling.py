"""Model backends' shared edges: a locally built tokenizer, a small Llama-architecture model, loading,
and turning role-annotated traces into token ids with a loss mask.

Nothing here touches the network: the tokenizer is built from the environment's alphabet and
the model from a config; ``load_policy`` is the same ``from_pretrained`` call a hub id uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mrt_core.envs.base import Role, Segment
from mrt_lib.sequences import labels_from_mask, pad_right

if TYPE_CHECKING:
    from mrt_lib.config import ModelConfig

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character of ``alphabet``, no merges.

    (A BPE model with an empty merge list is exactly a character vocabulary; ``Fuse`` decodes
    without inserting spaces.)
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def build_model(cfg: "ModelConfig", tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A Llama-architecture model. (Not Qwen2: for ``model_type == "qwen2"`` transformers'
    AutoTokenizer replaces a saved tokenizer with its own Qwen2 class, which drops newlines
    from our character vocabulary; Llama keeps the saved ``tokenizer.json`` as it is.)"""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def load_policy(path: str | Path):
    """Model and tokenizer from a local folder or a hub id (the same call either way)."""
    path = str(path)
    if not Path(path).exists() and "/" not in path:
        raise FileNotFoundError(f"model {path!r} not found: run the stage that trains it first")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")  # as saved (float32 for the embedded model)
    model.eval()
    return model, tokenizer


def check_round_trip(tokenizer, alphabet: str) -> None:
    """Fail loudly if the tokenizer cannot write every character the environment uses
    (a silently dropped newline would change what the model sees)."""
    for ch in alphabet:
        ids = tokenizer(ch, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id or tokenizer.decode(ids) != ch:
            raise ValueError(
                f"tokenizer cannot round-trip {ch!r} (got ids {ids}): the model's tokenizer does not cover "
                "the environment's alphabet; retrain the base model or fix env strings in params.yaml"
            )


def encode_segments(tokenizer, segments: list[Segment]) -> tuple[list[int], list[bool]]:
    """Token ids of the joined trace and the loss mask (True = GENERATED, counts).

    A token belongs to the segment in which its first character lies (character offsets
    from the tokenizer), so this holds for multi-character tokens too.
    """
    text = "".join(s.text for s in segments)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    owner, pos = [], 0
    for s in segments:
        owner += [s.role] * len(s.text)
        pos += len(s.text)
    mask = [owner[start] == Role.GENERATED for start, _ in enc["offset_mapping"]]
    return enc["input_ids"], mask


def collate(batch: list[tuple[list[int], list[bool]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; labels are -100 where the mask is False or on padding."""
    input_ids, attention = pad_right([ids for ids, _ in batch], pad_id)
    mask = pad_right([[int(m) for m in mask] for _, mask in batch], 0)[0].bool()
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels_from_mask(input_ids, mask)}

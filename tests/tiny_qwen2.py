"""A tiny randomly initialised Qwen2-architecture model and a locally trained byte-level BPE
tokenizer, saved with ``save_pretrained`` so that the real-model path loads them with the same
``AutoTokenizer`` / ``AutoModelForCausalLM`` calls a hub id uses, offline.

Why byte-level BPE: transformers 5 loads every ``model_type == "qwen2"`` tokenizer as its own
``Qwen2Tokenizer`` class, which rebuilds the model from ``vocab.json`` + ``merges.txt`` with
Qwen's pre-tokenizer (a split regex, then byte-level) and an NFC normaliser. A character
vocabulary (what the embedded default uses) loses characters there; a byte-level vocabulary
(all 256 byte symbols) covers every string, newlines and any unicode included. The tokenizer
is trained here with the same pre-tokenizer, so the merges fit what Qwen2Tokenizer does.

    path = build_tiny_qwen2(tmp_path / "tiny", texts)   # a folder, like a downloaded model

The tokenizer has ``<|endoftext|>`` (eos, pad), the chat tokens ``<|im_start|>``/``<|im_end|>``
(special) and ``<think>``/``</think>`` (plain added tokens, one id each, kept by decode, as in
R1-distilled models), and a small chat template that opens the think block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

EOS = "<|endoftext|>"
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]  # added (not special) tokens, as in R1-distilled models: decode keeps them
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def train_byte_bpe(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE trained on ``texts`` with Qwen2's pre-tokenizer and normaliser."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return tok


def build_tiny_qwen2(out_dir: Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 512, hidden_size: int = 32,
                     num_layers: int = 2, max_positions: int = 1024) -> Path:
    """Write a tokenizer (trained on ``texts``) and a random Qwen2 model to ``out_dir``."""
    out_dir = Path(out_dir)
    trained = train_byte_bpe(texts, vocab_size)
    vocab = trained.get_vocab()
    merges = _merges(trained)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens([AddedToken(t, special=True) for t in CHAT_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    trained.model.save(str(out_dir))  # vocab.json + merges.txt too, as Qwen repositories ship them

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def _merges(tok: Tokenizer) -> list[tuple[str, str]]:
    """The trained merges, in order (read from the serialised model: the Python API has no getter)."""
    import json

    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]

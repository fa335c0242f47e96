"""Warm-start SFT: masks, resume after a kill, and a saved Hugging Face model."""

import math

import pytest
from transformers import AutoModelForCausalLM

from tasks.modeling import build_char_tokenizer
from tasks.sft_warmstart import WarmstartDataError, build_datasets, encode_row, run_sft_warmstart
from tests.conftest import copy_outputs

ROW = {"problem_id": "code-527", "suffix_start": 10,
       "segments": [["Q3:", "prompt"], ["5", "gen"], ["=", "env"], ["2", "gen"], ["=", "env"], ["3", "gen"],
                    [">\n", "env"], ["^", "gen"], ["2", "gen"], ["\n5=2=", "env"], ["7", "gen"], ["=!", "env"],
                    ["A:", "gen"], ["527", "gen"]]}


def test_masks_response_and_suffix():
    tok = build_char_tokenizer("\n!0123456789:<=>?AQ^")
    ids, mask = encode_row(tok, ROW, "response")
    text = "Q3:5=2=3>\n^2\n5=2=7=!A:527"
    assert len(ids) == len(text)
    # generated: 5 2 3 ^ 2 7 A : 5 2 7
    assert "".join(ch for ch, m in zip(text, mask) if m) == "523^27A:527"
    _, suffix = encode_row(tok, ROW, "suffix")
    assert "".join(ch for ch, m in zip(text, suffix) if m) == "^27A:527"  # the failed attempt is not learned


def test_too_few_rows_is_a_clear_error(smoke_params):
    strict = smoke_params.model_copy(update={"sft_warmstart": smoke_params.sft_warmstart.model_copy(
        update={"min_rows": 5})})
    with pytest.raises(WarmstartDataError, match="min_rows=5"):
        build_datasets([ROW], build_char_tokenizer("\n!0123456789:<=>?AQ^"), strict)


class Killed(RuntimeError):
    pass


def test_trains_resumes_after_a_kill_and_saves(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path, "dataset", "base_model", "backtracks")

    def kill_at_4(metrics, step):  # logs come at steps 2 and 4; the step-2 checkpoint is saved
        if step >= 4:
            raise Killed(step)

    with pytest.raises(Killed):
        run_sft_warmstart(params, paths, log=kill_at_4)
    assert (paths.checkpoints / "sft_warmstart" / "checkpoint-2").exists()
    assert not paths.warmstart_model.exists()
    summary = run_sft_warmstart(params, paths)
    assert summary["resumed"] and math.isfinite(summary["train_loss"])
    assert (paths.warmstart_model / "model.safetensors").exists()
    assert not (paths.checkpoints / "sft_warmstart").exists()
    AutoModelForCausalLM.from_pretrained(paths.warmstart_model)

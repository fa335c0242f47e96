"""train_base on the smoke profile: finite loss, weights moved, reloadable, resumable."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from mrt_core.envs.code_search import CodeSearchEnv
from tasks.build_dataset import run_build_dataset
from tasks.common import Paths
from tasks.modeling import build_char_tokenizer, build_model
from tasks.train_base import run_train_base


def test_trains_and_saves_a_reloadable_model(trained_smoke):
    params, paths, summary = trained_smoke
    assert math.isfinite(summary["final_val_loss"]) and summary["resumed_from"] == 0
    assert (paths.base_model / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(paths.base_model)
    tok = build_char_tokenizer(CodeSearchEnv(params.env.spec()).spec.alphabet())
    init = build_model(params.train_base.model, tok, params.train_base.seed)
    moved = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), init.state_dict().values())]
    assert all(moved)
    assert not (paths.checkpoints / "train_base").exists()  # resume state is cleared on success


class Killed(RuntimeError):
    pass


def test_resume_after_a_kill_gives_the_same_model(smoke_params, tmp_path):
    # checkpoint every 8 steps; "kill" at the step-20 validation, then re-run: it resumes at
    # step 16 and must end with exactly the weights of an uninterrupted run.
    straight, killed = Paths(tmp_path / "a"), Paths(tmp_path / "b")
    for p in (straight, killed):
        run_build_dataset(smoke_params, p)
    torch.manual_seed(0)
    run_train_base(smoke_params, straight)

    def kill(metrics, step):
        raise Killed(step)

    torch.manual_seed(0)
    with pytest.raises(Killed):
        run_train_base(smoke_params, killed, log=kill)
    assert (killed.checkpoints / "train_base" / "state.pt").exists()
    assert not killed.base_model.exists()  # nothing half-written
    summary = run_train_base(smoke_params, killed)
    assert summary["resumed_from"] == 16
    a = AutoModelForCausalLM.from_pretrained(straight.base_model).state_dict()
    b = AutoModelForCausalLM.from_pretrained(killed.base_model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

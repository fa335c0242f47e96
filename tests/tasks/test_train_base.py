"""train_base on the smoke profile: finite loss, weights moved, reloadable, resumable."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from mrt_core.envs.code_search import CodeSearchEnv
from mrt_lib.common import Paths
from mrt_lib.modeling import build_char_tokenizer, build_model
from tasks.build_dataset import run_build_dataset
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


def test_a_resume_state_from_another_dataset_is_discarded(smoke_params, tmp_path):
    # killed at step 20 on one split, then the dataset is rebuilt with another seed: the saved
    # step-16 state was trained on the old split, so the re-run starts over (it resumed here before)
    paths = Paths(tmp_path)
    run_build_dataset(smoke_params, paths)

    def kill(metrics, step):
        raise Killed(step)

    with pytest.raises(Killed):
        run_train_base(smoke_params, paths, log=kill)
    assert (paths.checkpoints / "train_base" / "state.pt").exists()
    reseeded = smoke_params.model_copy(update={"build_dataset": smoke_params.build_dataset.model_copy(
        update={"seed": smoke_params.build_dataset.seed + 1})})
    run_build_dataset(reseeded, paths)
    summary = run_train_base(reseeded, paths)
    assert summary["resumed_from"] == 0 and not (paths.checkpoints / "train_base").exists()


class _Payload:
    """A pickle that runs code when loaded with ``weights_only=False``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_resume_state_is_refused_not_run(smoke_params, tmp_path, capsys):
    paths = Paths(tmp_path / "ws")
    run_build_dataset(smoke_params, paths)

    def kill(metrics, step):
        raise Killed(step)

    with pytest.raises(Killed):
        run_train_base(smoke_params, paths, log=kill)
    state = paths.checkpoints / "train_base" / "state.pt"
    marker = tmp_path / "ran"
    torch.save({"step": 16, "model": _Payload(str(marker))}, state)  # the fingerprint file stays valid
    summary = run_train_base(smoke_params, paths)
    assert not marker.exists()  # the payload never ran
    assert summary["resumed_from"] == 0 and "refusing the resume state" in capsys.readouterr().out

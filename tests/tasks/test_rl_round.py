"""rl_round on the smoke models: outputs, arms on identical rollouts, resume after a kill."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mrt_lib.config import load_params
from tasks.rl_round import run_rl_round
from tasks.rl_start import run_rl_start
from tests.conftest import SMOKE_PARAMS, copy_outputs
from tests.fake_vllm import FakeVllm


def params_for(arms, **overrides):
    over = {"rl.arms": arms, "evaluate.models": ["base", "warmstart"], **overrides}
    return load_params(SMOKE_PARAMS, overrides=over)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_round_outputs_and_the_policy_moves(trained_smoke):
    params, paths, _ = trained_smoke
    out = paths.rl_round("mrt_dense", 0, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["summary"]
    assert len(metrics["steps"]) == s["steps"] == params.rl.steps_per_round
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in metrics["steps"])
    assert 0 <= s["val_accuracy"] <= 1 and 0 <= s["val_regret"] <= 1 and s["kl_to_reference"] >= 0
    # validated every save_every (2) steps and at the end (3); the best snapshot is kept when it is not the last
    assert [v["step"] for v in metrics["validations"]] == [2, 3]
    assert s["best_val_accuracy"] == max(v["val_accuracy"] for v in metrics["validations"])
    assert (out / "best").exists() == (s["best_step"] != s["steps"])
    # the dense arm pays for probes at every episode end; GRPO pays none
    grpo = json.loads((paths.rl_round("grpo", 0, 1) / "metrics.json").read_text())["summary"]
    assert s["probe_tokens"] > 0 and grpo["probe_tokens"] == 0
    assert s["total_tokens"] == s["prefix_generated_tokens"] + s["generated_tokens"] + s["probe_tokens"]
    start, end = weights(paths.warmstart_model), weights(out / "model")
    assert any(not torch.equal(start[k], end[k]) for k in start)
    records = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    cfg = params.rl
    assert len(records) == cfg.steps_per_round * cfg.prompts_per_step * cfg.group_size
    for rec in records:  # every rollout stored with its episodes, J after each, and role marks
        assert len(rec["episode_j"]) == len(rec["episodes"]) + 1 == len(rec["episode_tokens"])
        assert set(rec["roles"]) <= set("gef")  # one mark per token after the prefix
        # the answer is generated but not counted in the budget the prefix left
        assert rec["roles"].count("g") == rec["generated_tokens"] + params.env.n_digits
        assert rec["generated_tokens"] <= cfg.train_budget


def test_arms_see_the_same_rollouts_and_differ_in_advantages(trained_smoke, tmp_path):
    _, paths, _ = trained_smoke
    params = params_for(["grpo", "mrt_prefix", "mrt_mixed"], **{"rl.steps_per_round": 1})
    paths = copy_outputs(paths, tmp_path, "dataset", "base_model", "warmstart_model")
    recs = {}
    for arm in params.rl.arms:
        run_rl_start(params.rl.start, paths, arm, 0)
        run_rl_round(params, paths, arm, 0, 1)
        recs[arm] = [json.loads(x) for x in (paths.rl_round(arm, 0, 1) / "rollouts.jsonl").read_text().splitlines()]
    # the first step's rollouts come from the same start policy, prefixes and seeds
    assert [r["text"] for r in recs["grpo"]] == [r["text"] for r in recs["mrt_prefix"]]
    assert [r["prefix_text"] for r in recs["grpo"]] == [r["prefix_text"] for r in recs["mrt_mixed"]]
    adv = {arm: [r["mean_advantage"] for r in rs] for arm, rs in recs.items()}
    assert adv["grpo"] != adv["mrt_prefix"]
    # the mixed arm: the first answer_now samples of every group answered at once
    now = [r for r in recs["mrt_mixed"] if r["answer_now"]]
    assert len(now) == params.rl.prompts_per_step * params.rl.answer_now
    assert all(r["generated_tokens"] == 0 and r["roles"].startswith("f") for r in now)


class Killed(RuntimeError):
    pass


def killed_round(params, smoke_paths, root):
    """Round 1 of grpo seed 0 in a copy of the smoke outputs, stopped after step 3 (state saved at 2)."""
    cut = copy_outputs(smoke_paths, root, "dataset", "base_model", "warmstart_model")
    run_rl_start(params.rl.start, cut, "grpo", 0)

    def die_after_step_3(metrics, step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        run_rl_round(params, cut, "grpo", 0, 1, log=die_after_step_3)
    return cut


def test_a_killed_round_resumes_and_ends_where_an_uninterrupted_one_does(trained_smoke, tmp_path):
    _, paths, _ = trained_smoke
    params = params_for(["grpo"], **{"rl.steps_per_round": 4, "rl.save_every": 2})
    whole = copy_outputs(paths, tmp_path / "whole", "dataset", "base_model", "warmstart_model")
    run_rl_start(params.rl.start, whole, "grpo", 0)
    run_rl_round(params, whole, "grpo", 0, 1)

    cut = killed_round(params, paths, tmp_path / "cut")
    assert not cut.rl_round("grpo", 0, 1).exists()  # nothing half-written
    state = json.loads((cut.checkpoints / "rl" / "grpo" / "s0" / "r1" / "state.json").read_text())
    assert state["step"] == 2
    summary = run_rl_round(params, cut, "grpo", 0, 1)
    a, b = weights(whole.rl_round("grpo", 0, 1) / "model"), weights(cut.rl_round("grpo", 0, 1) / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["steps"] == 4 and not (cut.checkpoints / "rl" / "grpo" / "s0" / "r1").exists()
    for name in ("metrics.json", "rollouts.jsonl"):  # the outputs too, byte for byte
        assert (whole.rl_round("grpo", 0, 1) / name).read_bytes() == (cut.rl_round("grpo", 0, 1) / name).read_bytes()


def test_unknown_arm_seed_or_round_is_refused(trained_smoke):
    params, paths, _ = trained_smoke
    with pytest.raises(ValueError, match="not in rl.arms"):
        run_rl_round(params, paths, "mrt_star", 0, 1)
    with pytest.raises(ValueError, match="not in rl.arms"):
        run_rl_round(params, paths, "grpo", 0, 2)


def test_a_crafted_pickle_in_the_resume_state_is_refused_not_run(trained_smoke, tmp_path):
    from mrt_lib.resume import UnsafeStateError
    from tests.tasks.test_train_base import _Payload

    _, paths, _ = trained_smoke
    params = params_for(["grpo"], **{"rl.steps_per_round": 4, "rl.save_every": 2})
    cut = killed_round(params, paths, tmp_path / "cut")
    state = cut.checkpoints / "rl" / "grpo" / "s0" / "r1"
    (rng,) = (state / "accelerate").glob("random_states_*.pkl")
    marker = tmp_path / "ran"
    torch.save({"step": 2, "payload": _Payload(str(marker))}, rng)  # the fingerprint stays valid
    with pytest.raises(UnsafeStateError, match="holds more than tensors and plain data"):
        run_rl_round(params, cut, "grpo", 0, 1)
    assert not marker.exists() and not state.exists()  # never ran; the state is gone
    assert run_rl_round(params, cut, "grpo", 0, 1)["steps"] == 4  # the next run starts over



def test_a_vllm_engine_gets_the_new_weights_after_every_update(trained_smoke, tmp_path, monkeypatch):
    import tasks.rl_round as stage

    _, paths, _ = trained_smoke
    monkeypatch.setattr(stage, "make_backend", FakeVllm)
    FakeVllm.made.clear()
    params = params_for(["grpo"], **{"rl.backend": "vllm"})
    mine = copy_outputs(paths, tmp_path, "dataset", "base_model", "warmstart_model")
    run_rl_start(params.rl.start, mine, "grpo", 0)
    run_rl_round(params, mine, "grpo", 0, 1)
    (engine,) = FakeVllm.made
    assert len(engine.synced) == params.rl.steps_per_round  # once after every update
    assert any(not torch.equal(engine.synced[0][k], engine.synced[1][k]) for k in engine.synced[0])
    final = weights(mine.rl_round("grpo", 0, 1) / "model")
    assert all(torch.equal(engine.synced[-1][k], final[k]) for k in final)
    # on-policy: the synced engine samples exactly what the training model itself samples
    same = (mine.rl_round("grpo", 0, 1) / "rollouts.jsonl").read_text()
    assert same == (paths.rl_round("grpo", 0, 1) / "rollouts.jsonl").read_text()


def test_a_step_that_cannot_be_split_evenly_over_the_processes_exits_2_before_launching(tmp_path, capsys,
                                                                                       monkeypatch):
    import yaml

    from tasks.rl_round import main

    raw = yaml.safe_load(SMOKE_PARAMS.read_text())
    raw["rl"]["prompts_per_step"] = 3
    raw["resources"] = {"default": {"processes": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--params", "params.yaml", "--arm", "grpo", "--seed", "0", "--round", "1"])
    assert exc.value.code == 2
    assert "rl_round: 3 items cannot be split evenly over 2 processes" in capsys.readouterr().err

"""rl_round on the smoke models: outputs, arms on identical rollouts, resume after a kill."""

import json
import shutil

import numpy as np
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
    # the dense arm probes every episode end; GRPO only rl.log_probe_share of its rollouts (for its logs)
    grpo_metrics = json.loads((paths.rl_round("grpo", 0, 1) / "metrics.json").read_text())
    grpo = grpo_metrics["summary"]
    assert s["probe_tokens"] > grpo["probe_tokens"] > 0
    grpo_j = [json.loads(x)["episode_j"] for x in (paths.rl_round("grpo", 0, 1) / "rollouts.jsonl").read_text()
              .splitlines()]
    assert sum(j[0] is not None for j in grpo_j) == len(grpo_j) * params.rl.log_probe_share
    # the ledger: every token of every pass, and FLOPs = 2 N (generated + teacher-forced + 3 trained)
    for arm in (s, grpo):
        generated = arm["prefix_generated_tokens"] + arm["generated_tokens"]
        forced = arm["probe_tokens"] + arm["update_forward_tokens"]
        assert arm["total_tokens"] == generated + forced + arm["trained_tokens"]
        assert arm["flops"] == 2 * arm["n_params"] * (generated + forced + 3 * arm["trained_tokens"])
        assert arm["update_forward_tokens"] == 2 * arm["trained_tokens"] // params.rl.ppo_epochs  # old + reference
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
    import mrt_lib.rl.models as models

    _, paths, _ = trained_smoke
    monkeypatch.setattr(models, "make_backend", FakeVllm)
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


def _grpo_j(params, paths, root, steps, **prover):
    """Episode J by step of a grpo round (its updates never read J, so every prover choice sees
    the same rollouts) with every rollout probed and the prover ``prover`` (meta_prover.*)."""
    over = {"rl.steps_per_round": steps, "rl.log_probe_share": 1.0, "rl.save_every": 5,
            **{f"meta_prover.{k}": v for k, v in prover.items()}}
    mine = copy_outputs(paths, root, "dataset", "base_model", "warmstart_model")
    if "folder" in prover:
        shutil.copytree(paths.root / prover.pop("source"), mine.root / prover["folder"])
    params = params_for(["grpo"], **{k: v for k, v in over.items() if k != "meta_prover.source"})
    run_rl_start(params.rl.start, mine, "grpo", 0)
    run_rl_round(params, mine, "grpo", 0, 1)
    recs = [json.loads(x) for x in (mine.rl_round("grpo", 0, 1) / "rollouts.jsonl").read_text().splitlines()]
    return {s: [r["episode_j"] for r in recs if r["step"] == s] for s in range(1, steps + 1)}, mine


def test_each_prover_choice_reads_j_from_the_model_it_names(trained_smoke, tmp_path):
    _, paths, _ = trained_smoke
    live, _ = _grpo_j(None, paths, tmp_path / "live", 2, policy="live")
    start, _ = _grpo_j(None, paths, tmp_path / "start", 2, policy="round_start")
    _, one = _grpo_j(None, paths, tmp_path / "one", 1, policy="live")  # its model: the policy after step 1
    after_one = _grpo_j(None, one, tmp_path / "after", 2, policy="folder", folder="provers/after_one",
                        source="rl/grpo/s0/r1/model")[0]
    frozen = _grpo_j(None, paths, tmp_path / "frozen", 2, policy="folder", folder="provers/start",
                     source="models/warmstart")[0]
    # same weights agree to float rounding (a frozen copy and the training model take other kernels);
    # an update moves J by far more
    def same(a, b):
        a, b = (np.concatenate([np.array(x, dtype=float) for x in y]) for y in (a, b))
        return np.allclose(a, b, rtol=0, atol=1e-6), float(np.abs(a - b).max())

    # step 1: live and round_start are the same weights; step 2: live has taken an update
    assert same(live[1], start[1])[0] and same(live[2], start[2])[1] > 1e-4
    # live at step 2 is the policy after step 1, read as a named folder; round_start is the start, frozen
    assert same(after_one[2], live[2])[0] and same(after_one[1], live[1])[1] > 1e-4
    assert same(frozen[1], start[1])[0] and same(frozen[2], start[2])[0]


def test_base_prover_and_a_prover_with_another_tokenizer(trained_smoke, tmp_path):
    from transformers import AutoTokenizer

    from mrt_lib.rl.models import ProverError

    _, paths, _ = trained_smoke
    base = _grpo_j(None, paths, tmp_path / "base", 1, policy="base")[0]
    named = _grpo_j(None, paths, tmp_path / "named", 1, policy="folder", folder="provers/base",
                    source="models/base")[0]
    assert base == named  # base is models/base
    mine = copy_outputs(paths, tmp_path / "other", "dataset", "base_model", "warmstart_model")
    shutil.copytree(mine.base_model, mine.root / "provers" / "other")
    tok = AutoTokenizer.from_pretrained(mine.root / "provers" / "other")
    tok.add_tokens(["@@"])
    tok.save_pretrained(mine.root / "provers" / "other")
    run_rl_start("warmstart", mine, "grpo", 0)
    other = params_for(["grpo"], **{"meta_prover.policy": "folder", "meta_prover.folder": "provers/other"})
    with pytest.raises(ProverError, match="tokenizer differs"):
        run_rl_round(other, mine, "grpo", 0, 1)
    nothing = params_for(["grpo"], **{"meta_prover.policy": "folder", "meta_prover.folder": "nothing/here"})
    with pytest.raises(ProverError, match="holds no model"):
        run_rl_round(nothing, mine, "grpo", 0, 1)


@pytest.mark.parametrize("unit", ["tokens", "flops"])
def test_a_matched_run_updates_on_fresh_prompts_until_it_reaches_the_targets_compute(trained_smoke, tmp_path, unit):
    from mrt_core.compute import Ledger

    params0, paths, _ = trained_smoke
    params = params_for(["grpo", "mrt_dense"], **{"rl.match_compute": unit, "rl.matched_arms": ["grpo"]})
    mine = copy_outputs(paths, tmp_path, "dataset", "base_model", "warmstart_model")
    shutil.copytree(paths.rl_round("mrt_dense", 0, 1), mine.rl_round("mrt_dense", 0, 1))
    run_rl_start(params.rl.start, mine, "grpo_" + unit, 0)
    s = run_rl_round(params, mine, "grpo", 0, 1, matched=True)
    out = mine.rl_round("grpo_" + unit, 0, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    dense = json.loads((mine.rl_round("mrt_dense", 0, 1) / "metrics.json").read_text())["summary"]
    target = dense["total_tokens"] if unit == "tokens" else dense["flops"]
    assert s["match_target"] == target and s["matched_to"] == "mrt_dense" and s["steps"] > params.rl.steps_per_round
    spent = s["total_tokens"] if unit == "tokens" else s["flops"]
    assert s["match_ratio"] == spent / target >= 1.0
    # it stopped at the first step that reached the target: without its last step it was short
    last = metrics["steps"][-1]
    step = Ledger(last["generated_tokens"], last["probe_tokens"] + last["update_forward_tokens"],
                  last["trained_tokens"])
    assert spent - step.amount(unit, s["n_params"]) < target
    # its own steps are the plain arm's (same pool, same seeds); the extra ones start from fresh prefixes
    recs = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    plain = [json.loads(x) for x in (paths.rl_round("grpo", 0, 1) / "rollouts.jsonl").read_text().splitlines()]
    own = params.rl.steps_per_round
    assert [r["text"] for r in recs if r["step"] <= own] == [r["text"] for r in plain]
    fresh = {r["prefix_text"] for r in recs if r["step"] > own}
    assert fresh and fresh != {r["prefix_text"] for r in recs if r["step"] <= own}
    assert metrics["validations"][-1]["step"] == s["steps"]  # validated at its own end


def test_a_matched_run_needs_its_target_and_a_unit():
    from mrt_lib.config import RlConfig

    with pytest.raises(ValueError, match="need rl.match_compute: tokens or flops"):
        RlConfig(matched_arms=["grpo"])
    with pytest.raises(ValueError, match="must be one of rl.arms"):
        RlConfig(arms=["grpo"], matched_arms=["grpo"], match_compute="flops")
    with pytest.raises(ValueError, match="not the target"):
        RlConfig(arms=["grpo", "mrt_dense"], matched_arms=["mrt_dense"], match_compute="flops")


def test_mrt_dense_live_is_mrt_dense_with_the_live_prover(trained_smoke, tmp_path):
    _, paths, _ = trained_smoke
    runs = {}
    for arm, policy in (("mrt_dense_live", "round_start"), ("mrt_dense", "live"), ("mrt_dense", "round_start")):
        mine = copy_outputs(paths, tmp_path / f"{arm}_{policy}", "dataset", "base_model", "warmstart_model")
        params = params_for([arm], **{"rl.steps_per_round": 2, "meta_prover.policy": policy})
        run_rl_start(params.rl.start, mine, arm, 0)
        run_rl_round(params, mine, arm, 0, 1)
        runs[arm, policy] = [json.loads(x)["episode_j"] for x in
                             (mine.rl_round(arm, 0, 1) / "rollouts.jsonl").read_text().splitlines()]
    assert runs["mrt_dense_live", "round_start"] == runs["mrt_dense", "live"]  # the variant ignores the section
    assert runs["mrt_dense", "live"] != runs["mrt_dense", "round_start"]

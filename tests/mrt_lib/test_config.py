"""Config validation: every params file in the repo, and one test per kind of bad config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrt_lib.config import ConfigError, Params, load_params
from tasks import build_dataset, evaluate, train_base

REPO = Path(__file__).resolve().parents[2]


def params_files() -> list[Path]:
    skip = {".venv", ".git", "runs"}  # runs/: profile workspaces hold resolved copies
    return sorted(p for p in REPO.rglob("params*.yaml") if not skip & set(p.relative_to(REPO).parts))


def test_every_params_file_in_the_repo_validates():
    files = params_files()
    assert [p.relative_to(REPO).as_posix() for p in files] == ["params.yaml", "profiles/params_headline.yaml",
                                                                "tests/params_smoke.yaml"]
    for path in files:
        assert isinstance(load_params(path), Params)


def write_params(tmp_path: Path, **sections) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in sections.items():
        raw[key] = raw.get(key, {}) | value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, *needles, stage=build_dataset):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        stage.main(["--params", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no data/, no mlflow.db


def test_unknown_key(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, train_base={"stepz": 3})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "train_base.stepz", "unknown key",
                                  "steps", stage=train_base)


def test_wrong_type(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, train_base={"steps": "many"})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "train_base.steps = 'many'", "valid integer")


def test_out_of_range_value(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, train_base={"p_informed": 1.5})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "train_base.p_informed = 1.5",
                                  "less than or equal to 1")


def test_budgets_not_increasing(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, evaluate={"budgets": [12, 6]})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "evaluate.budgets", "strictly increasing")


def test_impossible_combination_budget_exceeds_context(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, evaluate={"budgets": [6, 400], "extrapolation_budgets": []})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "budget 400 needs", "max_seq_len=192")


def test_extrapolation_must_go_past_the_budgets(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, evaluate={"extrapolation_budgets": [30]})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "extrapolation_budgets [30]",
                                  "above the largest budget 36")


def test_impossible_combination_termination_looks_like_a_guess(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, env={"termination_text": "1:"})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "termination_text")


def test_vllm_backend_without_vllm_exits_2_with_the_install_hint(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, generation={"backend": "vllm"})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "pip install -e '.[gpu]'", stage=evaluate)


def test_unknown_backend_is_a_config_error(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, generation={"backend": "tgi"})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "generation.backend = 'tgi'", "'hf' or 'vllm'")


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "absent.yaml")


def test_exit_status_is_2_from_the_command_line(tmp_path):
    path = write_params(tmp_path, build_dataset={"val_fraction": "half"})
    proc = subprocess.run([sys.executable, "-m", "tasks.build_dataset", "--params", str(path)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "build_dataset.val_fraction = 'half'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_broken_round_chain_names_the_right_one(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, rl={"rounds": [{"n": 1, "prev": "r0"}, {"n": 3, "prev": "r1"}]})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "rl.rounds must be the chain",
                                  "[{n: 1, prev: r0}, {n: 2, prev: r1}]")


def test_evaluating_a_model_the_pipeline_does_not_make(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, evaluate={"models": ["base", "mrt_star"]})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "evaluate.models ['mrt_star']",
                                  "an arm of rl.arms (grpo, mrt_dense)", stage=evaluate)


def test_mixed_groups_need_continuations(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, rl={"answer_now": 8})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "rl.answer_now=8 must be below rl.group_size=8")


def test_rl_round_refuses_an_arm_outside_the_params_or_a_missing_start(tmp_path, monkeypatch, capsys):
    from tasks import rl_round

    monkeypatch.chdir(tmp_path)
    for arm, needle in (("mrt_star", "mrt_star seed 0 round 1 is not in rl.arms"),
                        ("grpo", "rl/grpo/s0/r0/start.json is missing")):
        with pytest.raises(SystemExit) as exc:
            rl_round.main(["--params", str(REPO / "params.yaml"), "--arm", arm, "--seed", "0", "--round", "1"])
        assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_per_arm_overrides_only_for_tunable_settings(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, rl={"overrides": {"grpo": {"train_budget": 30}}})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "rl.overrides.grpo: ['train_budget'] cannot "
                                  "differ between arms (matched compute)")
    params = load_params(REPO / "params.yaml", overrides={"rl.overrides": {"mrt_dense": {"alpha": 3, "lr": 3e-4}}})
    assert (params.rl.for_arm("mrt_dense").alpha, params.rl.for_arm("mrt_dense").lr) == (3.0, 3e-4)
    assert params.rl.for_arm("grpo") == params.rl  # an arm without overrides trains with the shared settings


def test_a_profile_inherits_and_overrides_section_by_section(tmp_path):
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "profiles" / "params_x.yaml"
    profile.write_text(f"inherit: {REPO / 'params.yaml'}\nrl:\n  seeds: [0, 1]\nevaluate:\n  budgets: [6, 12]\n")
    params, default = load_params(profile), load_params(REPO / "params.yaml")
    assert params.rl.seeds == [0, 1] and params.evaluate.budgets == [6, 12]  # replaced
    assert params.rl.arms == default.rl.arms and params.train_base == default.train_base  # inherited
    loop = tmp_path / "loop.yaml"
    loop.write_text("inherit: loop.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_params(loop)


def test_a_profile_replaces_a_source_of_another_kind_whole(tmp_path):
    from mrt_lib.config import read_params_file

    base = tmp_path / "base.yaml"
    base.write_text("build_dataset:\n  seed: 1\n  source: {kind: hf, dataset: x, splits: {train: a, test: b}}\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("inherit: base.yaml\nbuild_dataset:\n  source: {kind: files, files: {train: [t.jsonl]}}\n")
    merged = read_params_file(profile)["build_dataset"]
    assert merged == {"seed": 1, "source": {"kind": "files", "files": {"train": ["t.jsonl"]}}}


def test_the_old_episode_gap_key_says_what_replaced_it(tmp_path, monkeypatch, capsys):
    path = write_params(tmp_path, template={"min_gap": 3})
    assert_exit_2_nothing_written(tmp_path, monkeypatch, capsys, path, "template.min_gap", "ignore_within: g - 1")


def test_resources_by_stage_group_with_a_default():
    from mrt_lib.config import ResourcesConfig

    res = ResourcesConfig(default={"memory": "4Gi"}, stages={"rl_round": {"gpus": 8, "processes": 8}})
    assert res.for_stage("rl_round@mrt_dense-1-round2").gpus == 8
    assert res.for_stage("rl_start@mrt_dense-1").gpus == 0 and res.for_stage("report").memory == "4Gi"
    assert load_params(REPO / "params.yaml").resources.for_stage("evaluate").gpus == 1


@pytest.mark.parametrize("raw, message", [
    ({"stages": {"rl_rounds": {}}}, "unknown stages \\['rl_rounds'\\]"),
    ({"default": {"memory": "32m"}}, "memory"),  # 32m is 0.032 bytes: a slip for 32Mi
    ({"default": {"cpu": "eight"}}, "cpu"),
    ({"default": {"gpus": -1}}, "gpus"),
])
def test_bad_resources_are_refused(raw, message):
    from mrt_lib.config import ResourcesConfig

    with pytest.raises(ValueError, match=message):
        ResourcesConfig(**raw)


def test_resources_never_change_the_retraining_params_hash():
    from mrt_lib.retraining import params_hash

    assert params_hash({"rl": {"lr": 1}, "resources": {"default": {"gpus": 1}}}) == params_hash({"rl": {"lr": 1}})
    assert params_hash({"rl": {"lr": 1}}) != params_hash({"rl": {"lr": 2}})


@pytest.mark.parametrize("raw, message", [
    ({"policy": "teacher"}, "meta_prover.policy must be one of round_start, live, base, folder"),
    ({"folder": "../elsewhere/model"}, "inside the workspace"),
    ({"folder": "/abs/model"}, "inside the workspace"),
    ({"samples": 8, "max_samples": 4}, "max_samples=4 must be at least samples=8"),
    ({"shrink": "half"}, "shrink"),
])
def test_bad_meta_prover_settings_are_refused(raw, message):
    from mrt_lib.config.sections import MetaProverConfig

    with pytest.raises(ValueError, match=message):
        MetaProverConfig(**raw)

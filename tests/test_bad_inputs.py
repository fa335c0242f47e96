"""Bad params files, each run in-process through a stage's ``main(argv)``: exit status 2, the
key (or the file) named in the message, and nothing written to the workspace. Each case names
the rule it checks (docs/configuration.md)."""

from pathlib import Path

import pytest
import yaml

from tasks import build_dataset, evaluate, rl_round, train_base

REPO = Path(__file__).resolve().parents[1]


def default_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(dotted: str, value) -> str:
    """params.yaml with one value replaced, as YAML text."""
    raw = default_params()
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return yaml.safe_dump(raw)


NAN, INF = float("nan"), float("inf")
# (rule, stage, params text, what the message must name)
CASES = [
    ("a float setting must be finite: inf", train_base, with_value("train_base.lr", INF), "train_base.lr"),
    ("a float setting must be finite: nan", train_base, with_value("train_base.lr", NAN), "train_base.lr"),
    ("finite: rl.star_min_total_progress", rl_round, with_value("rl.star_min_total_progress", NAN),
     "rl.star_min_total_progress"),
    ("finite: evaluate.efficiency_levels", evaluate, with_value("evaluate.efficiency_levels", [0.2, NAN]),
     "evaluate.efficiency_levels"),
    ("finite: grader.timeout_s", evaluate, with_value("grader.timeout_s", INF), "grader.timeout_s"),
    ("a grader limit is bounded (a huge one hangs every stage)", evaluate, with_value("grader.timeout_s", 1e9),
     "grader.timeout_s"),
    ("an integer setting is not a bool", train_base, with_value("train_base.steps", True), "train_base.steps"),
    ("a float setting is not a bool", train_base, with_value("train_base.lr", True), "train_base.lr"),
    ("warmup no longer than training", train_base, with_value("train_base.warmup_steps", 900),
     "train_base.warmup_steps"),
    ("a checkpoint period that never fires", train_base, with_value("train_base.checkpoint_every", 900),
     "train_base.checkpoint_every"),
    ("a validation period that never fires", train_base, with_value("train_base.eval_every", 900),
     "train_base.eval_every"),
    ("torch threads bounded", build_dataset, with_value("runtime.torch_threads", 1_000_000),
     "runtime.torch_threads"),
    ("an empty params file is not the defaults", build_dataset, "", "is empty"),
    ("a params file of comments only", build_dataset, "# nothing\n", "is empty"),
    ("duplicate keys are refused, not last-wins", train_base, "train_base:\n  steps: 10\n  steps: 20\n",
     "duplicate key 'steps'"),
    ("duplicate sections are refused", train_base, "rl: {}\nrl: {}\n", "duplicate key 'rl'"),
    ("an integer too long to read", train_base, "train_base:\n  steps: " + "9" * 5000 + "\n", "bad.yaml"),
    ("the tracking store stays in the workspace: ..", build_dataset,
     with_value("runtime.tracking_uri", "sqlite:///../../x.db"), "runtime.tracking_uri"),
    ("the tracking store stays in the workspace: absolute", build_dataset,
     with_value("runtime.tracking_uri", "sqlite:////tmp/x.db"), "MRT_TRACKING_URI"),
    ("a tracking server is given by the environment, not params", build_dataset,
     with_value("runtime.tracking_uri", "http://127.0.0.1:5000"), "runtime.tracking_uri"),
    ("an RL arm must be registered", rl_round, with_value("rl.arms", ["grpo", "../.."]), "unknown RL arm '../..'"),
]


@pytest.mark.parametrize("rule, stage, text, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_config_exits_2_naming_it_and_writes_nothing(rule, stage, text, needle, tmp_path, monkeypatch, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    argv = ["--params", str(path)] + (["--arm", "grpo", "--seed", "0", "--round", "1"] if stage is rl_round else [])
    with pytest.raises(SystemExit) as exc:
        stage.main(argv)
    assert exc.value.code == 2, rule
    err = capsys.readouterr().err
    assert needle in err, (rule, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], rule  # no data/, no mlflow.db


def test_a_params_file_that_is_not_utf8_is_named(tmp_path, monkeypatch, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes("train_base:\n  steps: 10  # caf\xe9\n".encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train_base.main(["--params", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "UTF-8" in err


@pytest.mark.parametrize("argv, needle", [(["--arm", "../..", "--seed", "0"], "arm '../..' seed 0 is not in"),
                                         (["--arm", "grpo", "--seed", "7"], "arm 'grpo' seed 7 is not in")])
def test_rl_start_writes_only_for_configured_arms_and_seeds(argv, needle, tmp_path, monkeypatch, capsys):
    from tasks import rl_start

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(SystemExit) as exc:
        rl_start.main(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing outside rl/ (or in it)


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 21

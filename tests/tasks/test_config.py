"""Config validation: every params file in the repo, and one test per kind of bad config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks import build_dataset, evaluate, train_base
from tasks.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[2]


def params_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("params*.yaml") if ".venv" not in p.parts and ".git" not in p.parts)


def test_every_params_file_in_the_repo_validates():
    files = params_files()
    assert [p.relative_to(REPO).as_posix() for p in files] == ["params.yaml", "tests/params_smoke.yaml"]
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

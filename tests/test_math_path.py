"""The real-model path end to end on CPU: a tiny random Qwen2 with a locally trained byte-level
tokenizer stands in for a hub model, the math fixture files for a hub dataset, and every stage
of dvc.yaml runs, in order, by configuration alone (env.kind: math, policy.init: pretrained,
the sampled meta-prover, the math-verify grader). The stages run in-process here; that DVC and
Prefect run the same stage functions is tests/test_pipeline.py's job."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from mrt_lib.common import Paths
from mrt_lib.config import load_params
from tasks.build_dataset import run_build_dataset
from tasks.build_star_data import run_build_star_data
from tasks.evaluate import run_evaluate
from tasks.report import run_report
from tasks.sft_warmstart import run_sft_warmstart
from tasks.synthesize_backtracks import run_synthesize_backtracks
from tasks.train_base import run_train_base
from tests.conftest import SMOKE_PARAMS, run_rl
from tests.test_tiny_qwen2 import FIXTURES, fixture_texts
from tests.tiny_qwen2 import build_tiny_qwen2

pytestmark = pytest.mark.slow


def math_params(model: Path) -> dict:
    """The smoke profile switched to text problems: a pretrained policy, files as the data
    source, RL from the base model, J sampled and graded."""
    raw = yaml.safe_load(SMOKE_PARAMS.read_text())
    raw["env"] = {"kind": "math"}
    raw["policy"] = {"init": "pretrained", "model": str(model), "dtype": "float32", "max_context": 1024}
    raw["meta_prover"] = {"estimator": "sampled", "samples": 2}
    raw["template"]["max_answer_tokens"] = 8
    raw["runtime"]["torch_threads"] = 1  # a 32-wide model: more threads only add overhead
    raw["build_dataset"] = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.125, "max_bad_share": 0.15, "source": {
        "kind": "files", "columns": {"problem": "problem", "answer": "answer", "solution": "solution"},
        "files": {"train": [str(FIXTURES / "train.jsonl")], "test": [str(FIXTURES / "test.jsonl")]}}}
    raw["build_star_data"].update({"model": "base", "n_problems": 6, "n_samples": 2, "budget": 16})
    raw["rl"].update({"start": "base", "train_budget": 24, "prompts_per_step": 2, "group_size": 2, "val_problems": 3})
    raw["evaluate"].update({"models": ["base", "grpo", "mrt_dense"], "budgets": [8, 16, 24],
                            "extrapolation_budgets": [32], "vote_samples": 2})
    return raw


def run_stages(params, paths: Paths) -> None:
    """Every stage of dvc.yaml, in its order (the RL matrix expanded as DVC does)."""
    run_build_dataset(params, paths)
    run_train_base(params, paths)
    run_synthesize_backtracks(params, paths)
    run_sft_warmstart(params, paths)
    run_build_star_data(params, paths)
    run_rl(params, paths)
    run_evaluate(params, paths)
    run_report(params, paths)


def test_every_stage_runs_on_text_problems(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: more threads only add overhead
    model = build_tiny_qwen2(tmp_path / "hub" / "tiny-qwen2", fixture_texts())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(math_params(model), sort_keys=False))
    repo = tmp_path / "repo"
    try:
        run_stages(load_params(tmp_path / "params.yaml"), Paths(root=repo))
    finally:
        torch.set_num_threads(threads)

    assert json.loads((repo / "data/dataset/meta.json").read_text())["env"] == "math"
    assert json.loads((repo / "models/base/source.json").read_text())["model"] == str(model)
    for stage, out in (("synthesize_backtracks", "data/backtracks"), ("sft_warmstart", "models/warmstart")):
        note = json.loads((repo / out / "not_applicable.json").read_text())
        assert note["stage"] == stage and "code-search" in note["reason"]
    rollouts = [json.loads(x) for x in (repo / "rl/mrt_dense/s0/r1/rollouts.jsonl").read_text().splitlines()]
    # every episode end of every continuation was probed (J sampled with 2 answers: 0, 0.5 or 1)
    assert all(len(r["episode_j"]) == len(r["episodes"]) + 1 and set(r["episode_j"]) <= {0.0, 0.5, 1.0}
               for r in rollouts)
    summary = json.loads((repo / "rl/mrt_dense/s0/r1/metrics.json").read_text())["summary"]
    assert summary["probe_tokens"] > 0 and 0 <= summary["val_accuracy"] <= 1
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {"base", "grpo", "mrt_dense", "grpo/s0/r1"} <= set(metrics) and "bisection" not in metrics
    assert metrics["base"]["B16"]["generated_tokens"] <= 16
    comparison = (repo / "reports/comparison.md").read_text()
    assert "### Gain over the base model" in comparison and "| B=32" not in comparison

"""MRT-STaR data on the smoke models: episodes, J per episode, progress and the filter."""

import json

import numpy as np
import pytest

from tasks.build_star_data import run_build_star_data
from tests.conftest import copy_outputs


def test_rows_carry_episodes_j_and_progress(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path, "dataset", "warmstart_model")
    stats = run_build_star_data(params, paths)
    rows = [json.loads(line) for line in (paths.star / "traces.jsonl").read_text().splitlines()]
    assert json.loads((paths.star / "meta.json").read_text())["n_rows"] == len(rows) == stats["n_rows"]
    assert stats["n_rows"] + sum(stats["rejects"].values()) == stats["n_rollouts"] == 12 * 2
    for row in rows:
        assert len(row["j"]) == len(row["episodes"]) + 1 and all(0 <= j <= 1 for j in row["j"])
        assert row["progress"] == pytest.approx(np.diff(row["j"]).tolist())
        prompt_len = len(row["prompt"])
        text = row["text"][prompt_len:]
        # the episodes tile the search (everything before the termination text)
        assert [a for a, _ in row["episodes"]][:1] in ([], [0])
        assert all(b == c for (_, b), (c, _) in zip(row["episodes"], row["episodes"][1:]))
        assert text.startswith("".join(text[a:b] for a, b in row["episodes"]))


def test_filter_thresholds_reject_with_reasons(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path, "dataset", "warmstart_model")
    strict = params.model_copy(update={"build_star_data": params.build_star_data.model_copy(
        update={"min_total_progress": 2.0})})  # progress sums to at most 1: nothing can pass
    stats = run_build_star_data(strict, paths)
    assert stats["n_rows"] == 0 and set(stats["rejects"]) <= {"incorrect", "not_progressing"}

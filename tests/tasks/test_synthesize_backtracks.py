"""MRT-B synthesis: hand-built traces, rejects, stats and the malformed-share guard."""

import json

import pytest

from mrt_core.envs.base import Problem, Role
from mrt_core.envs.code_search import CodeSearchEnv, CodeSearchSpec
from mrt_lib.backtracks import Candidate, SynthesisError, build_row, replay
from mrt_lib.config import load_params
from tasks.synthesize_backtracks import run_synthesize_backtracks
from tests.conftest import REPO, copy_outputs

PARAMS = load_params(REPO / "params.yaml")
ENV = CodeSearchEnv(CodeSearchSpec())
P527 = Problem("code-527", "Q3:", "527")


def test_replay_writes_the_environments_answers():
    segments, state = replay(ENV, P527, ["4", "5", "2", "7"])
    assert "".join(s.text for s in segments) == "Q3:4>\n5=2=7=!"
    assert [s.role for s in segments[:3]] == [Role.PROMPT, Role.GENERATED, Role.ENV] and state.solved


def test_row_backtracks_to_the_best_step_and_keeps_provenance():
    # first attempt 5, 2, 3 fails at step 2; resampling succeeded from steps 1 and 2, best is 2
    cand = Candidate(P527, ["5", "2", "3"], [0.0, 0.25, 0.5], [None, ["2", "7"], ["7"]])
    row, reason = build_row(ENV, cand, PARAMS.synthesize_backtracks.variant, {"model_hash": "abc", "seed": 0})
    assert reason == "" and row["chosen_step"] == 2 and row["fail_step"] == 2
    # "^2": back to step 2; the environment echoes the kept digits "5=2=" (ENV tokens)
    assert row["text"] == "Q3:5=2=3>\n^2\n5=2=7=!A:527"
    assert row["suffix_start"] == len("Q3:5=2=3>\n") and row["model_hash"] == "abc"
    roles = {text: role for text, role in row["segments"]}
    assert roles["^"] == "gen" and roles["\n5=2="] == "env" and roles["A:"] == "gen"


def test_restart_variant_writes_the_kept_steps_again():
    params = PARAMS.model_copy(update={"synthesize_backtracks": PARAMS.synthesize_backtracks.model_copy(
        update={"variant": "restart"})})
    cand = Candidate(P527, ["5", "2", "3"], [0.0, 0.25, 0.5], [None, ["2", "7"], ["7"]])
    row, _ = build_row(ENV, cand, params.synthesize_backtracks.variant, {})
    assert row["text"] == "Q3:5=2=3>\n5=2=7=!A:527"


def test_no_successful_resample_is_rejected_with_its_reason():
    cand = Candidate(P527, ["5", "2", "3"], [0.0, 0.0, 0.0], [None, None, None])
    assert build_row(ENV, cand, PARAMS.synthesize_backtracks.variant, {}) == (None, "no_successful_resample")


def test_stage_on_the_smoke_model_counts_every_problem(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    paths = copy_outputs(paths, tmp_path, "dataset", "base_model")
    stats = run_synthesize_backtracks(params, paths)
    meta = json.loads((paths.backtracks / "meta.json").read_text())
    assert meta == json.loads(json.dumps(stats))
    rows = [json.loads(line) for line in (paths.backtracks / "traces.jsonl").read_text().splitlines()]
    assert stats["n_rows"] == len(rows)
    # every problem ends as a row or a counted reject
    assert len(rows) + sum(stats["rejects"].values()) == stats["n_problems"]
    env = CodeSearchEnv(params.env.spec())
    for row in rows:
        assert row["text"].endswith(params.env.termination_text + row["problem_id"].removeprefix("code-"))
        assert row["chosen_step"] <= row["fail_step"] and len(row["success_by_step"]) == row["fail_step"] + 1
        assert env.spec.backtrack_text in row["text"]


def test_too_many_malformed_first_attempts_fail_and_write_nothing(trained_smoke, tmp_path):
    params, paths, _ = trained_smoke
    strict = params.model_copy(update={"synthesize_backtracks": params.synthesize_backtracks.model_copy(
        update={"max_malformed_share": 0.0})})
    other = copy_outputs(paths, tmp_path, "dataset", "base_model")
    with pytest.raises(SynthesisError, match="malformed"):
        run_synthesize_backtracks(strict, other)
    assert not other.backtracks.exists()


def test_exact_and_sampled_step_estimates_agree(trained_smoke):
    # the exact success of resampling from each step prefix (teacher-forced) against 400 samples
    from mrt_lib.backtracks import estimate_prefixes, exact_prefixes
    from mrt_lib.envs import backend_for
    from mrt_lib.generation.rollouts import RolloutEngine

    params, paths, _ = trained_smoke
    env = CodeSearchEnv(params.env.spec())
    engine = RolloutEngine(backend_for(params, paths.base_model), env)
    problem = Problem("code-21", "Q2:", "21")
    failed = [(problem, ["3"], ["2", "0"])]  # an earlier attempt "3<", then "2=" and "0>" fails at step 1
    exact = exact_prefixes(engine, failed)[0]
    assert exact.success[0] <= exact.success[1]  # keeping the confirmed step never hurts here
    assert exact.continuations == [["2", "1"], ["1"]]
    many = params.model_copy(update={"synthesize_backtracks": params.synthesize_backtracks.model_copy(
        update={"n_resamples": 400})})
    sampled = estimate_prefixes(engine, failed, many.synthesize_backtracks, seed=0)[0]
    for p, q in zip(exact.success, sampled.success):
        assert abs(p - q) < 4 * (p * (1 - p) / 400) ** 0.5 + 0.01

"""The fan-out of a stage graph on a synthetic 6-stage ``dvc.yaml``: a diamond (a -> b, c -> d)
and a failing branch (a -> e -> f). Order, the concurrency limit, failure propagation and
idempotency, with stage runs that are plain functions (no timing: concurrency is proved by two
stages that each wait for the other)."""

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from mrt_lib.fanout import (
    FanOutResult,
    attempt_keys,
    changed_stages,
    check_acyclic,
    choose_attempt,
    fan_out,
    idempotency_key,
    job_variables,
    parse_dag_dot,
    stage_graph,
    stages_to_run,
)

BIN = Path(sys.executable).parent
STAGES = {"a": ([], ["a.txt"]), "b": (["a.txt"], ["b.txt"]), "c": (["a.txt"], ["c.txt"]),
          "d": (["b.txt", "c.txt"], ["d.txt"]), "e": (["a.txt"], ["e.txt"]), "f": (["e.txt"], ["f.txt"])}
GRAPH = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}, "e": {"a"}, "f": {"e"}}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dag")
    stages = {name: {"cmd": f"echo {name} > {outs[0]}", "deps": deps, "outs": outs} if deps else
              {"cmd": f"echo {name} > {outs[0]}", "outs": outs} for name, (deps, outs) in STAGES.items()}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=repo, check=True)
    return repo


def test_the_graph_is_dvcs_own(synthetic):
    assert stage_graph(synthetic, str(BIN / "dvc")) == GRAPH


def test_parse_dag_dot_keeps_lone_stages_and_edges():
    text = 'strict digraph {\n"x";\n"y";\n"z";\n"x" -> "y";\n}\n'
    assert parse_dag_dot(text) == {"x": set(), "y": {"x"}, "z": set()}


def test_a_cycle_or_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        check_acyclic({"a": {"b"}, "b": {"a"}})
    with pytest.raises(ValueError, match="unknown stages"):
        check_acyclic({"a": {"ghost"}})


class Recorder:
    """Stage runs that record when they start and end; ``fail`` raise."""

    def __init__(self, fail=(), meet=()):
        self.events, self.lock, self.fail = [], threading.Lock(), set(fail)
        self.meet = {name: threading.Event() for name in meet}  # these wait for each other

    def __call__(self, stage):
        with self.lock:
            self.events.append(("start", stage))
        if stage in self.meet:
            self.meet[stage].set()
            others = [e for s, e in self.meet.items() if s != stage]
            assert all(e.wait(60) for e in others), f"{stage} never ran beside {sorted(self.meet)}"
        with self.lock:
            self.events.append(("end", stage))
        if stage in self.fail:
            raise RuntimeError(f"stage {stage} failed (exit 1)\nits log tail")
        return stage

    def index(self, kind, stage):
        return self.events.index((kind, stage))


def test_order_and_the_concurrency_limit():
    rec = Recorder(meet=("b", "c"))  # b and c must run at the same time, or both time out
    result = fan_out(GRAPH, rec, limit=2)
    assert result.ok and sorted(result.completed) == sorted(GRAPH)
    assert result.max_running == 2
    for stage, ups in GRAPH.items():
        assert all(rec.index("end", u) < rec.index("start", stage) for u in ups), stage


def test_limit_one_is_the_sequential_order():
    rec = Recorder()
    result = fan_out(GRAPH, rec, limit=1)
    assert result.max_running == 1 and result.completed == ["a", "b", "c", "d", "e", "f"]  # ready ones by name


def test_a_failure_stops_only_what_depends_on_it():
    rec = Recorder(fail=("e",))
    result = fan_out(GRAPH, rec, limit=2)
    assert result.failed == {"e": "stage e failed (exit 1)\nits log tail"} and result.not_run == ["f"]
    assert sorted(result.completed) == ["a", "b", "c", "d"]  # the other branch finished
    assert ("start", "f") not in rec.events
    assert not result.ok and "e: stage e failed (exit 1)" in result.summary() and "f" in result.summary()


def test_a_failing_completion_hook_fails_the_stage():
    def restore(stage):
        if stage == "b":
            raise RuntimeError("dvc repro --pull of b failed")

    result = fan_out(GRAPH, Recorder(), limit=2, on_done=restore)
    assert result.failed == {"b": "dvc repro --pull of b failed"} and result.not_run == ["d"]


def test_run_again_after_a_kill_starts_each_stage_once():
    """Stage runs are found by their idempotency key (what Prefect's run_deployment does): an
    orchestrator stopped after some stages, then run again, starts no stage twice."""
    started, completed = {}, set()
    stop_after = {"n": 3}

    def run_stage(stage):
        key = idempotency_key(stage, commit="abc", params={"lr": 0.1})
        if key in completed:
            return key  # the existing run, not a new one
        started[key] = started.get(key, 0) + 1
        completed.add(key)
        stop_after["n"] -= 1
        if stop_after["n"] < 0:
            raise KeyboardInterrupt  # stands in for the orchestrator's kill
        return key

    with pytest.raises(KeyboardInterrupt):
        fan_out(GRAPH, run_stage, limit=1)
    stop_after["n"] = 99
    again = fan_out(GRAPH, run_stage, limit=2)
    assert again.ok and sorted(again.completed) == sorted(GRAPH)
    assert sorted(started.values()) == [1] * 6


def test_idempotency_keys_change_with_what_the_stage_is_made_of():
    key = idempotency_key("rl_round@grpo-0-round0", commit="abc", inputs={"models/warmstart": "m1"})
    assert key == idempotency_key("rl_round@grpo-0-round0", inputs={"models/warmstart": "m1"}, commit="abc")
    assert key != idempotency_key("rl_round@grpo-0-round0", commit="abd", inputs={"models/warmstart": "m1"})
    assert key != idempotency_key("rl_round@grpo-1-round0", commit="abc", inputs={"models/warmstart": "m1"})
    assert key.startswith("rl_round@grpo-0-round0:")


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit"):
        fan_out(GRAPH, Recorder(), limit=0)
    assert FanOutResult().ok


def test_what_runs_is_the_changed_stages_and_everything_below_them():
    assert stages_to_run(GRAPH, {"b"}) == {"b": set(), "d": {"b"}}  # c is done: d waits on b only
    assert stages_to_run(GRAPH, {"a"}) == GRAPH
    assert stages_to_run(GRAPH, {"e", "c"}) == {"c": set(), "d": {"c"}, "e": set(), "f": {"e"}}
    assert stages_to_run(GRAPH, set()) == {}


def test_dvc_status_names_the_out_of_date_stages(synthetic):
    dvc = str(BIN / "dvc")
    assert changed_stages(synthetic, dvc) == set(STAGES)  # nothing made yet
    subprocess.run([dvc, "repro", "-q", "b"], cwd=synthetic, check=True)
    assert changed_stages(synthetic, dvc) == {"c", "d", "e", "f"}


def test_job_variables_keep_what_the_pool_template_declares():
    from mrt_lib.config import StageResources

    res = StageResources(gpus=8, cpu="32", memory="256Gi", shm_size="64Gi", processes=8)
    full, dropped = job_variables(res, "registry/mrt:abc1234", None)
    assert full == {"gpus": 8, "cpu": "32", "memory": "256Gi", "shm_size": "64Gi", "env": {"MRT_PROCESSES": "8"},
                    "image": "registry/mrt:abc1234"} and dropped == []
    process_pool = {"command", "env", "labels", "name", "stream_output", "working_dir"}  # Prefect's process template
    kept, dropped = job_variables(res, None, process_pool)
    assert kept == {"env": {"MRT_PROCESSES": "8"}} and dropped == ["cpu", "gpus", "memory", "shm_size"]
    cpu_stage, _ = job_variables(StageResources(), "registry/mrt:abc1234", None)
    assert cpu_stage["gpus"] == 0 and cpu_stage["node_selector"] == {} and cpu_stage["tolerations"] == []


def test_an_interrupted_fan_out_tells_the_running_stages_to_stop():
    stop, seen = threading.Event(), []

    def run_stage(stage):
        if stage == "c":  # still running when the orchestrator is interrupted
            seen.append("stopped" if stop.wait(60) else "never told")

    def on_done(stage):
        if stage == "b":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fan_out({"a": set(), "b": {"a"}, "c": {"a"}}, run_stage, limit=2, on_done=on_done, stop=stop,
                order=lambda s: {"a": 0, "b": 1, "c": 2}[s])
    assert seen == ["stopped"]  # fan_out returned only after the running stage had been told


def test_a_rerun_waits_for_a_live_or_done_run_and_retries_a_failed_one_under_the_next_key():
    assert attempt_keys("s:k", 3) == ["s:k", "s:k#2", "s:k#3"]
    assert choose_attempt("s:k", {}, 3) == ("s:k", False)  # never started: start it
    for state in ("SCHEDULED", "PENDING", "RUNNING", "COMPLETED", None):
        assert choose_attempt("s:k", {"s:k": state}, 3) == ("s:k", True)  # started: wait for it
    assert choose_attempt("s:k", {"s:k": "CRASHED"}, 3) == ("s:k#2", False)  # failed: a new attempt
    assert choose_attempt("s:k", {"s:k": "FAILED", "s:k#2": "RUNNING"}, 3) == ("s:k#2", True)
    with pytest.raises(RuntimeError, match="failed 3 times"):
        choose_attempt("s:k", {"s:k": "FAILED", "s:k#2": "CANCELLED", "s:k#3": "CRASHED"}, 3)

"""Bad inputs, each run in-process through a stage's ``main(argv)``; each case names the rule it
checks (docs/configuration.md, docs/pipeline.md).

- Bad params files: exit status 2, the key (or the file, or file:line) named in the message,
  and nothing written to the workspace.
- Bad data rows of a ``files`` source (build_dataset, env.kind math): one bad line in a clean
  JSONL file is a counted reject, by reason and ``file:line``, in meta.json; past
  ``max_bad_share`` the stage fails naming it (exit 1) and writes nothing."""

import json
from pathlib import Path

import pytest
import yaml

from tasks import (
    build_dataset,
    build_star_data,
    evaluate,
    report,
    rl_round,
    sft_warmstart,
    synthesize_backtracks,
    train_base,
)

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
    # counts and ranges
    ("a count is positive", train_base, with_value("train_base.steps", -5), "train_base.steps = -5"),
    ("a batch is not empty", train_base, with_value("train_base.batch_size", 0), "train_base.batch_size = 0"),
    ("a probability is at most 1", train_base, with_value("train_base.p_cut", 1.5), "train_base.p_cut = 1.5"),
    ("a fraction is below 1: build_dataset.val_fraction", build_dataset,
     with_value("build_dataset.val_fraction", 1.5), "build_dataset.val_fraction = 1.5"),
    ("val and test leave training problems", build_dataset, with_value("build_dataset.test_fraction", 0.8),
     "val_fraction + test_fraction must stay below 0.9"),
    ("a sampling temperature is positive", evaluate, with_value("evaluate.temperature", -1.0),
     "evaluate.temperature = -1.0"),
    ("a vLLM memory share is positive", evaluate, with_value("generation.vllm_gpu_memory_utilization", 0),
     "generation.vllm_gpu_memory_utilization = 0"),
    ("a share is not negative", synthesize_backtracks, with_value("synthesize_backtracks.max_malformed_share", -0.1),
     "synthesize_backtracks.max_malformed_share = -0.1"),
    ("problems to try are positive", synthesize_backtracks, with_value("synthesize_backtracks.n_problems", 0),
     "synthesize_backtracks.n_problems = 0"),
    ("a share is at most 1: build_star_data.max_zero_share", build_star_data,
     with_value("build_star_data.max_zero_share", 2), "build_star_data.max_zero_share = 2"),
    ("a warm-start val share is below 1", sft_warmstart, with_value("sft_warmstart.val_fraction", 1.0),
     "sft_warmstart.val_fraction = 1.0"),
    ("sft warm-up no longer than training", sft_warmstart, with_value("sft_warmstart.warmup_steps", 500),
     "sft_warmstart.warmup_steps=500"),
    ("a contamination threshold is positive", build_dataset,
     with_value("build_dataset.contamination", {"threshold": 0}), "build_dataset.contamination.threshold = 0"),
    ("max_rows are positive", build_dataset, with_value("build_dataset.max_rows", {"train": 0}),
     "max_rows must be positive"),
    ("max_rows names one of our splits", build_dataset, with_value("build_dataset.max_rows", {"dev": 10}),
     "build_dataset.max_rows.dev"),
    ("the experiment has a name", report, with_value("runtime.experiment", ""), "runtime.experiment = ''"),
    ("the bootstrap has enough resamples", evaluate, with_value("evaluate.n_bootstrap", 5), "evaluate.n_bootstrap = 5"),
    ("a code has at most 8 digits", train_base, with_value("env.n_digits", 9), "env.n_digits = 9"),
    # keys and types
    ("an unknown key is a typo, named with the allowed keys", train_base, with_value("train_base.stpes", 10),
     "train_base.stpes: unknown key; allowed keys here: batch_size,"),
    ("an unknown section is refused", build_dataset, with_value("trainbase", {"steps": 1}),
     "trainbase: unknown key; allowed keys here: build_dataset,"),
    ("an unknown key in a list item is named with its allowed keys", rl_round,
     with_value("rl.rounds", [{"n": 1, "prev": "r0", "next": "r2"}]), "rl.rounds.0.next: unknown key; allowed keys "
     "here: n, prev"),
    ("an unknown key in a data source is named", build_dataset, with_value("build_dataset.source", {
        "kind": "files", "files": {"train": ["a.jsonl"], "test": ["b.jsonl"]}, "colums": {}}),
     "build_dataset.source.files.colums: unknown key"),
    ("an integer setting is not a word", train_base, with_value("train_base.steps", "many"),
     "train_base.steps = 'many'"),
    ("an integer setting has no fraction", train_base, with_value("train_base.steps", 10.5),
     "train_base.steps = 10.5"),
    ("a scalar setting is not a list", train_base, with_value("train_base.lr", [0.1]), "train_base.lr = [0.1]"),
    ("a list setting is not a scalar", evaluate, with_value("evaluate.efficiency_levels", "0.2"),
     "evaluate.efficiency_levels = '0.2'"),
    ("a seed is an integer", rl_round, with_value("rl.seeds", ["a"]), "rl.seeds.0 = 'a'"),
    ("a section is a mapping, not a scalar", train_base, with_value("train_base", 5), "train_base = 5"),
    ("a section left blank is not the defaults", train_base, with_value("train_base", None), "train_base = None"),
    # named choices
    ("env.kind is a known environment", build_dataset, with_value("env.kind", "chess"), "env.kind = 'chess'"),
    ("generation.backend is hf or vllm", evaluate, with_value("generation.backend", "tgi"),
     "generation.backend = 'tgi'"),
    ("a data source kind is known", build_dataset, with_value("build_dataset.source", {"kind": "s3"}),
     "build_dataset.source: Input tag 's3'"),
    ("a contamination action is known", build_dataset, with_value("build_dataset.contamination", {"action": "ignore"}),
     "build_dataset.contamination.action = 'ignore'"),
    ("a backtrack variant is known", synthesize_backtracks, with_value("synthesize_backtracks.variant", "undo"),
     "synthesize_backtracks.variant = 'undo'"),
    ("a warm-start loss is known", sft_warmstart, with_value("sft_warmstart.loss_on", "all"),
     "sft_warmstart.loss_on = 'all'"),
    ("MRT-STaR samples from base or warmstart", build_star_data, with_value("build_star_data.model", "grpo"),
     "build_star_data.model = 'grpo'"),
    ("a meta-prover estimator is known", rl_round, with_value("meta_prover.estimator", "mc"),
     "meta_prover.estimator = 'mc'"),
    ("a champion gate metric is known", build_dataset, with_value("retrain.gate_metric", "loss"),
     "retrain.gate_metric = 'loss'"),
    ("evaluate.rl_rounds is all or last", evaluate, with_value("evaluate.rl_rounds", "first"),
     "evaluate.rl_rounds = 'first'"),
    # lists: RL arms, seeds, rounds, budgets
    ("rl.arms is not empty", rl_round, with_value("rl.arms", []), "rl.arms = []"),
    ("rl.seeds is not empty", rl_round, with_value("rl.seeds", []), "rl.seeds = []"),
    ("an arm is not listed twice", rl_round, with_value("rl.arms", ["grpo", "grpo"]),
     "rl.arms and rl.seeds must not repeat"),
    ("rl.rounds is the chain r0, r1, ...", rl_round, with_value("rl.rounds", [{"n": 1, "prev": "r0"},
                                                                             {"n": 3, "prev": "r1"}]),
     "rl.rounds must be the chain"),
    ("answer_now below group_size", rl_round, with_value("rl.answer_now", 8), "rl.answer_now=8"),
    ("only tunable settings differ between arms", rl_round, with_value("rl.overrides", {"grpo": {"train_budget": 12}}),
     "rl.overrides.grpo: ['train_budget']"),
    ("an override is itself valid, named as the override", rl_round,
     with_value("rl.overrides", {"mrt_dense": {"alpha": -1.0}}), "rl.overrides.mrt_dense: alpha=-1.0"),
    ("an override names a registered arm", rl_round, with_value("rl.overrides", {"nope": {"lr": 0.1}}),
     "unknown RL arm 'nope'"),
    ("evaluation budgets strictly increase", evaluate, with_value("evaluate.budgets", [12, 6]),
     "evaluate.budgets = [12, 6]"),
    ("extrapolation budgets lie past the budgets", evaluate, with_value("evaluate.extrapolation_budgets", [30]),
     "extrapolation_budgets [30] must be increasing and above the largest budget 36"),
    ("a training budget fits the context", rl_round, with_value("rl.train_budget", 400),
     "rl.train_budget 400 needs up to"),
    ("evaluated models are made by the pipeline", evaluate, with_value("evaluate.models", ["base", "ppo"]),
     "evaluate.models ['ppo']"),
    # rules within and between sections
    ("attention heads divide the hidden size", train_base, with_value("train_base.model.num_heads", 3),
     "train_base.model: hidden_size 128 must be divisible by num_heads 3"),
    ("code symbols are distinct", train_base, with_value("env.symbols", "0012"), "env.symbols = '0012'"),
    ("feedback strings do not reuse symbols", train_base, with_value("env.obs_higher", "1"),
     "env: obs_higher='1' shares characters with symbols"),
    ("the backtrack variant fits env.backtrack_echo", synthesize_backtracks,
     with_value("synthesize_backtracks.variant", "backtrack_no_repeat"),
     "synthesize_backtracks.variant='backtrack_no_repeat' needs env.backtrack_echo=False"),
    ("a pretrained policy is named", evaluate, with_value("policy.init", "pretrained"),
     "policy.init=pretrained needs policy.model"),
    ("math problems come from a text source", build_dataset, with_value("env.kind", "math"),
     "build_dataset.source.kind='embedded' does not fit env.kind='math'"),
    ("the prompt holds {problem}", evaluate, with_value("template.prompt", "no placeholder"),
     "template: prompt must contain {problem}"),
    ("a files source has train and test", build_dataset, with_value("build_dataset.source", {
        "kind": "files", "files": {"train": ["a.jsonl"]}}), "missing split(s) ['test']"),
    ("a files source lists a file per split", build_dataset, with_value("build_dataset.source", {
        "kind": "files", "files": {"train": [], "test": ["b.jsonl"]}}), "files.train lists no file"),
    ("a files source reads .jsonl or .parquet", build_dataset, with_value("build_dataset.source", {
        "kind": "files", "files": {"train": ["a.csv"], "test": ["b.jsonl"]}}), "['a.csv'] are neither .jsonl"),
    ("a hf source names a dataset", build_dataset, with_value("build_dataset.source", {
        "kind": "hf", "splits": {"train": "train", "test": "test"}}), "name no dataset"),
    ("the answer comes from a column", build_dataset, with_value("build_dataset.source", {
        "kind": "files", "files": {"train": ["a.jsonl"], "test": ["b.jsonl"]}, "columns": {"answer": None}}),
     "build_dataset.source.files.columns: set columns.answer or columns.solution"),
    # the file itself
    ("the top level is a mapping, not a list", report, "- a\n- b\n",
     "bad.yaml: the top level must be a mapping of sections, got list"),
    ("the top level is a mapping, not a word", report, "hello\n",
     "bad.yaml: the top level must be a mapping of sections, got str"),
    ("a YAML syntax error names file:line (tab)", report, "train_base:\n\tsteps: 1\n", "bad.yaml:2: not valid YAML"),
    ("a YAML syntax error names file:line (indent)", train_base, "train_base:\n  steps: 10\n lr: 0.1\n",
     "bad.yaml:3: not valid YAML"),
    ("a YAML syntax error names file:line (open list)", rl_round, "rl:\n  arms: [grpo, mrt_dense\n  seeds: [0]\n",
     "bad.yaml:3: not valid YAML"),
    ("inherit names an existing file", report, "inherit: nothing.yaml\n", "nothing.yaml: no such params file"),
    ("a profile does not inherit from itself", report, "inherit: bad.yaml\n", "inherits from itself"),
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


# ---- missing pipeline folders and unpinned hub models -------------------------------------------

@pytest.mark.parametrize("stage, argv, needle", [
    ("sft_warmstart", [], "models/base holds no model: run train_base first (dvc repro train_base)"),
    ("synthesize_backtracks", [], "models/base holds no model: run train_base first"),
    ("build_star_data", [], "models/warmstart holds no model: run sft_warmstart first"),
    ("rl_start", ["--arm", "grpo", "--seed", "0"], "models/warmstart holds no model: run sft_warmstart first"),
    ("evaluate", [], "models/base holds no model: run train_base first"),
])
def test_a_missing_model_folder_names_the_stage_to_run_without_asking_the_hub(stage, argv, needle, tmp_path,
                                                                               monkeypatch, capsys):
    """A missing models/base once made from_pretrained take "models/base" for a hub id and retry
    the network for a minute; every stage now says which stage to run, at once."""
    import importlib

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(f"tasks.{stage}").main(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_hub_model_needs_a_pinned_revision(tmp_path, monkeypatch, capsys):
    raw = {"env": {"kind": "math"}, "policy": {"init": "pretrained", "model": "some-org/some-model"},
           "template": {"prompt": "Q: {problem}\n<think>\n"},
           "evaluate": {"budgets": [64], "extrapolation_budgets": []},
           "build_dataset": {"source": {"kind": "files", "columns": {"problem": "problem", "answer": "answer"},
                                        "files": {"train": ["t.jsonl"], "test": ["t.jsonl"]}}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train_base.main(["--params", str(path)])
    assert exc.value.code == 2 and "set policy.revision to its commit hash" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


# ---- bad data rows: build_dataset with env.kind math and a files source ---------------------------

N_GOOD = 30  # clean training problems; the bad row is line 31 of train.jsonl (row 30 of the split)
COLUMNS = {"problem": "problem", "answer": "answer", "solution": "solution", "id": "id"}


def good_train_lines() -> str:
    return "".join(json.dumps({"id": f"g{i}", "problem": f"Compute {i} plus {7 * i + 3} in base ten.",
                               "answer": str(8 * i + 3)}) + "\n" for i in range(N_GOOD))


def good_test_lines() -> str:
    return "".join(json.dumps({"id": f"t{i}", "problem": f"How many sides has a polygon with {i + 3} vertices?",
                               "answer": str(i + 3)}) + "\n" for i in range(10))


def math_params_text(max_bad_share: float) -> str:
    """A math profile reading ./train.jsonl and ./test.jsonl (as tests/tasks/test_build_dataset_sources.py)."""
    return yaml.safe_dump({
        "env": {"kind": "math"},
        "policy": {"init": "pretrained", "model": "tiny"},
        "evaluate": {"budgets": [64, 128], "extrapolation_budgets": []},
        "template": {"prompt": "Q: {problem}\n<think>\n"},
        "build_dataset": {"max_bad_share": max_bad_share, "source": {
            "kind": "files", "columns": COLUMNS, "files": {"train": ["train.jsonl"], "test": ["test.jsonl"]}}},
    })


def row(**fields) -> str:
    return json.dumps({"id": "bad"} | fields)


LONG = "x " * 10_001  # past build_dataset.max_problem_chars (20 000) after cleaning
# (rule, the bad line of train.jsonl (str, or bytes as written), the reason it is counted under)
ROWS = [
    ("a row without the problem column", row(answer="1"), "missing_problem"),
    ("a null problem", row(problem=None, answer="1"), "missing_problem"),
    ("a problem that is a number", row(problem=17, answer="1"), "missing_problem"),
    ("a problem that is a list", row(problem=["What is one?"], answer="1"), "missing_problem"),
    ("a whitespace-only problem", row(problem="   \t \n ", answer="1"), "missing_problem"),
    ("a problem of non-breaking and ideographic spaces", row(problem="\u00a0\u3000", answer="1"), "missing_problem"),
    ("a problem of control characters only", row(problem="\u0000\u0001\u0007", answer="1"), "missing_problem"),
    ("a row without the answer column", row(problem="What is one?"), "missing_answer"),
    ("an empty answer", row(problem="What is one?", answer=""), "missing_answer"),
    ("a null answer", row(problem="What is one?", answer=None), "missing_answer"),
    ("a whitespace-only answer", row(problem="What is one?", answer="  \t "), "missing_answer"),
    ("an answer that is a boolean", row(problem="What is one?", answer=True), "missing_answer"),
    ("an answer that is a list", row(problem="What is one?", answer=[1]), "missing_answer"),
    ("an answer that is an object", row(problem="What is one?", answer={"value": 1}), "missing_answer"),
    ("an answer of control characters only", row(problem="What is one?", answer="\u0000\u0001"), "missing_answer"),
    ("an answer of zero-width and bidi marks only", row(problem="What is one?", answer="\u200b\u202e\ufeff"),
     "missing_answer"),
    ("no answer and a solution without a box", row(problem="What is one?", solution="It is one."), "missing_answer"),
    ("a JSON NaN answer", '{"id": "bad", "problem": "What is 0/0?", "answer": NaN}', "unparseable_answer"),
    ("a JSON Infinity answer", '{"id": "bad", "problem": "What is 1/0?", "answer": Infinity}', "unparseable_answer"),
    ("a JSON -Infinity answer", '{"id": "bad", "problem": "What is -1/0?", "answer": -Infinity}',
     "unparseable_answer"),
    ("an answer with unbalanced braces", row(problem="What is half?", answer="\\frac{1}{2"), "unparseable_answer"),
    ("a solution whose box never closes", row(problem="What is one?", solution="So \\boxed{1"),
     "unparseable_answer"),
    ("a problem past max_problem_chars", row(problem=LONG, answer="1"), "too_long"),
    ("an answer past max_answer_chars", row(problem="What is a big number?", answer="1" * 501), "too_long"),
    ("a line that is not UTF-8", b'{"id": "bad", "problem": "caf\xe9 au lait?", "answer": "1"}', "unreadable"),
    ("a line that is not JSON", "What is one? 1", "unreadable"),
    ("a truncated JSON line", '{"id": "bad", "problem": "What is one?", "answ', "unreadable"),
    ("a JSON array line", json.dumps(["What is one?", "1"]), "unreadable"),
    ("a JSON string line", json.dumps("What is one?"), "unreadable"),
    ("a JSON null line", "null", "unreadable"),
    ("a JSON number line", "42", "unreadable"),
    ("a NUL byte after the object", row(problem="What is one?", answer="1").encode() + b"\x00", "unreadable"),
    ("a key given twice (JSON would keep the last)", '{"id": "bad", "problem": "What is one?", "answer": "2", '
     '"answer": "1"}', "unreadable"),
    ("a lone surrogate escape (not Unicode text)", '{"id": "bad", "problem": "What is \\ud800?", "answer": "1"}',
     "unreadable"),
    ("an integer past Python's digit limit", '{"id": "bad", "problem": "What is big?", "answer": ' + "9" * 5000 + "}",
     "unreadable"),
]


def write_source(root: Path, bad_line: str | bytes) -> None:
    line = bad_line if isinstance(bad_line, bytes) else bad_line.encode("utf-8")
    (root / "train.jsonl").write_bytes(good_train_lines().encode() + line + b"\n")
    (root / "test.jsonl").write_text(good_test_lines())
    (root / "strict.yaml").write_text(math_params_text(max_bad_share=0.0))
    (root / "params.yaml").write_text(math_params_text(max_bad_share=0.1))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One MLflow store for the row cases (a fresh SQLite store costs seconds each); given by
    MRT_TRACKING_URI, so a case's workspace holds only data/."""
    from mrt_lib.tracking import _configure

    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the experiment's artifacts go to root/mlruns
        _configure(uri, "mrt")
    return uri


@pytest.mark.parametrize("rule, line, reason", ROWS, ids=[r[0] for r in ROWS])
def test_a_bad_row_is_a_counted_reject_named_by_file_and_line(rule, line, reason, tmp_path, monkeypatch, capsys,
                                                              tracking_uri):
    write_source(tmp_path, line)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRT_TRACKING_URI", tracking_uri)
    where = f"train.jsonl:{N_GOOD + 1}"
    # past max_bad_share (0): the stage fails naming the row, and writes nothing
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--params", "strict.yaml"])
    assert exc.value.code == 1, rule
    err = capsys.readouterr().err
    assert "1 bad rows" in err and f"train row {N_GOOD} ({where}): {reason}" in err, (rule, err)
    assert snapshot(tmp_path) == before, rule
    # within max_bad_share: the row is counted in meta.json, by reason and file:line, and kept out
    build_dataset.main(["--params", "params.yaml"])
    meta = json.loads((tmp_path / "data" / "dataset" / "meta.json").read_text())
    bad = meta["cleaning"]["bad"]
    assert bad["count"] == 1 and bad["by_reason"][reason] == 1, (rule, bad)
    assert bad["rows"] == [{"split": "train", "row": N_GOOD, "where": where, "reason": reason}], rule
    assert meta["cleaning"]["rows_read"]["train"] == N_GOOD + 1
    assert meta["counts"]["train"] + meta["counts"]["val"] == N_GOOD and meta["counts"]["test"] == 10, rule
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mrt", "data", "params.yaml", "strict.yaml", "test.jsonl",
                                                          "train.jsonl"], rule  # .mrt: the stage's lock


def test_a_byte_order_mark_opening_the_file_is_not_a_bad_row(tmp_path, monkeypatch, tracking_uri):
    write_source(tmp_path, row(problem="What is one?", answer="1"))
    (tmp_path / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "train.jsonl").read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRT_TRACKING_URI", tracking_uri)
    build_dataset.main(["--params", "strict.yaml"])  # max_bad_share 0: no bad row at all
    meta = json.loads((tmp_path / "data" / "dataset" / "meta.json").read_text())
    assert meta["cleaning"]["bad"]["count"] == 0 and meta["counts"]["train"] + meta["counts"]["val"] == N_GOOD + 1


def test_a_repeated_problem_is_removed_and_named(tmp_path, monkeypatch, tracking_uri):
    write_source(tmp_path, row(id="other", problem="COMPUTE 0 plus  3 in base ten.", answer="3"))  # g0 again
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRT_TRACKING_URI", tracking_uri)
    build_dataset.main(["--params", "strict.yaml"])
    meta = json.loads((tmp_path / "data" / "dataset" / "meta.json").read_text())
    assert meta["cleaning"]["bad"]["count"] == 0
    assert meta["cleaning"]["duplicates"]["train"] == {"removed": 1, "rows": [f"train.jsonl:{N_GOOD + 1}"]}


def test_a_repeated_id_fails_the_stage_naming_the_row(tmp_path, monkeypatch, capsys):
    write_source(tmp_path, row(id="g0", problem="A different problem entirely?", answer="1"))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        build_dataset.main(["--params", "params.yaml"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert f"id 'g0' of train problem at train.jsonl:{N_GOOD + 1} is also used in train" in err, err
    assert snapshot(tmp_path) == before


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 40 and len(ROWS) >= 20
    assert len({c[0] for c in CASES}) == len(CASES) and len({r[0] for r in ROWS}) == len(ROWS)

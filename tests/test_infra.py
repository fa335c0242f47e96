"""DeepSpeed and Accelerate configs in infra/, validated offline: no GPU, no process group.

The DeepSpeed files use "auto" values (filled by transformers' Trainer from its arguments, as TRL
does); the test fills them with transformers' own ``HfTrainerDeepSpeedConfig`` for the GPU
profile's numbers, then validates the result with DeepSpeed's ``DeepSpeedConfig`` while
``deepspeed.comm`` reports a world of 8 ranks.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED = REPO / "infra" / "deepspeed"
ACCELERATE = REPO / "infra" / "accelerate"
HIDDEN_1P5B = 1536  # DeepSeek-R1-Distill-Qwen-1.5B's hidden size


def training_args(world_size=8, micro=4, accumulation=8):
    """The attributes HfTrainerDeepSpeedConfig reads from TrainingArguments (8 x 4 x 8 = 256)."""
    return SimpleNamespace(world_size=world_size, per_device_train_batch_size=micro,
                           gradient_accumulation_steps=accumulation, max_grad_norm=1.0, learning_rate=1e-6,
                           adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.0,
                           save_on_each_node=False, fp16=False, fp16_full_eval=False, bf16=True,
                           bf16_full_eval=False, get_warmup_steps=lambda n: 0)


def filled(path: Path, args) -> dict:
    """The config as the Trainer would hand it to DeepSpeed (every "auto" replaced)."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    try:
        hf = HfTrainerDeepSpeedConfig(str(path))
        hf.trainer_config_process(args)
        hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=HIDDEN_1P5B)), 100)
        return hf.config
    finally:
        # HfDeepSpeedConfig registers itself globally (from_pretrained would then start ZeRO-3
        # partitioning in later tests): undo that.
        unset_hf_deepspeed_config()


def autos(node, where=""):
    if isinstance(node, dict):
        return [a for k, v in node.items() for a in autos(v, f"{where}.{k}")]
    return [where] if node == "auto" else []


@pytest.fixture
def eight_ranks(monkeypatch):
    import deepspeed.runtime.config as ds_config

    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(ds_config.dist, "get_world_size", lambda *a, **k: 8)
    return ds_config.DeepSpeedConfig


@pytest.mark.parametrize("name, stage", [("zero3.json", 3), ("zero2.json", 2)])
def test_deepspeed_config_is_valid_for_eight_ranks(name, stage, eight_ranks):
    raw = json.loads((DEEPSPEED / name).read_text())  # plain JSON (DeepSpeed also reads hjson)
    config = filled(DEEPSPEED / name, training_args())
    assert autos(config) == []
    ds = eight_ranks(config)
    assert ds.world_size == 8
    assert (ds.train_batch_size, ds.train_micro_batch_size_per_gpu, ds.gradient_accumulation_steps) == (256, 4, 8)
    assert ds.zero_optimization_stage == stage == raw["zero_optimization"]["stage"]
    assert ds.bfloat16_config.enabled and not ds.float16_config.enabled
    assert ds.gradient_clipping == 1.0
    if stage == 3:
        assert ds.zero_config.prefetch_bucket_size == int(0.9 * HIDDEN_1P5B**2)
        assert ds.zero_config.gather_16bit_weights_on_model_save


def test_a_batch_that_does_not_divide_is_refused(eight_ranks):
    config = filled(DEEPSPEED / "zero3.json", training_args())
    config["train_batch_size"] = 250  # not 8 ranks x 4 x 8
    with pytest.raises(AssertionError, match="train_batch_size"):
        eight_ranks(config)


@pytest.mark.parametrize("name, ds_file", [("zero3_8gpu.yaml", "zero3.json"), ("zero2_8gpu.yaml", "zero2.json")])
def test_accelerate_config(name, ds_file):
    from accelerate.commands.config.config_args import ClusterConfig

    path = ACCELERATE / name
    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader: unknown keys raise
    assert cfg.distributed_type.value == "DEEPSPEED"
    assert (cfg.num_processes, cfg.num_machines, cfg.mixed_precision, cfg.use_cpu) == (8, 1, "bf16", False)
    ds_path = cfg.deepspeed_config["deepspeed_config_file"]
    assert ds_path == f"infra/deepspeed/{ds_file}" and (REPO / ds_path).is_file()
    assert cfg.deepspeed_config["zero3_init_flag"] is (ds_file == "zero3.json")
    raw = yaml.safe_load(path.read_text())
    # Set in the DeepSpeed file, so accelerate would ignore (and warn about) them here.
    assert not {"zero_stage", "gradient_accumulation_steps", "gradient_clipping"} & set(raw["deepspeed_config"])


def test_accelerate_loader_would_catch_a_typo(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text((ACCELERATE / "zero3_8gpu.yaml").read_text().replace("num_processes", "num_procs"))
    with pytest.raises(ValueError, match="unknown keys"):
        ClusterConfig.from_yaml_file(str(bad))


def test_gpu_profile_validates_with_the_paper_settings():
    from mrt_lib.config import load_params

    path = REPO / "profiles" / "gpu_r1_distill_1p5b.yaml"
    params = load_params(path)
    assert (params.env.kind, params.policy.init, params.policy.model) == (
        "math", "pretrained", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    assert params.generation.backend == "vllm" and params.evaluate.budgets == [4096, 8192, 12288, 16384]
    template = params.template.spec()
    assert template.prompt.endswith("<｜Assistant｜><think>\n") and template.termination_text.endswith("\\boxed{")
    source = params.build_dataset.source
    assert source.split_config("test").dataset == "HuggingFaceH4/MATH-500"
    assert source.split_config("test").columns.id == "unique_id" and source.split_config("train").columns.id is None
    text = path.read_text()
    rl = params.rl  # the paper's settings: lr 1e-6, 4 generations per prompt, temperature 0.9, batch 256
    assert (rl.lr, rl.group_size, rl.temperature, rl.prompts_per_step * rl.group_size) == (1e-6, 4, 0.9, 256)
    assert rl.start == "base" and params.meta_prover.estimator == "sampled"
    assert "TODO" not in text

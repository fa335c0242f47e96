"""The models a round runs besides the one it trains: what generates its rollouts, and which
model is its meta-prover (``meta_prover.policy``, METHOD.md (1)).

``round_start`` (default): a frozen copy of the round's start policy, the paper's offline form:
J(mu | c) of a prefix does not move while the policy trains, so every step's progress is read
against the same prover. ``live``: the policy being trained, at each step (the online form).
``base`` / ``folder``: another frozen model (the PAV "prover policy" idea), which must share the
policy's tokenizer: J is read on the rollouts' own token ids.
"""

from __future__ import annotations

from pathlib import Path

from mrt_lib.common import model_hash, read_json
from mrt_lib.generation import make_backend
from mrt_lib.generation.hf import HFBackend
from mrt_lib.modeling import load_policy
from mrt_lib.rl.batch import ledger_of


def rollout_backend(params, cfg, model, tok, start: Path):
    """What generates the round's rollouts: the training model itself on ``hf`` (CPU or its
    GPU), or vLLM (``rl.backend: vllm``) loaded from the round's start weights and synced after
    every update."""
    if cfg.backend == "hf":
        return HFBackend(model, tok)
    gen = params.generation
    return make_backend("vllm", str(start), gpu_memory_utilization=gen.vllm_gpu_memory_utilization,
                        dtype=gen.vllm_dtype)


class ProverError(ValueError):
    """The configured prover cannot read this round's rollouts."""


def prover_path(meta_prover, paths, start: Path) -> Path | None:
    """The folder the prover loads, or None for ``live`` (the training policy itself)."""
    if meta_prover.policy == "live":
        return None
    if meta_prover.policy == "round_start":
        return start
    folder = paths.model("base") if meta_prover.policy == "base" else paths.root / meta_prover.folder
    if not (folder / "config.json").exists():
        raise ProverError(f"meta_prover.policy={meta_prover.policy}: {folder} holds no model (config.json); "
                          "run the stage that writes it, or set meta_prover.folder to a model folder")
    return folder


def prover_engine(meta_prover, paths, start: Path, engine, make_engine, tokenizer, device):
    """The engine that reads J: ``engine`` itself for ``live``, else one over a frozen model on
    ``device`` (``make_engine(backend)`` builds it with the round's environment); and what
    identifies it (``live``, or the hash of the frozen model's weights)."""
    folder = prover_path(meta_prover, paths, start)
    if folder is None:
        return engine, "live"
    what = f"meta_prover.policy={meta_prover.policy}"
    return frozen_engine(folder, make_engine, tokenizer, device, what), model_hash(folder)


def frozen_engine(folder: Path, make_engine, tokenizer, device, what: str = "the frozen model"):
    """An engine over the model in ``folder``, never trained, which must share ``tokenizer``."""
    model, tok = load_policy(folder)
    if tok.get_vocab() != tokenizer.get_vocab():
        raise ProverError(f"{what}: {folder}'s tokenizer differs from the policy's (the prover reads the "
                          "rollouts' token ids); use a checkpoint of the same lineage, e.g. the round's start "
                          "or an earlier round's model")
    for p in model.parameters():
        p.requires_grad_(False)
    return make_engine(HFBackend(model.to(device), tok))


def round_model(paths, arm: str, seed: int, n: int) -> Path:
    """The policy a round ``n + 1`` starts from: round ``n``'s model, or ``rl.start`` for n = 0
    (``rl/<arm>/s<seed>/r0/start.json``, written by the ``rl_start`` stage, names it)."""
    folder = paths.rl_round(arm, seed, n)
    if n == 0:
        pointer = read_json(folder / "start.json")
        return paths.model(pointer["model"])
    if not (folder / "model" / "config.json").exists():
        raise FileNotFoundError(f"{folder}/model is missing: run round {n} of {arm} (seed {seed}) first (dvc repro)")
    return folder / "model"


def match_target(paths, cfg, seed: int, round_n: int) -> dict:
    """What a compute-matched round must reach: round ``round_n`` of ``rl.match_target`` (same
    seed), its ledger from its metrics."""
    metrics = paths.rl_round(cfg.match_target, seed, round_n) / "metrics.json"
    if not metrics.exists():
        raise FileNotFoundError(f"{metrics} is missing: run round {round_n} of {cfg.match_target} (seed {seed}) "
                                "first (dvc repro); its compute is the matched run's target")
    return {"unit": cfg.match_compute, "arm": cfg.match_target, "ledger": ledger_of(read_json(metrics)["summary"])}

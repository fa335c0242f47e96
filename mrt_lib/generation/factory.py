"""Making a backend by name: ``hf`` (transformers, CPU or CUDA) or ``vllm`` (GPU only); a
missing vLLM is reported before anything is written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from mrt_lib.common import missing_model_message
from mrt_lib.generation.base import BackendUnavailable, GenerationBackend

VLLM_HINT = (
    "the 'vllm' generation backend needs vLLM, which is CUDA-only: on a GPU machine run "
    "`.venv/bin/pip install -e '.[gpu]'`, or set generation.backend: hf in params.yaml"
)


def _hf(model_path: str, **options: Any) -> GenerationBackend:
    from mrt_lib.generation.hf import HFBackend  # imported on use: each backend only where chosen

    return HFBackend.from_pretrained(model_path, **options)


def _vllm(model_path: str, **options: Any) -> GenerationBackend:
    from mrt_lib.generation.vllm_backend import VLLMBackend

    return VLLMBackend(model_path, **options)


# backend name -> (the module it needs, how to install it, how to make it)
BACKENDS: dict[str, tuple[str | None, str, Callable[..., GenerationBackend]]] = {
    "hf": (None, "", _hf), "vllm": ("vllm", VLLM_HINT, _vllm)}


def require_backend(name: str) -> None:
    """Raise ``BackendUnavailable`` when backend ``name`` cannot run on this machine."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown generation backend {name!r}: use one of {', '.join(BACKENDS)}")
    needs, hint, _ = BACKENDS[name]
    if needs is not None and importlib.util.find_spec(needs) is None:
        raise BackendUnavailable(hint)


def make_backend(name: str, model_path: str, **options: Any) -> GenerationBackend:
    """The backend ``name`` for the model at ``model_path`` (a folder or a hub id).

    Fails at once with ``BackendUnavailable`` (before any output is written) when ``vllm`` is
    asked for on a machine without it."""
    require_backend(name)
    return BACKENDS[name][2](model_path, **options)


def build_backend_or_exit(stage: str, gen, model_path, check: Callable | None = None) -> GenerationBackend:
    """``build_backend`` for a stage entry point: a missing backend or model exits with status
    2 and the message, before the stage writes or logs anything."""
    try:
        return build_backend(gen, model_path, check)
    except (BackendUnavailable, FileNotFoundError) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_backend(gen, model_path, check: Callable | None = None) -> GenerationBackend:
    """The backend ``gen`` (the ``generation`` section) configures, for ``model_path`` (a
    pipeline folder or a hub id), its tokenizer passed to ``check`` (which raises on what it
    cannot write). Raises ``BackendUnavailable`` or ``FileNotFoundError`` before anything is
    written."""
    require_backend(gen.backend)  # a missing vLLM is reported before a missing model
    if isinstance(model_path, Path) and not (model_path / "config.json").exists():
        raise FileNotFoundError(missing_model_message(model_path))
    backend = make_backend(gen.backend, str(model_path), gpu_memory_utilization=gen.vllm_gpu_memory_utilization,
                           dtype=gen.vllm_dtype)
    if check is not None:
        check(backend.tokenizer)
    return backend

"""A stand-in for the vLLM engine (which needs CUDA): its own copy of the round's start weights,
generating through the HF backend, with vLLM's ``sync_weights``. It records every sync in
memory and, when ``MRT_FAKE_VLLM_LOG`` names a file, as one JSON line per sync with the rank and
a hash of the engine's weights (for the launched processes of a data-parallel round).

``tests/fake_vllm_site/sitecustomize.py`` installs it in every Python process started with
``MRT_FAKE_VLLM=1`` and that folder on ``PYTHONPATH``."""

from __future__ import annotations

import hashlib
import json
import os

LOG_ENV = "MRT_FAKE_VLLM_LOG"


def weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FakeVllm:
    made: list = []

    def __new__(cls, name, path, **kwargs):
        from mrt_lib.generation.hf import HFBackend
        from mrt_lib.modeling import load_policy

        model, tok = load_policy(path)
        backend = HFBackend(model, tok)
        backend.synced = []

        def sync_weights(named_parameters):
            state = dict(model.named_parameters())
            for key, tensor in named_parameters:
                state[key].data.copy_(tensor)
            backend.synced.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            if os.environ.get(LOG_ENV):
                with open(os.environ[LOG_ENV], "a") as f:
                    f.write(json.dumps({"rank": int(os.environ.get("RANK", "0")), "sync": len(backend.synced),
                                        "weights": weights_hash(model)}) + "\n")

        backend.sync_weights = sync_weights
        FakeVllm.made.append(backend)
        return backend


def install() -> None:
    """Replace ``make_backend`` before a stage module binds it (``from mrt_lib.generation import``)."""
    import mrt_lib.generation

    mrt_lib.generation.make_backend = FakeVllm

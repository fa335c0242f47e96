"""The generation engine: one small interface, two backends (``hf`` on CPU/GPU, ``vllm`` on GPU).

Stages pick the backend with ``generation.backend`` in params and only talk to
``GenerationBackend``. Rollouts with interventions (environment feedback, forced termination,
budget forcing) are in ``rollouts``; meta-prover probes with shared prefixes in ``prefix_tree``.
"""

from mrt_lib.generation.base import BackendUnavailable, Completion, GenerationBackend, SamplingParams
from mrt_lib.generation.factory import build_backend, build_backend_or_exit, make_backend, require_backend
from mrt_lib.generation.prefix_tree import ProbeJob

__all__ = ["BackendUnavailable", "Completion", "GenerationBackend", "ProbeJob", "SamplingParams", "build_backend",
           "build_backend_or_exit",
           "make_backend", "require_backend"]

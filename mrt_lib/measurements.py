"""Where measurements go: one JSON per benchmark or tuning run, with the machine it ran on."""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from mrt_lib.common import write_json_atomic


def machine(threads: int) -> dict:
    """The machine a measurement was taken on (timings mean nothing without it)."""
    return {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
            "threads": threads, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def record(out: str | Path, threads: int, **content) -> dict:
    """Write ``{"machine": ..., **content}`` to ``out`` (atomically) and return the machine."""
    info = machine(threads)
    write_json_atomic(Path(out), {"machine": info, **content}, sort_keys=False)
    print(f"machine: {info}")
    return info


class Phases:
    """Wall seconds spent in named phases of a stage (``with phases("generate"): ...``), summed
    over every entry: where a stage's time goes, for MLflow and the benchmarks (never in outputs,
    which must not depend on the clock)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

"""One process's share of a round's sampling: its contiguous part of the starts, sampled and
probed where they are (``mrt_lib/distributed.py``: shards, gathering). On one process: all of it."""

from __future__ import annotations

import math
from contextlib import nullcontext

from mrt_lib.distributed import all_sum, gather, rank_and_size, shard
from mrt_lib.generation.curves import curves_for


def sample_shard(engine, starts: list, budget: int, seed: int, j_seed: int, meta_prover, batch_size: int,
                 unit: int = 1, desc: str | None = None, phases=None, prover=None,
                 probe_share: float = 1.0) -> tuple[list, list, range]:
    """This process's rollouts of ``starts`` and their J curves, with the range of ``starts`` they
    cover. Shards are whole units of ``unit`` starts (a GRPO group: its G continuations), so a
    group never spans processes; every rollout is seeded by its index in ``starts``
    (``run_from(first=)``), so the draws are those of one process. ``phases``
    (``mrt_lib.measurements.Phases``) times the ``generate`` and ``probe`` parts; ``prover`` reads
    J (``mrt_lib.rl.prover``), on the ``probe_share`` of the rollouts ``probe_mask`` picks."""
    timed = phases or (lambda name: nullcontext())
    units = shard(len(starts) // unit, *rank_and_size())
    own = range(units.start * unit, units.stop * unit)
    with timed("generate"):
        rolls = engine.run_from([starts[i] for i in own], budget, seed, batch_size, desc=desc, first=own.start)
    with timed("probe"):  # probes stay with the rollout's process
        curves = curves_for(engine, rolls, meta_prover, j_seed, own.start, prover, probe_mask(own.start, len(rolls),
                                                                                           probe_share))
    return rolls, curves, own


def probe_mask(first: int, n: int, share: float) -> list[bool]:
    """Which of rollouts ``first .. first + n - 1`` (indices in the whole step) the meta-prover
    reads when only ``share`` of them are: evenly spread (every 1/share-th), and the same
    whichever process holds them."""
    return [math.floor((i + 1) * share) > math.floor(i * share) for i in range(first, first + n)]


def grading_counts(meter) -> dict[str, int]:
    """``GradingMeter.take()`` summed over the processes."""
    counts = meter.take()
    keys = sorted(counts)
    return dict(zip(keys, (int(v) for v in all_sum([counts[k] for k in keys]))))


def phase_seconds(phases) -> dict:
    """Process 0's ``seconds_<phase>`` and every process's phases (``seconds_by_process``)."""
    seconds = gather([phases.seconds])
    return {**{f"seconds_{k}": v for k, v in seconds[0].items()}, "seconds_by_process": seconds}

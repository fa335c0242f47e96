"""Data parallelism across the processes of one training stage (``accelerate launch``).

The rule everywhere: work is split into contiguous shards by a deterministic rule (``shard``),
every process does its shard, and what the stage records is gathered back in the order of the
whole (``gather``), so every process holds the same records and process 0 alone writes them.
Outside a launched group (one process) every helper is the identity.

Launching: a stage whose ``resources.processes`` is N > 1 re-executes itself under
``accelerate launch --num_processes N`` (``relaunch``). On a machine without CUDA the group
is formed on gloo only with ``ACCELERATE_USE_CPU=1`` (measured: without it ``--num_processes 2``
starts one process, and ``--multi_gpu`` starts two that each report no distributed type), so
``relaunch`` sets it there. Every rank then checks that the world it joined is the one it
expects (``check_world``).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from datetime import timedelta
from typing import Any, Sequence

import torch

# a rank whose peer died waits this long in a collective before it fails (not torch's 10 min)
GROUP_TIMEOUT = timedelta(seconds=int(os.environ.get("MRT_GROUP_TIMEOUT_S", "60")))
LAUNCHED_ENV = "MRT_LAUNCHED"  # set by relaunch in the launched processes: never launch twice
CONFIG_ENV = "MRT_ACCELERATE_CONFIG"  # an Accelerate config file for the launch (DeepSpeed on GPUs)


class WorldError(RuntimeError):
    """The processes of a stage do not form the group its params ask for."""


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) outside an initialised group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def launched_world() -> tuple[int, int]:
    """(rank, number of processes) as the launcher set them, before any group exists ((0, 1) when
    not launched): for what must happen on one process only before the group forms, e.g. the
    MLflow run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(n: int, rank: int, size: int) -> range:
    """The contiguous part of ``range(n)`` that ``rank`` of ``size`` owns. ``n`` must be a
    multiple of ``size``: every process then runs the same number of micro-batches, which
    gradient accumulation and DeepSpeed need (a process with one more would wait forever)."""
    if n % size:
        raise WorldError(f"{n} items cannot be split evenly over {size} processes: make it a multiple of "
                         f"{size} or change resources.processes")
    per = n // size
    return range(rank * per, (rank + 1) * per)


def gather(items: Sequence[Any]) -> list[Any]:
    """Every process's ``items`` (picklable), concatenated in rank order, on every process."""
    rank, size = rank_and_size()
    if size == 1:
        return list(items)
    parts: list[Any] = [None] * size
    torch.distributed.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the processes (float64, so counts stay exact)."""
    _, size = rank_and_size()
    if size == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()


def check_world(stage: str, expected: int, actual: int) -> None:
    """Every rank: the group it joined has the size the stage's params ask for."""
    if actual != expected:
        raise WorldError(
            f"resources.processes is {expected} but {actual} process(es) joined: run it through "
            f"`python -m tasks.{stage}` (it launches itself), or `ACCELERATE_USE_CPU=1 accelerate launch "
            f"--num_processes {expected} -m tasks.{stage}` on a machine without CUDA")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(module: str, argv: Sequence[str], processes: int) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command (and environment) that runs ``python -m module argv``
    on ``processes`` processes of this machine."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable) + os.pathsep
                              + os.environ.get("PATH", "")) or "accelerate"
    env = {**os.environ, LAUNCHED_ENV: "1"}
    cmd = [accelerate, "launch", "--num_processes", str(processes), "--num_machines", "1",
           "--main_process_port", str(free_port())]
    config = os.environ.get(CONFIG_ENV)
    if config:  # e.g. infra/accelerate/zero3_8gpu.yaml: DeepSpeed, precision and the rest from the file
        cmd += ["--config_file", config]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():  # gloo on CPU forms only with this (see the module doc)
        env["ACCELERATE_USE_CPU"] = "1"
    return cmd + ["-m", module, *argv], env


def die_with_launcher() -> None:
    """In a launched rank: be killed when the launcher dies. torchrun starts every rank in its own
    session, so a SIGKILL of the launcher's process group would leave the ranks running (and
    writing outputs) after the stage was killed; Linux's parent-death signal ends them too."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the call: nobody is left to send it
        os._exit(1)


def launch_as(stage: str, argv: Sequence[str] | None, processes: int, items: int) -> None:
    """At a stage's entry point: refuse a split that cannot be even (exit 2, before anything
    starts), then ``relaunch`` the stage on ``processes`` processes."""
    try:
        shard(items, 0, processes)
    except WorldError as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    relaunch(f"tasks.{stage}", sys.argv[1:] if argv is None else argv, processes)


def relaunch(module: str, argv: Sequence[str], processes: int) -> None:
    """Replace this process by ``accelerate launch`` of the same stage on ``processes``
    processes, unless it is one already (or one process is asked for). ``exec`` keeps the pid,
    so whoever started the stage (DVC, a flow, a kill) holds the launcher, and the launcher's
    children are in its process group."""
    if processes <= 1 or os.environ.get(LAUNCHED_ENV) or "LOCAL_RANK" in os.environ:
        return
    cmd, env = launch_command(module, argv, processes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)

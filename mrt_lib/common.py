"""Shared edges of every stage: process set-up, atomic writes, hashing, paths."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

# What every entry point sets (with setdefault: a user's own choice wins): no library phones home.
QUIET_ENV = {"MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
             "HF_HUB_DISABLE_TELEMETRY": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "TOKENIZERS_PARALLELISM": "false"}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def entry_environment(needs_hub: bool = False) -> None:
    """Called first by every entry point's ``main()`` (never on import, so a library user's
    process is left alone): telemetry off, and unless this run may download from the model hub
    (``needs_hub``: a hub id in ``policy.model`` or in a dataset source), the hub is off too, so
    a missing local folder fails at once instead of after a minute of retries to the network.
    huggingface_hub reads ``HF_HUB_OFFLINE`` when first imported (the stage modules import
    transformers), so its constant is set to match."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if needs_hub:
        return
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and os.environ["HF_HUB_OFFLINE"].strip().lower() in ("1", "true", "yes", "on"):
        hub.HF_HUB_OFFLINE = True


def is_hub_id(name: str | None) -> bool:
    """A model or dataset name that is not a local folder or file (so from_pretrained would go to the hub)."""
    return bool(name) and not Path(name).expanduser().exists()


PRODUCERS = {"base": "train_base", "warmstart": "sft_warmstart"}  # pipeline model folder -> its stage


def missing_model_message(path: str | Path) -> str:
    """What to say when a pipeline folder holds no model: which stage writes it."""
    p = Path(path)
    producer = PRODUCERS.get(p.name) or ("rl_round" if p.name == "model" and "rl" in p.parts else None)
    hint = (f"run {producer} first (dvc repro {producer})" if producer
            else "run the stage that writes it first (dvc repro)")
    return f"{path} holds no model: {hint}"


def require_model(stage: str, path: str | Path) -> None:
    """At an entry point: exit 2 naming the stage to run when ``path`` holds no saved model
    (rather than letting from_pretrained take the folder name for a hub id)."""
    if not (Path(path) / "config.json").is_file():
        print(f"{stage}: {missing_model_message(path)}", file=sys.stderr)
        raise SystemExit(2)


def setup_process(threads: int, seed: int) -> None:
    """Fix the torch thread count and seed every generator, so a stage gives the same
    numbers whichever path (DVC or Prefect) runs it."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from explicit parts (stage seed, step, budget, ...)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Paths:
    """Where the stages read and write, relative to ``root`` (the repository by default)."""

    root: Path = Path(".")

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "dataset"

    @property
    def base_model(self) -> Path:
        return self.root / "models" / "base"

    @property
    def checkpoints(self) -> Path:  # resume state of long jobs; not a DVC output (DVC wipes those)
        return self.root / "checkpoints"

    @property
    def backtracks(self) -> Path:
        return self.root / "data" / "backtracks"

    @property
    def star(self) -> Path:
        return self.root / "data" / "star"

    @property
    def warmstart_model(self) -> Path:
        return self.root / "models" / "warmstart"

    def model(self, name: str) -> Path:
        """The folder of a pipeline model by name ("base", "warmstart")."""
        folders = {"base": self.base_model, "warmstart": self.warmstart_model}
        if name not in folders:
            raise ValueError(f"unknown model {name!r}: one of {sorted(folders)}")
        return folders[name]

    @property
    def rl(self) -> Path:
        return self.root / "rl"

    def rl_round(self, arm: str, seed: int, n: int) -> Path:
        """Outputs of RL round ``n`` of ``arm`` with ``seed`` (round 0: where round 1 starts)."""
        return self.rl / arm / f"s{seed}" / f"r{n}"

    @property
    def eval_dir(self) -> Path:
        return self.root / "data" / "eval"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


@contextmanager
def exit_on(errors: type[Exception] | tuple[type[Exception], ...], stage: str, code: int) -> Iterator[None]:
    """At a stage's entry point: an expected failure becomes one line on stderr naming the stage,
    and exit status ``code`` (2: bad input, 1: the run failed), instead of a traceback."""
    try:
        yield
    except errors as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        raise SystemExit(code) from None


KILL_AT_ENV = "MRT_TEST_KILL_AT"
HOLD_AT_ENV = "MRT_TEST_HOLD_AT"  # test hook: the process stops at this point until something kills it
_kill_passes: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """Test hook: the process SIGKILLs itself here when ``MRT_TEST_KILL_AT`` names this point
    (``name``, or ``name@n`` for its n-th pass), so that kill tests are real and deterministic:
    no sleeps, no races. Unset (every normal run) it costs one environment lookup."""
    if os.environ.get(HOLD_AT_ENV) == name:  # wait here until killed (a kill from outside, no race)
        while True:
            time.sleep(1)
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    _kill_passes[name] += 1
    point, _, nth = wanted.partition("@")
    if point == name and _kill_passes[name] == int(nth or 1):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


LOCKS = Path(".mrt") / "locks"  # in the workspace; git-ignored
_held_locks: dict[str, int] = {}  # lock file -> descriptor, for this process (re-entrant)


class LockedError(RuntimeError):
    """Another live process holds the lock."""


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block, or raise ``LockedError`` at once
    naming ``what`` and the holder. The kernel drops the lock when its process dies, so a killed
    run never leaves a stale one; taking it again in the same process is a no-op."""
    import fcntl

    key = str(Path(path).resolve())
    if key in _held_locks:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LockedError(f"{what} is already running ({holder}): wait for it to finish or stop it, "
                          f"then run again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    _held_locks[key] = fd
    try:
        yield
    finally:
        del _held_locks[key]
        os.close(fd)


def _temp_prefix(name: str) -> str:
    """Temporary siblings are ``.<name>.tmp-<host>-<pid>-<random>``: hidden, ignored by DVC
    (``.dvcignore``), and traceable to the process that made them."""
    return f".{name}.tmp-{socket.gethostname()}-"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove temporary siblings of ``target`` left by killed processes of this host (their pid
    is gone); a live writer's, or another host's (shared disks), stay. Returns what was removed."""
    removed = []
    prefix = _temp_prefix(target.name)
    for tmp in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``target`` only if the block succeeds.

    Works for files and directories, so a killed stage never leaves a half-written output; what
    a killed one left beside ``target`` is removed the next time ``target`` is written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(target.name)}{os.getpid()}-", dir=target.parent)) / target.name
    try:
        yield tmp
        kill_point(f"atomic_path.{target.name}")
        if target.is_dir() and not target.is_symlink():
            # move the old folder aside first: a kill between the two renames leaves both on disk
            os.replace(target, tmp.parent / f"{target.name}.old")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: Path, obj: Any, sort_keys: bool = True) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def jsonl_text(rows: Iterable[dict]) -> str:
    """Canonical JSONL (sorted keys), so equal rows give equal bytes and equal hashes."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def read_json(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def model_hash(path: str | Path) -> str:
    """A short content hash of a saved model's weights (every safetensors shard), for provenance
    and for telling checkpoints apart; "unknown" when the folder holds none (e.g. a hub id)."""
    shards = sorted(Path(path).glob("*.safetensors"))
    if not shards:
        return "unknown"
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(shard.read_bytes())
    return digest.hexdigest()[:16]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


NOT_APPLICABLE = "not_applicable.json"
WARMSTART_SCOPE = ("the MRT-B warm-start is built for the code-search environment (steps with feedback); text "
                   "problems start RL from the base model (rl.start: base)")


def write_not_applicable(folder: Path, stage: str, reason: str) -> dict:
    """The output of a stage that does not apply to the configured environment (DVC needs every
    output to exist): a folder holding only a note that says so and why."""
    note = {"stage": stage, "applicable": False, "reason": reason}
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        write_json_atomic(tmp / NOT_APPLICABLE, note)
    return note

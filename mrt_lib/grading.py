"""A math grader on ``math-verify`` with a per-call wall-clock limit held by worker processes.

``MathGrader`` implements ``mrt_core.envs.base.Grader``: ``grade(answer, reference) -> bool``.
The answer is what ``mrt_core.envs.answers.extract_answer`` took from the model's text (or None);
the reference is the dataset's answer. Both are parsed as LaTeX by math-verify and compared
for mathematical equivalence (1/2 = \\frac12 = 0.5, sets in any order, intervals, ...).

Why a process and not a signal or a thread: math-verify's own timeouts use ``SIGALRM``, which
only works in the main thread, and neither a signal nor a thread can stop sympy inside a
long C-level integer operation (``9^{9^{9}}`` never returns). A worker process can be killed.
A warm worker serves every call (no per-call process start). A worker killed on a timeout
is replaced by a warm spare at once, and a new spare starts in the background (a start
imports math-verify and verifies one pair, about 1-1.5 s); only a second timeout within that
time makes the next call wait. ``grade`` may be called from many threads: each call borrows
one worker from a pool (``workers``) and gives it back.

Safety: model text is never evaluated as code. Only math-verify's LaTeX extraction is used
(its plain-expression extractor hands text to sympy's ``parse_expr``, which runs ``eval``).
The LaTeX path still reaches ``eval`` in one place: latex2sympy builds numbers with
``sympy.Number(token)``, which sympifies the lexer's number token into code such as
``Integer (2 )``. The worker therefore runs a guarded ``eval_expr`` (``install_eval_guard``)
that evaluates only code made of sympy's number and symbol constructors and literals, and
refuses anything else (a test feeds it injected code). A missing or empty answer is wrong (even against a missing
reference), an answer longer than ``max_answer_chars`` is wrong, and any exception, worker
crash or timeout is wrong and counted in ``stats()``; ``grade`` never raises.

Time limits under load: the limit is wall-clock, and a loaded machine can make a correct pair
overrun it. A pair that times out is therefore retried once, on a fresh worker, at twice the
limit; only a second timeout makes it wrong (outcome ``timeout``). The stages report the counts
and fail past ``grader.max_timeout_share`` (``check_timeouts``): a share that high means the
limit is too small for the machine, and the accuracies would measure the machine, not the model.
Where the platform allows, each pair also runs under a CPU-time limit (``RLIMIT_CPU``, a whole
number of seconds just above its wall-clock limit), so a worker the parent failed to stop still
dies; such a death counts as a timeout too.
"""

from __future__ import annotations

import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterable, Sequence

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # where `tasks` is importable from, for the worker
# Counted in stats(): every pair lands in exactly one outcome.
OUTCOMES = ("missing", "too_long", "exact_match", "verified", "rejected", "timeout", "error")
GRADED_BY_WORKER = ("verified", "rejected", "timeout", "error")  # the pairs a time limit applies to


class GradingError(RuntimeError):
    """Too many answers timed out for the accuracies to mean anything."""


def timeout_share(stats: dict) -> float:
    """Share of the pairs sent to a worker that timed out twice (0 when none was sent)."""
    sent = sum(stats.get(k, 0) for k in GRADED_BY_WORKER)
    return stats.get("timeout", 0) / sent if sent else 0.0


def check_timeouts(stats: dict, max_share: float, timeout_s: float) -> None:
    """Raise ``GradingError`` when more than ``max_share`` of the graded pairs timed out."""
    share = timeout_share(stats)
    if share > max_share:
        raise GradingError(
            f"{stats['timeout']} of {sum(stats.get(k, 0) for k in GRADED_BY_WORKER)} graded answers ({share:.1%}) "
            f"timed out even when retried at twice grader.timeout_s={timeout_s:g} s, above "
            f"grader.max_timeout_share={max_share:g}: the machine is too loaded or the limit too small for the "
            f"accuracies to mean anything; raise grader.timeout_s (or grader.workers on more cores) and re-run")


@dataclass(frozen=True)
class VerifyOptions:
    """What the worker passes to math-verify (plain data: it crosses the process boundary)."""

    float_rounding: int = 6  # decimals compared for floats (math-verify's default)
    strict: bool = True  # math-verify's strict comparison (variables must match; its default)


def verify_pair(answer: str, reference: str, options: VerifyOptions) -> bool:
    """math-verify's verdict on one pair, LaTeX extraction only (runs in the worker; may hang
    on adversarial input, which is why it runs there). Both sides are boxed so that the whole
    string is the expression, not a number found inside it."""
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold = parse(f"\\boxed{{{reference}}}", extraction_config=config, parsing_timeout=None)
    pred = parse(f"\\boxed{{{answer}}}", extraction_config=config, parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, float_rounding=options.float_rounding, strict=options.strict,
                       timeout_seconds=None))


# What sympy's parse_expr generates for a number or a name, token by token: the only code the
# guarded eval_expr will run (e.g. ``Integer (2 )``, ``Float ('2.5' )``, ``Symbol ('x' )``, ``E ``).
_SAFE_CODE = re.compile(
    r"(?:\s+|(?:Integer|Float|Rational|Symbol|E|I|pi|oo|zoo|nan|precision)\b|'[A-Za-z_][A-Za-z0-9_]*'"
    r"|'[0-9.eE+-]+'|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|[(),=-])*"
)


def install_eval_guard() -> None:
    """Make sympy's ``eval_expr`` (behind ``parse_expr`` and ``sympify(str)``) refuse any code
    that is not a number or a name (see ``_SAFE_CODE``); refused code raises ValueError, which
    math-verify turns into a failed parse (a wrong answer). Idempotent."""
    from sympy.parsing import sympy_parser

    original = sympy_parser.eval_expr
    if getattr(original, "guarded", False):
        return

    def guarded(code, local_dict, global_dict):
        if not _SAFE_CODE.fullmatch(code):
            raise ValueError(f"refused to evaluate {code[:80]!r}: not a number or a name")
        return original(code, local_dict, global_dict)

    guarded.guarded = True
    sympy_parser.eval_expr = guarded


def _serve(receive, send, options: VerifyOptions) -> None:
    """Worker loop: receive a list of ``(answer, reference, cpu_limit_s)``, send ``(index,
    verdict, error)`` per pair as soon as it is known (so the parent can time each pair and
    resend the rest after a kill)."""
    send.send(("ready", None, None))
    while True:
        try:
            batch = receive.recv()
        except EOFError:
            return
        if batch is None:
            return
        for i, (answer, reference, cpu_limit_s) in enumerate(batch):
            _limit_cpu(cpu_limit_s)
            try:
                send.send((i, verify_pair(answer, reference, options), None))
            except Exception as exc:  # noqa: BLE001 - any failure is a wrong answer, reported
                send.send((i, False, f"{type(exc).__name__}: {str(exc)[:200]}"))


def worker_main(read_fd: int, write_fd: int, float_rounding: int, strict: bool, memory_limit_mb: int) -> None:
    """Entry point of a worker process (``python -c``): limit memory, import math-verify and
    warm it up, then serve."""
    import logging

    _limit_worker(memory_limit_mb)

    import math_verify  # noqa: F401  (imported before "ready", so the first call is warm)

    install_eval_guard()

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # our own counters report failures
    options = VerifyOptions(float_rounding, strict)
    # The first verification in a process builds the LaTeX parser and sympy caches (~0.2 s,
    # measured): pay it here, before "ready", so a spare that takes over is warm.
    verify_pair("\\frac{1}{2}", "0.5", options)
    _serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False), options)


def _limit_cpu(seconds: int) -> None:
    """Best effort (POSIX): let this pair use at most ``seconds`` more CPU seconds; past them the
    kernel sends SIGXCPU, which ends the worker (the parent counts a timeout)."""
    try:
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(used.ru_utime + used.ru_stime) + seconds
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (OSError, ValueError, ImportError):
        pass


def _limit_worker(memory_limit_mb: int) -> None:
    """Best effort (POSIX): cap the address space (a huge integer raises MemoryError, a wrong
    answer, instead of taking the machine's memory before the time limit).

    A worker does not outlive a killed stage: idle, it reads end-of-file on its pipe and exits;
    busy, its per-pair CPU limit ends it. (Not PR_SET_PDEATHSIG: that signal follows the *thread*
    that started the worker, and a replacement started from a caller's thread died with it.)"""
    try:
        import resource

        if memory_limit_mb > 0:
            limit = memory_limit_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):
        pass


class _Worker:
    """One worker process and the parent's ends of its two pipes.

    A plain ``subprocess`` running ``worker_main``, not ``multiprocessing``: its start methods
    either fork the caller (unsafe once threads or CUDA exist) or re-import the caller's main
    module in the child (breaks scripts without a main guard, and costs a torch import when a
    stage is the main module). The worker imports only this module and math-verify (~1 s).
    """

    def __init__(self, options: VerifyOptions, memory_limit_mb: int):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        args = (to_child_r, from_child_w, options.float_rounding, options.strict, memory_limit_mb)
        code = f"from mrt_lib.grading import worker_main; worker_main{args!r}"
        # The worker must import *this* tasks package whatever the caller's working directory.
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w), env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the worker has imported math-verify; RuntimeError if it cannot."""
        if self.ready:
            return
        try:
            if not self.recv_conn.poll(timeout_s):
                raise RuntimeError(f"math grader worker did not start within {timeout_s} s")
            self.recv_conn.recv()
        except (EOFError, OSError):
            raise RuntimeError("math grader worker died at start (its error is above): is math-verify installed? "
                               "(pip install math-verify)") from None
        finally:
            if not self.ready and self.proc.poll() is not None:
                self._close_pipes()
        self.ready = True

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def stop(self) -> None:
        try:
            self.send_conn.send(None)
            self.proc.wait(2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for conn in (self.send_conn, self.recv_conn):
            try:
                conn.close()
            except OSError:
                pass


class MathGrader:
    """``Grader`` for math answers (math-verify equivalence), ``timeout_s`` wall-clock per pair.

    ``grade(answer, reference)`` for one pair; ``grade_many(pairs)`` for a batch in one round
    trip to a worker (each pair still has its own limit). Close with ``close()`` or use as a
    context manager. A worker whose parent dies reads end-of-file on its pipe and exits.
    """

    def __init__(self, timeout_s: float = 2.0, workers: int = 1, max_answer_chars: int = 512,
                 options: VerifyOptions = VerifyOptions(), start_timeout_s: float = 60.0,
                 memory_limit_mb: int = 4096, cpu_limit_s: float | None = None):
        if timeout_s <= 0 or workers < 1 or max_answer_chars < 1:
            raise ValueError(f"need timeout_s > 0, workers >= 1, max_answer_chars >= 1; got timeout_s={timeout_s}, "
                             f"workers={workers}, max_answer_chars={max_answer_chars}")
        self.timeout_s, self.max_answer_chars, self.options = timeout_s, max_answer_chars, options
        self.start_timeout_s, self.memory_limit_mb = start_timeout_s, memory_limit_mb
        self.cpu_limit_s = cpu_limit_s  # None: just above the wall-clock limit (see _cpu_limit)
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._errors: list[str] = []  # the first few messages, for the log
        self._all: list[_Worker] = []
        self._closed = False
        # One worker now, so a missing math-verify fails here, before any stage output exists;
        # the others start on first use. A spare warms up beside them and takes over at once
        # from a worker killed on a timeout (the next call then waits for no start).
        first = self._new_worker()
        self._spare: _Worker | None = self._new_worker()
        try:
            first.wait_ready(start_timeout_s)
        except RuntimeError:
            self.close()
            raise
        self._idle.put(first)
        for _ in range(workers - 1):
            self._idle.put(None)

    # --- the Grader interface ---------------------------------------------------------------
    def grade(self, answer: str | None, reference: str | None) -> bool:
        """True only for a present answer equivalent to a present reference; never raises."""
        return self.grade_many([(answer, reference)])[0]

    def grade_many(self, pairs: Iterable[tuple[str | None, str | None]]) -> list[bool]:
        """Verdicts for many pairs: trivial ones here, the rest in one worker round trip."""
        pairs = list(pairs)
        verdicts: list[bool] = [False] * len(pairs)
        todo: list[int] = []
        for i, (answer, reference) in enumerate(pairs):
            outcome = self._precheck(answer, reference)
            if outcome is None:
                todo.append(i)
            else:
                verdicts[i] = outcome == "exact_match"
                self._count(outcome)
        if todo:
            try:
                for i, ok in zip(todo, self._run([(pairs[i][0].strip(), pairs[i][1].strip()) for i in todo])):
                    verdicts[i] = ok
            except Exception as exc:  # noqa: BLE001 - the Grader contract: never raise, count it
                self._count("error", len(todo), f"{type(exc).__name__}: {exc}")
        return verdicts

    # --- bookkeeping ------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counts per outcome (see ``OUTCOMES``; each pair has exactly one), pairs retried at twice
        the limit after a first timeout (``retried``), worker restarts, and the first error
        messages."""
        with self._lock:
            counts = {k: self._counts.get(k, 0) for k in (*OUTCOMES, "retried", "restarts")}
            return counts | {"errors_seen": list(self._errors)}

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        self._closed = True
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.stop()

    def __enter__(self) -> "MathGrader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; orphaned workers exit on end-of-file anyway
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # --- internals ----------------------------------------------------------------------------
    def _precheck(self, answer, reference) -> str | None:
        """The outcome decided without math-verify, or None when the worker must decide."""
        if not isinstance(answer, str) or not isinstance(reference, str) or not answer.strip() or not reference.strip():
            return "missing"  # also a missing reference: nothing can be checked against it
        if len(answer) > self.max_answer_chars:
            return "too_long"
        if answer.strip() == reference.strip():
            return "exact_match"
        return None

    def _count(self, outcome: str, n: int = 1, error: str | None = None) -> None:
        with self._lock:
            self._counts[outcome] += n
            if error and len(self._errors) < 20:
                self._errors.append(error)

    def _new_worker(self) -> _Worker:
        worker = _Worker(self.options, self.memory_limit_mb)
        with self._lock:
            self._all.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill ``worker``; its successor is the spare (warm unless two replacements come within
        a start time), and a new spare starts warming up (not waited for)."""
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self._counts["restarts"] += 1
            successor, self._spare = self._spare, None
        if successor is None:
            successor = self._new_worker()
        if not self._closed:
            spare = self._new_worker()
            with self._lock:
                if self._spare is None:
                    self._spare, spare = spare, None
            if spare is not None:  # another thread refilled it first
                self._retire_unused(spare)
        return successor

    def _retire_unused(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def _cpu_limit(self, wall_s: float) -> int:
        """Whole CPU seconds a pair with wall-clock limit ``wall_s`` may use: by default one more
        than the limit, so the parent's clock decides first whenever it can; ``cpu_limit_s``
        (scaled like the wall-clock limit on a retry) where the CPU limit should decide."""
        if self.cpu_limit_s is None:
            return math.ceil(wall_s) + 1
        return max(1, math.ceil(self.cpu_limit_s * wall_s / self.timeout_s))

    def _run(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Send ``pairs`` to a borrowed worker; each pair gets ``timeout_s`` from the previous
        verdict (or from the send). On a timeout or a crash the worker is replaced and the pair
        is retried once on the successor (at twice the limit after a timeout); a second failure
        makes it wrong (``timeout`` or ``error``). The remaining pairs go to the successor."""
        if self._closed:
            raise RuntimeError("the grader is closed")
        verdicts: list[bool] = []
        retried: tuple[int, str] | None = None  # (pair, first failure) of the pair being retried
        worker = self._idle.get()
        try:
            while len(verdicts) < len(pairs):
                if worker is None:  # a pool slot never used yet
                    worker = self._new_worker()
                worker.wait_ready(self.start_timeout_s)
                first = len(verdicts)
                doubled = retried is not None and retried[0] == first and retried[1] == "timeout"
                worker, failure = self._serve_some(worker, pairs[first:], verdicts,
                                                   self.timeout_s * (2 if doubled else 1))
                if failure is None:
                    continue
                at = len(verdicts)  # the pair being served when the worker timed out or died
                if retried is not None and retried[0] == at:  # its second failure: wrong
                    if failure == "timeout":
                        self._count("timeout")
                    else:
                        self._count("error", error="a worker died twice on one pair")
                    verdicts.append(False)
                else:
                    # Not yet the pair's fault: a loaded machine (timeout) or a kill from outside
                    # (crash). Retry it once on the successor.
                    retried = (at, failure)
                    self._count("retried")
        finally:
            self._idle.put(worker)
        return verdicts

    def _serve_some(self, worker: _Worker, pairs: Sequence[tuple[str, str]], verdicts: list[bool],
                    first_limit_s: float) -> tuple[_Worker, str | None]:
        """Serve ``pairs`` in order (the first within ``first_limit_s``, the rest within
        ``timeout_s``), appending verdicts. Returns the worker and None; or, after a timeout or
        a crash (nothing appended for the pair being served), its successor and ``"timeout"``
        or ``"crash"`` (a worker the kernel ended for CPU time timed out)."""
        limits = [first_limit_s] + [self.timeout_s] * (len(pairs) - 1)
        try:
            worker.send_conn.send([(a, r, self._cpu_limit(lim)) for (a, r), lim in zip(pairs, limits)])
            for limit in limits:
                if not worker.recv_conn.poll(limit):
                    return self._replace(worker), "timeout"
                _, ok, error = worker.recv_conn.recv()
                self._count("error" if error else "verified" if ok else "rejected", error=error)
                verdicts.append(bool(ok))
        except (EOFError, OSError):  # the worker died (CPU limit, killed from outside, out of memory)
            try:
                code = worker.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            return self._replace(worker), "timeout" if code == -signal.SIGXCPU else "crash"
        return worker, None


def measure_overhead(grader: MathGrader, n: int = 200) -> dict[str, float]:
    """Mean seconds per ``grade`` call and per pair of a ``grade_many`` batch, on distinct pairs
    that need math-verify (``\\frac{i}{i+1}`` against a decimal; distinct, so math-verify's own
    parse cache does not help). For the log; not used by the stages."""
    def pairs(offset: int) -> list[tuple[str, str]]:
        return [(f"\\frac{{{i}}}{{{i + 1}}}", f"{i / (i + 1):.6f}") for i in range(offset, offset + n)]

    start = time.perf_counter()
    single = [grader.grade(*pair) for pair in pairs(1)]
    single_s = (time.perf_counter() - start) / n
    start = time.perf_counter()
    batched = grader.grade_many(pairs(n + 1))
    batched_s = (time.perf_counter() - start) / n
    share_correct = (sum(single) + sum(batched)) / (2 * n)
    return {"grade_s": single_s, "grade_many_per_pair_s": batched_s, "share_correct": share_correct}


def build_grader(cfg) -> MathGrader:
    """The grader the ``grader`` section of params configures (``mrt_lib.config.GraderConfig``;
    duck-typed so that worker processes, which import this module, never import the config)."""
    return MathGrader(timeout_s=cfg.timeout_s, workers=cfg.workers, max_answer_chars=cfg.max_answer_chars,
                      options=VerifyOptions(float_rounding=cfg.float_rounding), memory_limit_mb=cfg.memory_limit_mb)

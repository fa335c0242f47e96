"""Meta-prover requests and estimates of ``J(mu | c)``: METHOD.md (1)-(3).

The meta-prover is the policy itself, forced to stop and answer after a prefix. This module says
*what to ask* (which prefixes, how many answers, grouped so that a backend can reuse a prefix's
computation) and *how to combine the answers*; ``tasks/`` performs the model calls.

Notation: a rollout's output is split into k episodes; ``prefix_ends[j] = (char_end, tok_end)``
is the end of the prefix through episode j, i.e. of ``c_{j+1}``. The empty prefix ``c_0`` (the
prompt alone) has end ``(0, 0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

Estimator = Literal["sampled", "exact"]


@dataclass(frozen=True)
class ProbeRequest:
    """Ask the meta-prover ``n_samples`` answers after the prefix ``c_{context}``.

    ``context`` is j in ``c_j`` (0 = prompt only); ``char_end``/``tok_end`` end the prefix in
    the rollout's output text / output tokens."""

    context: int
    char_end: int
    tok_end: int
    n_samples: int


@dataclass(frozen=True)
class ProbeGroup:
    """All probes of one rollout. Requests are sorted by prefix length and each prefix extends
    the previous one, so a backend encodes the longest prefix once and branches at every
    ``tok_end`` (KV-cache reuse on ``hf``, prefix caching on ``vllm``)."""

    rollout_id: str
    requests: tuple[ProbeRequest, ...]

    @property
    def shared_tokens(self) -> int:
        """Output tokens of the longest prefix: the computation every request shares."""
        return self.requests[-1].tok_end if self.requests else 0


def probe_requests(
    rollout_id: str, prefix_ends: Sequence[tuple[int, int]], n_samples: int, include_prompt: bool = True
) -> ProbeGroup:
    """Forced-termination queries of one rollout: ``J(mu | c_j)`` for j = 0..k, METHOD.md (1).

    ``prefix_ends`` (k pairs, non-decreasing) end the prefixes ``c_1..c_k``; with
    ``include_prompt`` the prompt-only prefix ``c_0`` is asked too (progress of the first
    episode needs it). Returns one ``ProbeGroup`` with k (+1) requests of ``n_samples`` each.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    ends = [(0, 0)] * include_prompt + [tuple(e) for e in prefix_ends]
    if any(b[0] < a[0] or b[1] < a[1] for a, b in zip(ends, ends[1:])):
        raise ValueError(f"prefix ends must be non-decreasing, got {list(prefix_ends)}")
    first = 0 if include_prompt else 1
    reqs = tuple(ProbeRequest(first + i, c, t, n_samples) for i, (c, t) in enumerate(ends))
    return ProbeGroup(rollout_id, reqs)


def probe_text(prompt: str, output: str, request: ProbeRequest, termination_text: str) -> str:
    """The meta-prover's input, METHOD.md (1): prompt + output through the prefix + termination text."""
    return prompt + output[: request.char_end] + termination_text


def j_sampled(grades: np.ndarray) -> np.ndarray:
    """Sampled estimate of ``J(mu | c)``, METHOD.md (2): the mean of K graded answers.

    grades: (n_prefixes, K) of 0/1 -> (n_prefixes,)."""
    grades = np.asarray(grades, dtype=float)
    if grades.ndim != 2 or grades.shape[1] == 0:
        raise ValueError(f"grades must have shape (n_prefixes, K>0), got {grades.shape}")
    return grades.mean(axis=1)


def j_exact(answer_logprobs: np.ndarray, answer_mask: np.ndarray | None = None) -> np.ndarray:
    """Exact ``J(mu | c)`` for finite answer sets, METHOD.md (3): the probability of the
    reference answer, the product of its teacher-forced token probabilities.

    answer_logprobs: (n_prefixes, L) log-probabilities of the reference answer's tokens;
    answer_mask: (n_prefixes, L) True where a token belongs to the answer (ragged answers)
    -> (n_prefixes,)."""
    lp = np.asarray(answer_logprobs, dtype=float)
    if answer_mask is not None:
        lp = np.where(np.asarray(answer_mask, dtype=bool), lp, 0.0)
    if np.any(lp > 1e-9):
        raise ValueError("answer_logprobs must be log-probabilities (<= 0)")
    return np.exp(lp.sum(axis=-1))


def zero_progress_threshold(estimator: Estimator, n_samples: int = 8) -> float:
    """Default threshold at or below which an episode counts as making no progress.

    Sampled (METHOD.md (2)): the standard error of a difference of two K-sample means is at
    most ``sqrt(2 * 0.25 / K) = 1/sqrt(2K)`` (0.25 for K=8): smaller differences are noise.
    Exact (METHOD.md (3)): no sampling noise; 1e-3 absorbs float error."""
    if estimator == "sampled":
        return 1.0 / math.sqrt(2 * n_samples)
    if estimator == "exact":
        return 1e-3
    raise ValueError(f"estimator must be 'sampled' or 'exact', got {estimator!r}")


# Variance control for the sampled estimator (METHOD.md (2)): J's interval from its K graded
# answers, more answers where the interval is still wide, and progress that carries its error.
# The Agresti-Coull form is used because it never gives a zero-width interval: K answers that
# are all wrong (or all right) say J is near 0 (or 1), not that it is exactly there.

def j_standard_error(successes: np.ndarray, k: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Agresti-Coull standard error of a sampled J, METHOD.md (2a): ``sqrt(p~ (1 - p~) / (k + z^2))`` with
    ``p~ = (successes + z^2 / 2) / (k + z^2)``; the interval is ``p~ +- z * se``."""
    s, n = np.asarray(successes, dtype=float), np.asarray(k, dtype=float)
    if np.any(n < 1) or np.any(s < 0) or np.any(s > n):
        raise ValueError("need 0 <= successes <= k and k >= 1")
    shrunk = (s + z * z / 2) / (n + z * z)
    return np.sqrt(shrunk * (1 - shrunk) / (n + z * z))


def needs_more_samples(successes: np.ndarray, k: np.ndarray, half_width: float, k_max: int,
                       z: float = 1.96) -> np.ndarray:
    """Adaptive K, METHOD.md (2b): True where J's interval is still wider than ``+- half_width`` and fewer
    than ``k_max`` answers were drawn."""
    wide = z * j_standard_error(successes, k, z) > half_width
    return wide & (np.asarray(k) < k_max)


def progress_standard_error(j_se: np.ndarray) -> np.ndarray:
    """Standard error of each episode's progress, METHOD.md (2c): ``J[j+1] - J[j]`` from the standard errors of
    J at its two ends (independent draws): ``sqrt(se[j]^2 + se[j+1]^2)``. (..., k+1) -> (..., k)."""
    se = np.asarray(j_se, dtype=float)
    return np.sqrt(se[..., 1:] ** 2 + se[..., :-1] ** 2)


Shrink = Literal["none", "interval", "snr"]


def shrink_progress(prog: np.ndarray, se: np.ndarray, rule: Shrink, z: float = 1.96) -> np.ndarray:
    """Progress as a per-episode bonus, shrunk toward zero where it is noise, METHOD.md (2d):
    ``none``: as measured; ``interval``: only progress whose interval ``+- z se`` excludes zero;
    ``snr``: scaled by ``snr^2 / (1 + snr^2)``, ``snr = |progress| / se`` (a James-Stein-like
    factor: 1/2 at one standard error, 4/5 at two). ``se = 0`` (exact J) leaves progress as it is."""
    prog, se = np.asarray(prog, dtype=float), np.asarray(se, dtype=float)
    if rule == "none":
        return prog
    exact = se <= 0
    if rule == "interval":
        return np.where(exact | (np.abs(prog) > z * se), prog, 0.0)
    if rule == "snr":
        snr2 = np.where(exact, 1.0, prog**2 / np.where(exact, 1.0, se**2))
        return np.where(exact, prog, prog * snr2 / (1 + snr2))
    raise ValueError(f"shrink must be 'none', 'interval' or 'snr', got {rule!r}")

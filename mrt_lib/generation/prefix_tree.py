"""Meta-prover probes on the ``hf`` backend: K answers after each of several prefixes of one
rollout, with the prefix computation shared (METHOD.md (1)-(3)).

Shared: the rollout is encoded once into a KV cache; the probes of every prefix are then run as
branches of one tree in a single sequence: each branch token attends only to the rollout tokens
before its cut, its prefix's termination tokens and its own earlier answer tokens (a 4-d
additive attention mask), at the positions it would have in a plain sequence. Naive: each prefix
is re-encoded once with its termination text and its K samples are batched (the best version
without sharing), kept for the equivalence test and the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProbeJob:
    """One rollout to probe: ``token_ids`` = prompt + output; a cut c means the prefix
    ``token_ids[:c]`` (cuts strictly inside (0, len] and increasing)."""

    token_ids: tuple[int, ...]
    cuts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.cuts or any(b <= a for a, b in zip(self.cuts, self.cuts[1:])):
            raise ValueError(f"cuts must be non-empty and strictly increasing, got {self.cuts}")
        if self.cuts[0] < 1 or self.cuts[-1] > len(self.token_ids):
            raise ValueError(f"cuts must lie in [1, {len(self.token_ids)}], got {self.cuts}")


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool (Q, K) -> additive float mask (1, 1, Q, K): 0 where allowed, -inf-like elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def _tree_forward(model, cache, ids: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Logits (on the CPU) of a block of tree tokens appended to ``cache`` (which it extends)."""
    param = next(model.parameters())
    out = model(input_ids=ids.to(param.device), position_ids=pos.to(param.device), past_key_values=cache,
                attention_mask=_additive(allowed, param.dtype).to(param.device), use_cache=True)
    return out.logits[0].float().cpu()


def _encode(model, ids: list[int]):
    out = model(input_ids=torch.tensor([ids], device=next(model.parameters()).device), use_cache=True)
    return out.past_key_values, out.logits[0].float().cpu()


class _Tree:
    """Bookkeeping of the branch tree appended after a rollout of length ``L`` in the cache."""

    def __init__(self, cuts: list[int], length: int, n_term: int):
        self.cuts, self.L, self.T = torch.tensor(cuts), length, n_term
        self.n_keys = length

    def term_step(self, term_ids: list[int]):
        """Queries: the termination tokens of every cut (n * T tokens)."""
        n, T = len(self.cuts), self.T
        keys = torch.arange(self.L + n * T)
        cut = self.cuts.repeat_interleave(T)  # cut of each query row
        within = torch.arange(T).repeat(n)  # index inside the termination text
        block = self.L + torch.arange(n).repeat_interleave(T) * T
        in_block = (keys[None] >= block[:, None]) & (keys[None] <= (block + within)[:, None])  # causal in the text
        allowed = (keys[None] < cut[:, None]) | in_block
        self.n_keys += n * T
        ids = torch.tensor([term_ids * n])
        return ids, (cut + within)[None], allowed

    def branch_step(self, tokens: torch.Tensor, k: int, step: int):
        """Queries: one new answer token for each of the n * k branches at answer step ``step``."""
        n, T = len(self.cuts), self.T
        nb = n * k
        keys = torch.arange(self.n_keys + nb)
        cut = self.cuts.repeat_interleave(k)
        block = self.L + torch.arange(n).repeat_interleave(k) * T
        allowed = (keys[None] < cut[:, None]) | ((keys[None] >= block[:, None]) & (keys[None] < (block + T)[:, None]))
        first = self.L + n * T  # answer tokens of step s, branch b sit at first + s * nb + b
        own = first + torch.arange(step + 1)[None, :] * nb + torch.arange(nb)[:, None]
        allowed[torch.arange(nb)[:, None], own] = True
        self.n_keys += nb
        return tokens.reshape(1, nb), (cut + T + step)[None], allowed


@torch.no_grad()
def shared_prefix_sample(model, job: ProbeJob, term_ids: list[int], answer_len: int, k: int,
                         temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """K sampled answers of ``answer_len`` tokens after each cut (temperature 0 = greedy).
    Returns token ids (n_cuts, k, answer_len)."""
    cache, _ = _encode(model, list(job.token_ids))
    tree = _Tree(list(job.cuts), len(job.token_ids), len(term_ids))
    ids, pos, allowed = tree.term_step(term_ids)
    logits = _tree_forward(model, cache, ids, pos, allowed)
    last = logits.reshape(len(job.cuts), len(term_ids), -1)[:, -1]  # (n, V) after each termination
    tokens = _draw(last.repeat_interleave(k, dim=0), temperature, generator)  # (n * k,)
    out = [tokens]
    for step in range(answer_len - 1):
        ids, pos, allowed = tree.branch_step(tokens, k, step)
        logits = _tree_forward(model, cache, ids, pos, allowed)
        tokens = _draw(logits, temperature, generator)
        out.append(tokens)
    return torch.stack(out, dim=-1).reshape(len(job.cuts), k, answer_len)


@torch.no_grad()
def naive_sample(model, job: ProbeJob, term_ids: list[int], answer_len: int, k: int,
                 temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Same contract as ``shared_prefix_sample``; each prefix re-encoded once, K batched."""
    answers = []
    for cut in job.cuts:
        cache, logits = _encode(model, list(job.token_ids[:cut]) + term_ids)
        tokens = _draw(logits[-1:].expand(k, -1), temperature, generator)
        cache.batch_repeat_interleave(k)
        seq = [tokens]
        for step in range(answer_len - 1):
            pos = torch.full((k, 1), cut + len(term_ids) + step)
            logits = model(input_ids=tokens[:, None], position_ids=pos, past_key_values=cache, use_cache=True).logits
            tokens = _draw(logits[:, -1], temperature, generator)
            seq.append(tokens)
        answers.append(torch.stack(seq, dim=-1))
    return torch.stack(answers)


@torch.no_grad()
def shared_prefix_logits(model, job: ProbeJob, forced_ids: list[int]) -> torch.Tensor:
    """Next-token logits at every position of ``forced_ids`` appended after each cut, all cuts
    in one tree over the shared rollout cache. Returns (n_cuts, len(forced_ids), vocab)."""
    cache, _ = _encode(model, list(job.token_ids))
    tree = _Tree(list(job.cuts), len(job.token_ids), len(forced_ids))
    ids, pos, allowed = tree.term_step(forced_ids)
    logits = _tree_forward(model, cache, ids, pos, allowed)
    return logits.reshape(len(job.cuts), len(forced_ids), -1)


@torch.no_grad()
def naive_logits(model, job: ProbeJob, forced_ids: list[int]) -> torch.Tensor:
    """Same contract as ``shared_prefix_logits``, each prefix encoded on its own."""
    return torch.stack([_encode(model, list(job.token_ids[:cut]) + forced_ids)[1][cut:] for cut in job.cuts])


def answer_logprobs(logits: torch.Tensor, n_term: int, answer_ids: list[int]) -> torch.Tensor:
    """Log-probs of ``answer_ids`` from logits over ``term + answer`` (n_cuts, T + D, V): the
    logits at the last termination token and at each answer token but the last predict it."""
    logp = torch.log_softmax(logits.float(), -1)[:, n_term - 1 : n_term - 1 + len(answer_ids)]
    return logp.gather(-1, torch.tensor(answer_ids).expand(logits.shape[0], -1)[..., None]).squeeze(-1)


def shared_prefix_logprobs(model, job: ProbeJob, term_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
    """Teacher-forced log-probabilities of ``answer_ids`` after each cut + termination text,
    for the exact estimator (METHOD.md (3)). Returns (n_cuts, len(answer_ids))."""
    return answer_logprobs(shared_prefix_logits(model, job, term_ids + answer_ids), len(term_ids), answer_ids)


def naive_logprobs(model, job: ProbeJob, term_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
    """Same contract as ``shared_prefix_logprobs``, each prefix encoded on its own."""
    return answer_logprobs(naive_logits(model, job, term_ids + answer_ids), len(term_ids), answer_ids)


def _draw(logits: torch.Tensor, temperature: float,
          generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Sample one token per row (argmax when ``temperature`` is 0); with one generator per row
    each row's draw depends on its own generator only, not on the other rows of the batch."""
    logits = logits.float().cpu()  # the generator lives on the CPU
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    if isinstance(generator, Sequence):
        return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generator)])
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _tree_rows(job: ProbeJob, block: list[int]) -> tuple[list[int], list[int], torch.Tensor, list[int]]:
    """One rollout and a teacher-forced ``block`` after each of its cuts, flattened into one
    sequence: (token ids, position ids, allowed (S, S) bool, start index of each cut's block).
    A block token sees the rollout before its cut and its own block's earlier tokens only."""
    L, n, T = len(job.token_ids), len(job.cuts), len(block)
    size = L + n * T
    allowed = torch.zeros((size, size), dtype=torch.bool)
    allowed[:L, :L] = torch.ones((L, L), dtype=torch.bool).tril()
    causal = torch.ones((T, T), dtype=torch.bool).tril()
    ids, pos, starts = list(job.token_ids), list(range(L)), []
    for i, cut in enumerate(job.cuts):
        s = L + i * T
        starts.append(s)
        allowed[s : s + T, :cut] = True
        allowed[s : s + T, s : s + T] = causal
        ids += block
        pos += range(cut, cut + T)
    return ids, pos, allowed, starts


@torch.no_grad()
def batched_cut_logprobs(model, jobs: list[ProbeJob], term_ids: list[int], answers: list[list[int]],
                         pad_id: int = 0, batch_size: int = 64) -> list[torch.Tensor]:
    """Teacher-forced log-probs of ``answers[i]`` after every cut of ``jobs[i]`` + termination
    text, for many rollouts at once (the exact estimator, METHOD.md (3)): each rollout and all
    its probe blocks form one tree sequence (as in ``shared_prefix_logprobs``), and the trees
    of up to ``batch_size`` rollouts go through one forward pass. Returns, per job, a tensor
    (n_cuts, len(answers[i]))."""
    out: list[torch.Tensor] = []
    dtype = next(model.parameters()).dtype
    for b in range(0, len(jobs), batch_size):
        chunk = list(zip(jobs[b : b + batch_size], answers[b : b + batch_size]))
        rows = [_tree_rows(job, term_ids + ans) for job, ans in chunk]
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # pads see themselves (no NaN rows)
        for r, (row_ids, row_pos, row_allowed, _) in enumerate(rows):
            n = len(row_ids)
            ids[r, :n], pos[r, :n] = torch.tensor(row_ids), torch.tensor(row_pos)
            allowed[r, :n, :n] = row_allowed
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        device = next(model.parameters()).device
        logits = model(input_ids=ids.to(device), position_ids=pos.to(device), attention_mask=mask.to(device)).logits
        logits = logits.float().cpu()
        for r, ((_, _, _, starts), (_, ans)) in enumerate(zip(rows, chunk)):
            T = len(term_ids)
            # logits at the last termination token and at each answer token but the last predict the answer
            at = torch.tensor([[s + T - 1 + k for k in range(len(ans))] for s in starts])
            logp = torch.log_softmax(logits[r, at].float(), -1)
            out.append(logp.gather(-1, torch.tensor(ans).expand(len(starts), -1)[..., None]).squeeze(-1))
    return out

"""Benchmark: meta-prover estimation with shared-prefix probes vs the best naive version.

Rollouts of 1,024 tokens, 8 episodes (a cut every 128 tokens), K = 8 sampled answers of 3
tokens after a 2-token termination text, on the default model architecture and on a larger one.
Both versions run in the same process, interleaved, ``--reps`` times; medians and their ratio
are printed as Markdown and written to ``benchmarks/results/probe_sharing.json``.

    .venv/bin/python -m benchmarks.probe_sharing            # ~2-4 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.record import print_table, record
from mrt_lib.generation.prefix_tree import ProbeJob, naive_sample, shared_prefix_sample

CONFIGS = {
    # the default profile's architecture (params.yaml train_base.model), longer context
    "default": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256),
    "large": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1408),
}


def build(name: str, vocab: int = 32, ctx: int = 1100) -> LlamaForCausalLM:
    torch.manual_seed(0)
    heads = CONFIGS[name]["num_attention_heads"]
    cfg = LlamaConfig(vocab_size=vocab, max_position_embeddings=ctx, num_key_value_heads=heads, **CONFIGS[name])
    return LlamaForCausalLM(cfg).eval()


def time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(name: str, reps: int, length: int, episodes: int, k: int) -> dict:
    model = build(name)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    ids = tuple(torch.randint(3, 32, (length,), generator=gen).tolist())
    job = ProbeJob(ids, tuple(length * (j + 1) // episodes for j in range(episodes)))
    term, answer_len = [1, 2], 3
    shared = lambda: shared_prefix_sample(model, job, term, answer_len, k, 1.0, gen)  # noqa: E731
    naive = lambda: naive_sample(model, job, term, answer_len, k, 1.0, gen)  # noqa: E731
    shared(), naive()  # warm-up
    times = {"shared": [], "naive": []}
    for _ in range(reps):
        times["shared"].append(time_once(shared))
        times["naive"].append(time_once(naive))
    med = {key: statistics.median(v) for key, v in times.items()}
    return {"config": name, "n_params": n_params, **CONFIGS[name], "median_shared_s": med["shared"],
            "median_naive_s": med["naive"], "ratio_naive_over_shared": med["naive"] / med["shared"], "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/probe_sharing.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, args.reps, args.length, args.episodes, args.k) for name in CONFIGS]
    record(args.out, args.threads, args=vars(args), rows=rows)
    print_table(["config", "params", "naive median (s)", "shared median (s)", "speed-up"],
                [[r["config"], f"{r['n_params'] / 1e6:.2f}M", f"{r['median_naive_s']:.3f}",
                  f"{r['median_shared_s']:.3f}", f"{r['ratio_naive_over_shared']:.2f}x"] for r in rows])

if __name__ == "__main__":
    main()

"""Benchmark: generated tokens per second of the ``hf`` backend at batch sizes 1, 8 and 64.

The default profile's architecture (random weights: speed does not depend on them), a 16-token
prompt, 128 new tokens per sequence (EOS disabled so every sequence runs to the end; the tokens
actually generated are counted). Medians over ``--reps``.

    .venv/bin/python -m benchmarks.hf_throughput            # ~1-2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from benchmarks.probe_sharing import CONFIGS
from mrt_lib.config import ModelConfig
from mrt_lib.generation import SamplingParams
from mrt_lib.generation.hf import HFBackend
from mrt_lib.modeling import build_char_tokenizer, build_model


def build_backend(name: str, device: str) -> HFBackend:
    tok = build_char_tokenizer("0123456789<>=!?:AQ\n")
    c = CONFIGS[name]
    cfg = ModelConfig(hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
                      num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"], max_seq_len=512)
    return HFBackend(build_model(cfg, tok, seed=0).to(device), tok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="default", choices=sorted(CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results/hf_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backend = build_backend(args.config, args.device)
    prompt = backend.tokenizer("Q3:4>\n6<\n5=2=3>\n", add_special_tokens=False)["input_ids"]
    rows = []
    for batch in (1, 8, 64):
        params = SamplingParams(n=batch, max_new_tokens=args.new_tokens, seed=0, ignore_eos=True)
        backend.sample([prompt], SamplingParams(n=batch, max_new_tokens=4))  # warm-up
        times, tokens = [], 0
        for _ in range(args.reps):
            t0 = time.perf_counter()
            out = backend.sample([prompt], params)
            times.append(time.perf_counter() - t0)
            tokens = sum(len(c.token_ids) for c in out[0])
        med = statistics.median(times)
        rows.append({"batch": batch, "tokens": tokens, "median_s": med, "tokens_per_s": tokens / med})
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
               "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "config": args.config, "rows": rows}, indent=2))
    print(f"machine: {machine}, config: {args.config}")
    print("| batch | generated tokens | median time (s) | tokens/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['tokens']} | {r['median_s']:.3f} | {r['tokens_per_s']:.0f} |")


if __name__ == "__main__":
    main()

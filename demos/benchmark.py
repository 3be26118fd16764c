"""Benchmark: ttjax against transformers' LlamaForCausalLM on the same GGUF, in one run.

Both run greedy batch-1 generation in float32 on the CPU: a prefill of the prompt, then
KV-cached decode steps. Prints the median over --runs of prefill time and decode tokens/s
for each, and the ratios. Needs the test extras (torch, transformers).

    python demos/benchmark.py [--new-tokens 64] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

PROMPT = "The capital of France is"


def bench_ttjax(path, new_tokens, runs, max_seq_len):
    from model.serving.build import build_generator
    from model.serving.engine import generate

    gen = build_generator(path, max_seq_len=max_seq_len, needs_tokenizer=True)
    ids = gen.tokenizer.encode(PROMPT)
    generate(gen, ids, new_tokens, stop_at_eos=False)  # compiles, and warms up like the peer's first run
    results = [generate(gen, ids, new_tokens, stop_at_eos=False) for _ in range(runs)]
    return [r.prefill_s for r in results], [r.decode_tokens_per_s for r in results], results[-1].tokens


def bench_transformers(path, new_tokens, runs, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    folder, name = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode(PROMPT, add_special_tokens=False)])
    prefills, rates, tokens = [], [], []
    with torch.no_grad():
        for _ in range(runs + 1):  # the first run warms up
            t = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            prefill = time.perf_counter() - t
            past, tokens = out.past_key_values, [int(nxt)]
            t = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                past = out.past_key_values
                tokens.append(int(nxt))
            prefills.append(prefill)
            rates.append((new_tokens - 1) / (time.perf_counter() - t))
    return prefills[1:], rates[1:], tokens


def main(argv=None):
    from model.tools.cli import positive_int, report_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF file (default: shipped SmolLM2-135M)")
    parser.add_argument("--new-tokens", type=positive_int, default=64)
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--max-seq-len", type=positive_int, default=256)
    opts = parser.parse_args(argv)
    return report_errors("benchmark", run, opts)


def run(opts):
    from model.checkpoint import default_model_path

    path = opts.model or default_model_path()
    threads = os.cpu_count() or 1
    ours = bench_ttjax(path, opts.new_tokens, opts.runs, opts.max_seq_len)
    peer = bench_transformers(path, opts.new_tokens, opts.runs, threads)
    med = statistics.median
    print(f"greedy batch 1, float32, {opts.new_tokens} new tokens, median of {opts.runs} runs, {threads} CPU threads")
    print(f"{'':24}{'prefill ms':>12}{'decode tokens/s':>18}")
    print(f"{'ttjax':24}{med(ours[0]) * 1e3:>12.1f}{med(ours[1]):>18.1f}")
    print(f"{'transformers (torch)':24}{med(peer[0]) * 1e3:>12.1f}{med(peer[1]):>18.1f}")
    print(f"{'ratio ttjax / peer':24}{med(ours[0]) / med(peer[0]):>12.2f}{med(ours[1]) / med(peer[1]):>18.2f}")
    print(f"same greedy tokens: {ours[2] == peer[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

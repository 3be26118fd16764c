"""Benchmark: ttjax against transformers' LlamaForCausalLM on the same GGUF, in one run.

Both run greedy batch-1 generation in float32 on the CPU: a prefill of the prompt, then
KV-cached decode steps, timed as `ttjax bench` times them (model.tools.bench_ttjax and
model.tools.peers), here in one process. Prints the median over --runs of the time to first
token and decode tokens/s for each, and the ratios. Needs the test extras (torch, transformers).
`ttjax bench` measures more (batch 32, long prefill, memory, the roofline, llama.cpp).

    python demos/benchmark.py [--new-tokens 64] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys

PROMPT = "The capital of France is"


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
    from model.serving.build import build_generator
    from model.tools.bench_ttjax import decode_runs
    from model.tools.peers import threads, transformers_decode, transformers_model

    path = opts.model or default_model_path()
    gen = build_generator(path, max_seq_len=opts.max_seq_len, needs_tokenizer=True)
    ids = gen.tokenizer.encode(PROMPT)
    ours = decode_runs(gen, ids, 1, opts.new_tokens, opts.runs)
    peer = transformers_decode(transformers_model(path), ids, 1, opts.new_tokens, opts.runs)
    med = statistics.median
    print(f"greedy batch 1, float32, {opts.new_tokens} new tokens, median of {opts.runs} runs, {threads()} CPU threads")
    print(f"{'':24}{'TTFT ms':>12}{'decode tokens/s':>18}")
    for name, r in (("ttjax", ours), ("transformers (torch)", peer)):
        print(f"{name:24}{med(r['ttft_s']) * 1e3:>12.1f}{med(r['decode_tokens_per_s']):>18.1f}")
    print(f"{'ratio ttjax / peer':24}{med(ours['ttft_s']) / med(peer['ttft_s']):>12.2f}"
          f"{med(ours['decode_tokens_per_s']) / med(peer['decode_tokens_per_s']):>18.2f}")
    print(f"same greedy tokens: {ours['tokens'] == peer['tokens']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

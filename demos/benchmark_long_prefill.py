"""Benchmark: an 8,000-token prompt (A Tale of Two Cities, shipped) prefilled in chunks, against one whole
prefill and against transformers' LlamaForCausalLM on the same GGUF, with peak memory.

Each variant runs in its own process, so its peak resident memory (ru_maxrss) is its own:
  - ttjax chunked: paged KV cache (block 64), chunks of --chunk tokens (default 2048), one program
    for every chunk;
  - ttjax whole: the same paged cache, the prompt as one 8192-token prefill;
  - transformers: one forward over the prompt (float32, torch SDPA), the peer.
For ttjax it also prints XLA's planned scratch memory for the prefill program (the activations
and attention temporaries; weights and cache are arguments). Prints medians over --runs and
the ratios against the peer. Needs the test extras (torch, transformers).

    python demos/benchmark_long_prefill.py [--tokens 8000] [--chunk 2048] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ttjax(tokens: int, chunk: int, runs: int) -> dict:
    from model.buckets import get_max_prefill_chunk_size, get_padded_prefill_len
    from model.config import PagedAttentionConfig
    from model.serving.build import build_generator
    from model.tools.bench_ttjax import prefill_runs, text_tokens

    paged = PagedAttentionConfig(block_size=64, max_num_blocks=128)
    gen = build_generator(max_seq_len=8192, paged=paged, max_prefill_chunk_size=chunk)
    ids = text_tokens(gen.tokenizer, tokens)
    padded = get_padded_prefill_len(len(ids))
    size = get_max_prefill_chunk_size(padded, chunk)
    program = gen.prefill_program(size, None, (1, gen.prefill_table_width(padded, size < padded)), size < padded)
    scratch = program.memory_analysis().temp_size_in_bytes / 2**20
    res = prefill_runs(gen, ids, runs, warm_up=False)  # compiled above: the first run is timed too
    return dict(seconds=res["seconds"], top1=res["top1"], chunks=padded // size, chunk=size, scratch_mb=scratch, peak_mb=peak_mb())


def run_transformers(tokens: int, runs: int) -> dict:
    from model.checkpoint import default_model_path, load_checkpoint
    from model.tools.bench_ttjax import text_tokens
    from model.tools.peers import transformers_model, transformers_prefill

    path = default_model_path()
    ids = text_tokens(load_checkpoint(path, max_seq_len=8192, progress=False).tokenizer, tokens)
    res = transformers_prefill(transformers_model(path), ids, runs, warm_up=False)
    return dict(seconds=res["seconds"], top1=res["top1"], peak_mb=peak_mb())


def child(variant: str, tokens: int, chunk: int, runs: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--variant", variant, "--tokens", str(tokens), "--chunk", str(chunk), "--runs", str(runs)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    from model.tools.cli import positive_int, report_errors

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=positive_int, default=8000, help="prompt length, at most 8192 (the whole-prefill variant's cache)")
    p.add_argument("--chunk", type=positive_int, default=2048, help="max_prefill_chunk_size of the chunked variant (a multiple of 32)")
    p.add_argument("--runs", type=positive_int, default=3)
    p.add_argument("--variant", choices=("chunked", "whole", "transformers"), help=argparse.SUPPRESS)
    return report_errors("benchmark_long_prefill", run, p.parse_args(argv))


def run(a):
    from model.errors import ConfigError

    if a.tokens > 8192:
        raise ConfigError(f"--tokens {a.tokens} is past 8192, the cache of the whole-prefill variant.")
    if a.chunk % 32:
        raise ConfigError(f"--chunk {a.chunk} is not a multiple of 32 (the tile height).")
    if a.variant:
        res = run_transformers(a.tokens, a.runs) if a.variant == "transformers" else run_ttjax(a.tokens, a.chunk if a.variant == "chunked" else 8192, a.runs)
        print(json.dumps(res))
        return 0
    rows = {name: child(name, a.tokens, a.chunk, a.runs) for name in ("chunked", "whole", "transformers")}
    peer = rows["transformers"]
    print(f"prefill of {a.tokens} tokens, median of {a.runs} runs (each variant in its own process)")
    print(f"{'':28s}{'seconds':>9s}{'peak RSS MB':>13s}{'XLA scratch MB':>16s}{'top-1':>8s}")
    for name, r in rows.items():
        label = {"chunked": f"ttjax, {r.get('chunks')} chunks of {r.get('chunk')}", "whole": "ttjax, whole (8192)",
                 "transformers": "transformers (torch)"}[name]
        scratch = f"{r['scratch_mb']:16.1f}" if "scratch_mb" in r else f"{'-':>16s}"
        print(f"{label:28s}{statistics.median(r['seconds']):9.2f}{r['peak_mb']:13.0f}{scratch}{r['top1']:8d}")
    for name in ("chunked", "whole"):
        r = rows[name]
        print(f"ratio ttjax {name} / peer: time {statistics.median(r['seconds']) / statistics.median(peer['seconds']):.2f}, "
              f"peak RSS {r['peak_mb'] / peer['peak_mb']:.2f}")
    print(f"same top-1 token: {len({r['top1'] for r in rows.values()}) == 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

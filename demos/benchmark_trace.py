"""Benchmark: what the trace and the async output buy in decode, measured in one run on the shipped model.

Three ways to run the same decode step (the same function, the same batch, the same cache):
  - traced: compiled once and replayed (ttjax's stand-in for TT's trace capture / execute_trace),
    its output token fed back on device, the host copy started asynchronously and read one step
    late (the report's async output);
  - traced, sync: the same compiled step, but the host reads each step's tokens before it
    dispatches the next (a host round trip per step);
  - eager: op by op, every op dispatched from Python (TT without a trace).
Prints the median step time of each, tokens/s/user, and the ratios against eager.

    python demos/benchmark_trace.py [--batch 32] [--steps 32] [--eager-steps 3] [--runs 3] [--json]

--json prints one object instead: {"batch", "max_seq_len", "runs", "steps", "eager_steps", "same_tokens",
"rows": [{"name", "ms_per_step" (median), "ms_per_step_runs", "tokens_per_s_per_user", "tokens_per_s", "vs_eager"}]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv=None):
    from model.tools.cli import positive_int, report_errors

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--steps", type=positive_int, default=32, help="decode steps per traced run")
    p.add_argument("--eager-steps", type=positive_int, default=3, help="decode steps per eager run (slow)")
    p.add_argument("--runs", type=positive_int, default=3)
    p.add_argument("--max-seq-len", type=positive_int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return report_errors("benchmark_trace", run, p.parse_args(argv))


def run(a):
    import jax
    import numpy as np

    from model.serving.build import build_generator

    gen = build_generator(max_batch_size=a.batch, max_seq_len=a.max_seq_len)
    ids = gen.tokenizer.encode("It was the best of times, it was the worst of times,")
    cache = gen.allocate_kv_cache()
    for user in range(a.batch):  # every slot busy, each user at the same point of the same prompt
        logits, cache = gen.prefill_forward_text(ids, cache, user_id=user)
    first = np.full(a.batch, int(np.argmax(logits)), np.int32)
    start = np.full(a.batch, len(ids), np.int32)

    def traced(steps, sync):
        nonlocal cache
        tokens, pos = jax.numpy.asarray(first), jax.numpy.asarray(start)
        pending, seen = None, []
        t = time.perf_counter()
        for _ in range(steps):
            tokens, _, pos, cache = gen.decode_forward(tokens, pos, cache)
            if sync:
                seen.append(np.asarray(tokens))
            else:
                tokens.copy_to_host_async()
                if pending is not None:
                    seen.append(np.asarray(pending))
                pending = tokens
        if pending is not None:
            seen.append(np.asarray(pending))
        return (time.perf_counter() - t) / steps, np.stack(seen)

    def eager(steps):
        nonlocal cache
        tokens, pos, seen = first, start, []
        t = time.perf_counter()
        for _ in range(steps):
            tokens, _, pos, cache = gen.decode_forward(tokens, pos, cache, enable_trace=False)
            seen.append(np.asarray(tokens))
        return (time.perf_counter() - t) / steps, np.stack(seen)

    traced(2, False)  # compile
    eager(1)  # warm the op caches
    results = {"traced, async output": [], "traced, sync output": [], "eager (no trace)": []}
    for _ in range(a.runs):
        dt, tok_async = traced(a.steps, False)
        results["traced, async output"].append(dt)
        dt, tok_sync = traced(a.steps, True)
        results["traced, sync output"].append(dt)
        dt, tok_eager = eager(a.eager_steps)
        results["eager (no trace)"].append(dt)
    same = (tok_async == tok_sync).all() and (tok_eager == tok_sync[: a.eager_steps]).all()
    base = statistics.median(results["eager (no trace)"])
    medians = {name: statistics.median(times) for name, times in results.items()}
    rows = [{"name": name, "ms_per_step": m * 1e3, "ms_per_step_runs": [t * 1e3 for t in results[name]],
             "tokens_per_s_per_user": 1 / m, "tokens_per_s": a.batch / m, "vs_eager": base / m} for name, m in medians.items()]
    if a.json:
        print(json.dumps({"batch": a.batch, "max_seq_len": a.max_seq_len, "runs": a.runs, "steps": a.steps,
                          "eager_steps": a.eager_steps, "same_tokens": bool(same), "rows": rows}))
        return 0
    print(f"decode, batch {a.batch}, float32, median of {a.runs} runs ({a.steps} traced / {a.eager_steps} eager steps each)")
    print(f"{'':24s}{'ms/step':>10s}{'tok/s/user':>12s}{'tok/s':>10s}{'vs eager':>10s}")
    for r in rows:
        print(f"{r['name']:24s}{r['ms_per_step']:10.1f}{r['tokens_per_s_per_user']:12.1f}{r['tokens_per_s']:10.1f}{r['vs_eager']:10.2f}")
    print(f"same tokens in all three: {bool(same)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load test: many streaming chat clients against `ttjax serve`, with throughput and latency percentiles.

    python demos/load_test.py --concurrency 64 --requests 256 [--max-tokens 64] [--url http://host:port]

Without --url it starts the server in this process on a free port of 127.0.0.1 (the shipped
SmolLM2, --max-batch-size slots, a paged cache) and, after the clients are done, serves the same
requests with the engine alone (Engine.run, no HTTP) as the peer measured in the same run: the
ratio is what serving over HTTP costs. Each client keeps one request open at a time through the
official openai client (AsyncOpenAI, streaming); the questions of demos/sample_prompts are sent
in turn, each asking for exactly --max-tokens tokens (ignore_eos), so runs compare.

Reported, as vLLM's benchmark_serving reports them: requests/s and output tokens/s over the whole
run; TTFT (request sent to first token), TPOT ((end - first token) / (tokens - 1)), ITL (the gap
between two chunks) and end-to-end latency, at p50 / p90 / p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run as a script from anywhere in the checkout

from demos.demo import DEFAULT_INPUT, load_prompts  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


async def one(client, model: str, question: str, opts) -> dict:
    start = time.perf_counter()
    stamps, tokens = [], 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=opts.max_tokens, temperature=opts.temperature,
        seed=0, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        elif chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    end = time.perf_counter()
    if not stamps:
        stamps = [end]
    return {"ttft": stamps[0] - start, "e2e": end - start, "tokens": tokens,
            "tpot": (end - stamps[0]) / (tokens - 1) if tokens > 1 else 0.0, "itl": [b - a for a, b in zip(stamps, stamps[1:])]}


async def drive(url: str, api_key: str, opts, questions: list[str]) -> tuple[list[dict], float, str]:
    import openai

    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=3600) as client:
        model = (await client.models.list()).data[0].id
        await one(client, model, questions[0], opts)  # compiles what the first request needs, before the clock
        queue = list(range(opts.requests))
        results: list[dict] = []

        async def worker():
            while queue:
                i = queue.pop(0)
                results.append(await one(client, model, questions[i % len(questions)], opts))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(opts.concurrency)))
        return results, time.perf_counter() - start, model


def engine_alone(gen, questions: list[str], opts) -> float:
    """The same requests served by the engine with no HTTP (all queued at once); returns the seconds taken."""
    from model.serving.engine import Engine, Request
    from model.serving.sampling import SamplingParams

    tok = gen.tokenizer
    sampling = SamplingParams(temperature=opts.temperature, seed=0)
    requests = [Request(tuple(tok.encode_chat([{"role": "user", "content": questions[i % len(questions)]}])), opts.max_tokens,
                        sampling, stop_at_eos=False) for i in range(opts.requests)]
    engine = Engine(gen)
    engine.run(requests[:1])  # compile, as the clients' first request did
    engine = Engine(gen)
    start = time.perf_counter()
    engine.run(requests)
    return time.perf_counter() - start


def report(results: list[dict], took: float, opts, model: str, alone_s: float | None) -> dict:
    tokens = sum(r["tokens"] for r in results)
    out = {
        "model": model, "concurrency": opts.concurrency, "requests": len(results), "max_tokens": opts.max_tokens,
        "duration_s": took, "requests_per_s": len(results) / took, "output_tokens_per_s": tokens / took,
        "ttft_s": percentiles([r["ttft"] for r in results]), "tpot_s": percentiles([r["tpot"] for r in results]),
        "itl_s": percentiles([g for r in results for g in r["itl"]]), "e2e_s": percentiles([r["e2e"] for r in results]),
        "completed": sum(r["tokens"] == opts.max_tokens for r in results),
    }
    if alone_s is not None:
        out["engine_alone_output_tokens_per_s"] = opts.requests * opts.max_tokens / alone_s
        out["ratio_server_to_engine_alone"] = out["output_tokens_per_s"] / out["engine_alone_output_tokens_per_s"]
    if opts.json:
        print(json.dumps(out))
        return out
    print(f"{model}: {len(results)} chat requests of {opts.max_tokens} tokens, {opts.concurrency} clients at once, "
          f"{out['completed']} complete, {took:.1f} s")
    print(f"throughput  {out['requests_per_s']:.2f} requests/s, {out['output_tokens_per_s']:.1f} output tokens/s")
    if alone_s is not None:
        print(f"engine alone (no HTTP): {out['engine_alone_output_tokens_per_s']:.1f} output tokens/s; "
              f"ratio server / engine alone {out['ratio_server_to_engine_alone']:.2f}")
    print(f"{'ms':<10}{'p50':>10}{'p90':>10}{'p99':>10}")
    for name in ("ttft", "tpot", "itl", "e2e"):
        p = out[f"{name}_s"]
        print(f"{name.upper():<10}{p['p50'] * 1e3:>10.1f}{p['p90'] * 1e3:>10.1f}{p['p99'] * 1e3:>10.1f}")
    return out


def main(argv=None):
    from model.tools.cli import positive_int, report_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=positive_int, default=64, help="clients, each with one request open at a time")
    parser.add_argument("--requests", type=positive_int, default=256, help="requests in all")
    parser.add_argument("--max-tokens", type=positive_int, default=64, help="tokens each request generates")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 greedy (default), else sampled with seed 0")
    parser.add_argument("--url", default=None, help="a running server (default: start one here)")
    parser.add_argument("--api-key", default=os.environ.get("TTJAX_API_KEY", "none"), help="the server's key, if it has one")
    parser.add_argument("--input", default=DEFAULT_INPUT, help="JSON list of {prompt} questions")
    parser.add_argument("--model", default=None, help="checkpoint for the server started here (default: shipped SmolLM2-135M)")
    parser.add_argument("--max-batch-size", type=positive_int, default=32, help="slots of the server started here (default 32)")
    parser.add_argument("--max-seq-len", type=positive_int, default=512, help="its context per request (default 512)")
    parser.add_argument("--no-peer", action="store_true", help="skip the engine-alone run")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    opts = parser.parse_args(argv)
    return report_errors("load_test", run, opts)


def run(opts) -> int:
    questions = load_prompts(opts.input)
    if opts.url:
        results, took, model = asyncio.run(drive(opts.url.rstrip("/"), opts.api_key, opts, questions))
        report(results, took, opts, model, None)
        return 0
    from model.serving.build import build_generator
    from model.serving.engine import Engine
    from model.serving.engine_loop import EngineLoop
    from model.serving.openai_protocol import ServedModel
    from model.serving.server import Server

    gen = build_generator(opts.model, paged=True, max_batch_size=opts.max_batch_size, max_seq_len=opts.max_seq_len, needs_tokenizer=True)
    engine = Engine(gen)
    engine.warm_up([[0]], sampled=opts.temperature > 0)
    served = ServedModel(gen.args.model_name, gen.tokenizer, gen.args.max_seq_len, gen.args.vocab_size)
    server = Server(EngineLoop(engine, max_queue=max(opts.concurrency, 1)), served, port=0, api_key=opts.api_key).start()
    try:
        results, took, model = asyncio.run(drive(server.url, opts.api_key, opts, questions))
    finally:
        server.stop()
    alone = None if opts.no_peer else engine_alone(gen, questions, opts)
    report(results, took, opts, model, alone)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The text demo (`make demo`), after tt-metal's simple_text_demo: a JSON file of prompts served by
continuous batching on the shipped SmolLM2-135M-Instruct (or --model), each prompt in the model's
chat template, tokens streamed as they come, then time to first token and tokens/s per user.

    python demos/demo.py [--input demos/sample_prompts/input_data_questions.json] [--batch-size 8]
                         [--max-new-tokens 64] [--temperature 0.7 --top-k 32 --top-p 0.9 --seed 1]
                         [--mesh 1x8] [--paged] [--no-chat] [--stream-user 0]

The input file is a list of {"prompt": ..., "max_length": optional characters}, tt-metal's format.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

DEFAULT_INPUT = os.path.join(os.path.dirname(__file__), "sample_prompts", "input_data_questions.json")


def load_prompts(path: str) -> list[str]:
    """tt-metal's prompt file: a JSON list of {"prompt": text, "max_length": optional characters}."""
    from model.errors import InputFileError

    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except OSError as e:
        raise InputFileError(f"prompt file {path} cannot be read: {e.strerror}.") from e
    except json.JSONDecodeError as e:
        raise InputFileError(f"prompt file {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from e
    except UnicodeDecodeError as e:
        raise InputFileError(f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start}).") from e
    if not isinstance(entries, list) or not entries:
        raise InputFileError(f"prompt file {path} must hold a non-empty JSON list of {{\"prompt\": ...}} objects.")
    prompts = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("prompt"), str) or not e["prompt"]:
            raise InputFileError(f"prompt file {path}: entry {i} has no non-empty \"prompt\" string.")
        limit = e.get("max_length")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InputFileError(f"prompt file {path}: entry {i} has max_length {limit!r}; it must be a positive number of characters.")
        prompts.append(e["prompt"][:limit])  # tt-metal: max_length cuts the text, in characters
    return prompts


def main(argv=None):
    from model.tools.cli import report_errors

    return report_errors("demo", run, argv)


def run(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", default=DEFAULT_INPUT, help="JSON list of {\"prompt\": ...}")
    p.add_argument("--model", default=None, help="checkpoint (default: shipped SmolLM2-135M GGUF)")
    p.add_argument("--batch-size", type=int, default=8, help="decode slots (1..32)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-seq-len", type=int, default=512, help="KV cache length (at most the model's context unless --allow-past-context)")
    p.add_argument("--allow-past-context", action="store_true", help="allow --max-seq-len past the context the model was trained for")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="request i uses seed + i")
    p.add_argument("--mesh", default=None, help="tensor-parallel on a ROWSxCOLS mesh, e.g. 1x8")
    p.add_argument("--paged", action="store_true", help="paged KV cache (block 32)")
    p.add_argument("--no-chat", action="store_true", help="send the prompts as raw text, not as chat turns")
    p.add_argument("--stream-user", type=int, default=0, help="whose tokens to stream live (-1: nobody)")
    opts = p.parse_args(argv)

    from model.errors import ConfigError
    from model.serving.build import build_generator
    from model.serving.engine import Engine, Request
    from model.serving.sampling import SamplingParams
    from model.serving.streaming import TextStreamer

    prompts = load_prompts(opts.input)
    if not -1 <= opts.stream_user < len(prompts):
        raise ConfigError(f"--stream-user {opts.stream_user} is not a user: 0..{len(prompts) - 1}, or -1 for nobody.")
    t = time.perf_counter()
    gen = build_generator(opts.model, opts.mesh, paged=opts.paged, max_batch_size=opts.batch_size, max_seq_len=opts.max_seq_len,
                          allow_past_context=opts.allow_past_context, needs_tokenizer=True, progress=True)
    tok = gen.tokenizer
    where = f" on a {opts.mesh} mesh" if opts.mesh else ""
    print(f"loaded {gen.args.model_name} in {time.perf_counter() - t:.1f} s{where}; {len(prompts)} prompts, {opts.batch_size} slots")

    requests = []
    for i, prompt in enumerate(prompts):
        ids = tok.encode(prompt) if opts.no_chat else tok.encode_chat([{"role": "user", "content": prompt}])
        sampling = SamplingParams(temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, seed=opts.seed + i)
        requests.append(Request(ids, opts.max_new_tokens, sampling))
    streamer = TextStreamer(tok) if opts.stream_user >= 0 else None
    streamed = requests[opts.stream_user].request_id if streamer else None

    def on_token(req, token):
        if req.request_id == streamed:
            streamer(token)

    engine = Engine(gen, on_token=on_token)
    # Compile before the clock starts: the decode step and the prefill buckets the prompts use.
    t = time.perf_counter()
    engine.warm_up([r.prompt for r in requests])
    print(f"compiled in {time.perf_counter() - t:.1f} s")
    if streamer:
        print(f"\nuser {opts.stream_user} >>> {prompts[opts.stream_user]}\n", flush=True)
    t = time.perf_counter()
    outputs = engine.run(requests)
    wall = time.perf_counter() - t
    print("\n")
    for i, (prompt, r) in enumerate(zip(prompts, outputs)):
        print(f"[user {i}] {prompt}\n{r.text.strip()}\n")
    ttft = [r.time_to_first_token for r in outputs]
    rates = [r.decode_tokens_per_s for r in outputs]
    total = sum(len(r.tokens) for r in outputs)
    print(f"time to first token: median {statistics.median(ttft) * 1e3:.0f} ms, max {max(ttft) * 1e3:.0f} ms")
    print(f"decode: median {statistics.median(rates):.1f} tokens/s/user; {total} tokens in {wall:.1f} s = {total / wall:.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

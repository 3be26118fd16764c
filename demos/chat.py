"""A chat demo: talk to the shipped SmolLM2-135M-Instruct (or --model) in its chat template, replies
streamed token by token. Empty line or Ctrl-D ends it.

    python demos/chat.py [--temperature 0.7 --top-p 0.9] [--max-new-tokens 256] [--mesh 1x2]
"""

from __future__ import annotations

import argparse
import sys

from mesh import processes


def main(argv=None, stdin=None):
    from model.tools.cli import report_errors

    return report_errors("chat", run, argv, stdin)


def run(argv=None, stdin=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-seq-len", type=int, default=2048, help="KV cache length (at most the model's context unless --allow-past-context)")
    p.add_argument("--allow-past-context", action="store_true", help="allow --max-seq-len past the context the model was trained for")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--mesh", default=None)
    opts = p.parse_args(argv)
    stdin = stdin or sys.stdin

    from model.errors import SequenceLengthError
    from model.serving.build import build_generator
    from model.serving.engine import Engine, Request
    from model.serving.sampling import SamplingParams
    from model.serving.streaming import TextStreamer

    gen = build_generator(opts.model, opts.mesh, max_seq_len=opts.max_seq_len, allow_past_context=opts.allow_past_context,
                          needs_tokenizer=True)
    args, tok = gen.args, gen.tokenizer
    messages = [{"role": "system", "content": opts.system}] if opts.system else []
    turn = 0
    while True:
        print("you> ", end="", flush=True)
        line = processes.read_input(stdin.readline)  # on a multi-process mesh, process 0 reads for all
        if not line.strip():
            return 0
        messages.append({"role": "user", "content": line.strip()})
        ids = tok.encode_chat(messages)
        room = args.max_seq_len - len(ids)
        if room < 1:
            raise SequenceLengthError(f"the conversation is {len(ids)} tokens, max_seq_len = {args.max_seq_len}; start a new one.")
        streamer = TextStreamer(tok)
        print("bot> ", end="", flush=True)
        sampling = SamplingParams(temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, seed=opts.seed + turn)
        req = Request(ids, min(opts.max_new_tokens, room), sampling)
        out = Engine(gen, on_token=lambda r, t: streamer(t)).run([req])[0]
        print()
        messages.append({"role": "assistant", "content": out.text.strip()})
        turn += 1


if __name__ == "__main__":
    sys.exit(main())

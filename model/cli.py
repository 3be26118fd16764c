"""The `ttjax` command line.

    ttjax generate --prompt TEXT --max-new-tokens N [--json] [--model PATH] [--chat] [--max-seq-len L]

--json prints one object: {"text", "tokens", "prefill_s", "decode_tokens_per_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys

from ttjax.errors import TTJaxError

DTYPES = ("float32", "bfloat16")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def run_generate(opts) -> int:
    import jax.numpy as jnp

    from model.checkpoint import load_checkpoint
    from model.errors import SequenceLengthError, TokenizerError
    from model.generator import Generator
    from model.streaming import TextStreamer

    ck = load_checkpoint(opts.model, max_seq_len=opts.max_seq_len, dtype=getattr(jnp, opts.dtype), progress=not opts.json)
    if ck.tokenizer is None:
        raise TokenizerError(f"{ck.path} has no tokenizer, so a text prompt cannot be encoded.")
    tok = ck.tokenizer
    ids = tok.encode_chat([{"role": "user", "content": opts.prompt}]) if opts.chat else tok.encode(opts.prompt)
    args = ck.args
    if opts.max_seq_len is None:
        # Size the cache to the request (in 256-token steps, so similar requests share a compile),
        # within the model's trained context.
        need = len(ids) + opts.max_new_tokens
        if need > args.max_context_len:
            raise SequenceLengthError(
                f"the prompt ({len(ids)} tokens) plus max_new_tokens ({opts.max_new_tokens}) is {need} tokens, "
                f"more than the model's context of {args.max_context_len}."
            )
        args = args.replace(max_seq_len=min(args.max_context_len, _round_up(need, 256)))
    gen = Generator(ck.params, args, tok)

    result = gen.generate(ids, opts.max_new_tokens, on_token=None if opts.json else TextStreamer(tok))
    if opts.json:
        print(
            json.dumps(
                {
                    "text": result.text,
                    "tokens": result.tokens,
                    "prefill_s": result.prefill_s,
                    "decode_tokens_per_s": result.decode_tokens_per_s,
                    "prompt_tokens": result.prompt_tokens,
                    "compile_s": result.compile_s,
                    "stop_reason": result.stop_reason,
                    "model": args.model_name,
                    "max_seq_len": args.max_seq_len,
                }
            )
        )
    else:
        print()
        print(
            f"[{result.prompt_tokens} prompt tokens, prefill {result.prefill_s * 1e3:.0f} ms, "
            f"{len(result.tokens)} new tokens at {result.decode_tokens_per_s:.1f} tokens/s, compile {result.compile_s:.1f} s]",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttjax", description="Llama inference the TT-NN way, in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="greedy generation from a prompt")
    g.add_argument("--prompt", required=True, help="the prompt text")
    g.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    g.add_argument("--model", default=None, help="a .gguf file, Hugging Face folder or Meta folder (default: shipped SmolLM2-135M)")
    g.add_argument("--max-seq-len", type=int, default=None, help="KV cache length (default: fits the request)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="weight and activation dtype (default float32)")
    g.set_defaults(func=run_generate)
    return parser


def main(argv=None) -> int:
    opts = build_parser().parse_args(argv)
    try:
        return opts.func(opts)
    except TTJaxError as e:
        print(f"ttjax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

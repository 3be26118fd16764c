"""`ttjax serve`: the model behind an OpenAI-compatible API (model.serving.server).

    ttjax serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--mesh 1x8] [--precision performance]
                [--max-batch-size 32] [--max-seq-len 2048] [--paged [--kv-blocks N]] [--api-key KEY]

Every option is checked before the model loads; the decode step (greedy and sampled) and the prefill
of short prompts are compiled before the port opens, so the first request does not pay for them
(a longer prompt compiles its bucket when it first comes). One line on stderr says where it listens.
"""

from __future__ import annotations

import os
import sys

from mesh import processes
from model.config import check_users
from model.errors import ConfigError, SequenceLengthError, naming

DEFAULT_MAX_SEQ_LEN = 2048  # or the model's context, if shorter: a 32-slot cache of a long context would not fit in memory
ENV_API_KEY = "TTJAX_API_KEY"  # the key without putting it on the process list


def add_parser(sub, positive_int, precisions, add_mesh_options) -> None:
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, streaming) over continuous batching")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one, printed at start)")
    s.add_argument("--model", default=None, help="a .gguf file, Hugging Face folder or Meta folder (default: shipped SmolLM2-135M)")
    s.add_argument("--served-model-name", default=None, help="the name clients ask for (default: the model's name)")
    add_mesh_options(s)
    s.add_argument("--precision", choices=precisions, default="float32", help="a tt_transformers precision config (default float32)")
    s.add_argument("--max-batch-size", type=positive_int, default=32, help="decode slots served at once (default 32, TT's)")
    s.add_argument("--max-seq-len", type=positive_int, default=None,
                   help=f"context per request, prompt plus new tokens (default: the model's, at most {DEFAULT_MAX_SEQ_LEN}); "
                        "at most the model's trained context unless --allow-past-context")
    s.add_argument("--allow-past-context", action="store_true", help="allow --max-seq-len past the model's trained context")
    s.add_argument("--paged", action="store_true", help="paged KV cache: requests hold blocks of 32 positions as they need them")
    s.add_argument("--kv-blocks", type=positive_int, default=None,
                   help="blocks in the paged pool (default: every slot's max-seq-len); fewer makes requests wait for blocks")
    s.add_argument("--max-queue", type=int, default=128, help="requests that may wait for a slot; past it, 429 (default 128)")
    s.add_argument("--api-key", default=None, help=f"a key every /v1 and /metrics request must carry as a Bearer token (or ${ENV_API_KEY})")
    s.add_argument("--max-body-bytes", type=positive_int, default=2 << 20, help="largest request body (default 2 MiB)")
    s.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds streams may run on after SIGTERM (default 30)")
    s.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="warning", help="uvicorn's")
    s.set_defaults(func=run)


def run(opts) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"ttjax serve needs the serve extra ({e.name} is missing): pip install 'ttjax[serve]'.") from None
    from model.buckets import prefill_extent
    from model.checkpoint import open_checkpoint
    from model.config import PagedAttentionConfig
    from model.serving.build import build_generator, generator_args, mesh_device_for
    from model.serving.engine import Engine
    from model.serving.engine_loop import EngineLoop
    from model.serving.openai_protocol import ServedModel
    from model.serving.server import Server, listening_socket

    group = processes.group()
    if group is not None and group.num_processes > 1:
        raise ConfigError(f"serve runs in one process; it cannot be one of {group.num_processes} under ttjax launch (give it a --mesh of this host's devices).")
    if not 0 <= opts.port <= 65535:
        raise ConfigError(f"--port {opts.port} is outside 0..65535.")
    check_users("--max-batch-size", opts.max_batch_size)
    if opts.max_queue < 0:
        raise ConfigError(f"--max-queue {opts.max_queue} must be 0 or more.")
    if not opts.shutdown_timeout >= 0:
        raise ConfigError(f"--shutdown-timeout {opts.shutdown_timeout} must be 0 or more seconds.")
    if opts.kv_blocks is not None and not opts.paged:
        raise ConfigError(f"--kv-blocks {opts.kv_blocks} sizes a paged cache; add --paged.")
    api_key = opts.api_key or os.environ.get(ENV_API_KEY) or None
    with naming("--host/--port"):
        listening_socket(opts.host, opts.port).close()  # a busy port fails now, not after the load
    with naming("--mesh"):
        mesh_device = mesh_device_for(opts.mesh)
    with naming("--model"):
        source = open_checkpoint(opts.model)
    config = source.args
    max_seq_len = opts.max_seq_len or min(config.max_context_len, DEFAULT_MAX_SEQ_LEN)
    # A prompt whose bucket passes the prefill chunk is prefilled in chunks, which read the earlier ones through a
    # paged cache: such a context pages by itself, as `ttjax generate` does.
    paged_by_itself = not opts.paged and prefill_extent(max_seq_len) > config.max_prefill_chunk_size
    paged = False
    if opts.paged or paged_by_itself:
        per_user = PagedAttentionConfig().blocks_for(max_seq_len)
        blocks = opts.kv_blocks or per_user * opts.max_batch_size
        if blocks < per_user:
            raise SequenceLengthError(f"--kv-blocks {blocks} holds {blocks * 32} positions, fewer than one request of --max-seq-len "
                                      f"{max_seq_len} may need ({per_user} blocks).")
        paged = PagedAttentionConfig(block_size=32, max_num_blocks=blocks)
    options = dict(mesh_device=mesh_device, precision=opts.precision, paged=paged, max_batch_size=opts.max_batch_size,
                   max_seq_len=max_seq_len, allow_past_context=opts.allow_past_context, **{k: v for k, v in (("ccl", opts.ccl), ("norm", opts.norm)) if v is not None})
    generator_args(config, **options)  # bad flags fail before the load
    source.require_tokenizer()
    options.pop("mesh_device")
    gen = build_generator(source, mesh_device, needs_tokenizer=True, progress=sys.stderr.isatty(), **options)
    engine = Engine(gen)
    engine.warm_up([[0]], sampled=None)  # the decode step, greedy and sampled, and the shortest prefill bucket
    name = opts.served_model_name or os.path.basename(os.path.normpath(str(source.path))).removesuffix(".gguf")
    served = ServedModel(name, gen.tokenizer, gen.args.max_seq_len, gen.args.vocab_size)
    server = Server(EngineLoop(engine, max_queue=opts.max_queue), served, host=opts.host, port=opts.port, api_key=api_key,
                    max_body_bytes=opts.max_body_bytes, shutdown_timeout=opts.shutdown_timeout, log_level=opts.log_level)
    cache = f"paged{' (chunked prefill needs it)' if paged_by_itself else ''}, {gen.paged.max_num_blocks} blocks" if gen.paged else "contiguous"
    mesh = f", mesh {opts.mesh}" if opts.mesh else ""
    print(f"ttjax serve: {served.name} on {server.url}/v1 ({opts.max_batch_size} slots{mesh}, max_seq_len {gen.args.max_seq_len}, "
          f"{gen.args.optimizations.name}, {cache} KV cache{', API key required' if api_key else ''})", file=sys.stderr, flush=True)
    return server.run()

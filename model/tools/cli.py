"""The `ttjax` command line.

    ttjax generate --prompt TEXT --max-new-tokens N [--json] [--model PATH] [--chat] [--mesh 1x8]
    ttjax comm-report --mesh 2x4 --mode decode [--json] [--model PATH | --model-name Llama-3.1-70B]
    ttjax accuracy [--json] [--configs float32,bfloat16,accuracy,performance] [--debug-pcc] [--fidelity off] [--sfpu off] [--reference-spread]
    ttjax precision --model-name Llama-3.1-70B --mode accuracy [--galaxy] [--json]
    ttjax bench [--json] [--model PATH] [--precision float32,accuracy] [--batch 1,32] [--mesh 1x2] [--profile DIR]
    ttjax serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--mesh 1x8] [--max-batch-size 32] [--paged] [--api-key KEY]
    ttjax perf-model --model-name Llama-3.1-8B --device N150 --mode decode [--batch 1] [--json] [--compare]
    ttjax launch --num-processes 2 [--coordinator HOST:PORT --process-id I] -- generate --mesh 2x4 ...

generate --json prints one object: {"text", "tokens", "prefill_s", "decode_tokens_per_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import traceback

from mesh import processes
from model.errors import ConfigError, SequenceLengthError, TTJaxError, naming

DTYPES = ("float32", "bfloat16")
PRECISIONS = ("float32", "bfloat16", "accuracy", "performance", "bfloat8_b", "bfloat4_b")


def positive_int(text: str) -> int:
    """An argparse type for counts (runs, steps, tokens): a bad one is argparse's one-line error, exit status 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tokens(n: int, kind: str = "") -> str:
    """'1 new token', '5 new tokens'."""
    return f"{n} {kind}token{'' if n == 1 else 's'}"


def _mesh_options(opts) -> dict:
    """--ccl / --norm, which place work on a mesh: refused without one (they would change nothing)."""
    given = {k: v for k, v in (("ccl", opts.ccl), ("norm", opts.norm)) if v is not None}
    if given and getattr(opts, "mesh", None) is None:
        flags = " and ".join(f"--{k} {v}" for k, v in given.items())
        raise ConfigError(f"{flags} place{'s' if len(given) == 1 else ''} work on a device mesh; add --mesh ROWSxCOLS.")
    return given


def _token_ids(text: str, vocab_size: int) -> list[int]:
    """--prompt-ids '1,2,3' -> [1, 2, 3], each a token of the vocabulary."""
    ids = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) >= vocab_size:
            raise ConfigError(f"--prompt-ids {text!r} holds {item!r}; each must be a token id in 0..{vocab_size - 1}.")
        ids.append(int(item))
    return ids


def run_generate(opts) -> int:
    if opts.max_new_tokens < 1:
        raise SequenceLengthError(f"--max-new-tokens {opts.max_new_tokens} must be at least 1.")
    from model.buckets import get_padded_prefill_len
    from model.checkpoint import open_checkpoint
    from model.config import named_config
    from model.params import held_nbytes, weight_nbytes
    from model.precision import parse_overrides
    from model.serving.build import build_generator, generator_args, mesh_device_for
    from model.serving.engine import generate
    from model.serving.streaming import TextStreamer
    from model.progress import note

    if opts.precision is not None and opts.dtype is not None:
        raise ConfigError(f"--dtype {opts.dtype} and --precision {opts.precision} both set the formats; give one.")
    with naming("--mesh"):
        mesh_device = mesh_device_for(opts.mesh)
    precision = (opts.precision or opts.dtype or "float32") + ("+fidelity=off" if opts.fidelity == "off" else "") + (
        "+sfpu=off" if opts.sfpu == "off" else "")
    with naming("--override"):
        overrides = parse_overrides(opts.override or [])
    options = dict(precision=precision, overrides=overrides,
                   allow_past_context=opts.allow_past_context, **_mesh_options(opts))
    if opts.model_name and opts.model:
        raise ConfigError(f"--model-name {opts.model_name} (dummy weights) and --model {opts.model} name two models; give one.")
    if opts.chat and opts.prompt_ids is not None:
        raise ConfigError("--chat wraps a text prompt in the chat template; --prompt-ids are tokens already, give --prompt.")
    if opts.model_name and opts.prompt_ids is None:
        raise ConfigError(f"--model-name {opts.model_name} gives dummy weights with no tokenizer; pass the prompt as --prompt-ids.")
    # A checkpoint is opened, not read: its weights go one at a time straight into the precision (a bfloat8_b model
    # never exists in float32), from the params cache when it holds them.
    with naming("--model-name" if opts.model_name else "--model"):
        source = named_config(opts.model_name) if opts.model_name else open_checkpoint(opts.model)
    config = source if opts.model_name else source.args
    generator_args(config, mesh_device=mesh_device, max_seq_len=opts.max_seq_len, **options)  # bad flags fail before the load
    tok = None if opts.model_name else source.tokenizer
    if opts.prompt_ids is not None:
        ids = _token_ids(opts.prompt_ids, config.vocab_size)
    else:
        tok = source.require_tokenizer()
        ids = tok.encode_chat([{"role": "user", "content": opts.prompt}]) if opts.chat else tok.encode(opts.prompt)
    if not ids:
        raise ConfigError(f"--prompt {opts.prompt!r} has no tokens; give some text.")
    max_seq_len = opts.max_seq_len
    if max_seq_len is not None and len(ids) + opts.max_new_tokens > max_seq_len:
        raise SequenceLengthError(
            f"the prompt has {tokens(len(ids))}, more than --max-seq-len {max_seq_len}." if len(ids) > max_seq_len else
            f"the prompt ({tokens(len(ids))}) plus --max-new-tokens {opts.max_new_tokens} is {len(ids) + opts.max_new_tokens} "
            f"tokens, more than --max-seq-len {max_seq_len}.")
    if max_seq_len is None:
        # Size the cache to the request (in 256-token steps, so similar requests share a compile), within the
        # model's trained context.
        need = len(ids) + opts.max_new_tokens
        if need > config.max_context_len:
            raise SequenceLengthError(
                f"the prompt ({tokens(len(ids))}) plus --max-new-tokens {opts.max_new_tokens} is {need} tokens, "
                f"more than the model's context of {config.max_context_len}."
            )
        max_seq_len = min(config.max_context_len, _round_up(need, 256))
    # A long prompt is prefilled in chunks, which read the earlier chunks through a paged cache.
    paged = opts.paged or get_padded_prefill_len(len(ids)) > config.max_prefill_chunk_size
    gen = build_generator(source, mesh_device, paged=paged, max_seq_len=max_seq_len, progress=not opts.json, **options)
    if not opts.json and not sys.stderr.isatty():  # a log hears why the next seconds are quiet (a terminal sees it end)
        note(f"compiling the prefill and decode programs for {tokens(len(ids), 'prompt ')} (or loading them from the compile cache) ...")
    result = generate(gen, ids, opts.max_new_tokens, on_token=None if opts.json or tok is None else TextStreamer(tok))
    args = gen.args
    # What each process holds (one entry in a process alone): on a multi-process mesh, each its share.
    held = processes.gather([held_nbytes(gen.params), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024])
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
                    "mesh": opts.mesh or "none",
                    "kv_cache": "paged" if args.paged_attention_config else "contiguous",
                    "precision": args.optimizations.name,
                    "weight_bytes": weight_nbytes(gen.params),
                    "processes": [{"process": i, "weight_bytes": w, "peak_rss_bytes": rss} for i, (w, rss) in enumerate(held)],
                }
            )
        )
    else:
        print(" ".join(map(str, result.tokens)) if tok is None else "")
        print(
            f"[{tokens(result.prompt_tokens, 'prompt ')}, prefill {result.prefill_s * 1e3:.0f} ms, "
            f"{tokens(len(result.tokens), 'new ')} at {result.decode_tokens_per_s:.1f} tokens/s, compile {result.compile_s:.1f} s]",
            file=sys.stderr,
        )
    return 0


def run_comm_report(opts) -> int:
    from model.serving.build import mesh_device_for

    with naming("--mesh"):
        mesh_device = mesh_device_for(opts.mesh)
    from model.checkpoint import load_args
    from model.tools.comm_report import comm_report, format_report
    from model.config import check_users, named_config

    with naming("--model-name" if opts.model_name else "--model"):
        if opts.model_name:
            args = named_config(opts.model_name, max_seq_len=opts.seq_len)
        else:
            args = load_args(opts.model, max_seq_len=opts.seq_len)
    if opts.seq_len > args.max_context_len:
        raise SequenceLengthError(f"--seq-len {opts.seq_len} is past {args.model_name}'s trained context of {args.max_context_len} tokens.")
    if opts.n_layers is not None:
        if not 1 <= opts.n_layers <= args.n_layers:
            raise ConfigError(f"--n-layers {opts.n_layers} is outside 1..{args.n_layers}, the layers of {args.model_name}.")
        args = args.replace(n_layers=opts.n_layers)
    if opts.precision is not None:  # what each collective carries (bfloat8_b CCL inputs on a Galaxy in tt's presets)
        from model.precision import ModelOptimizations

        with naming("--precision"):
            args = args.replace(optimizations=ModelOptimizations.named(opts.precision, args.model_name))
    batch = check_users("--batch", opts.batch) if opts.mode == "decode" else 1
    rep = comm_report(args, mesh_device, opts.mode, batch=batch, seq_len=opts.seq_len, **_mesh_options(opts))
    print(json.dumps(rep) if opts.json else format_report(rep))
    return 0


def run_accuracy(opts) -> int:
    from model.tools.accuracy import DEFAULT_CONFIGS, evaluate, format_report, pcc_debug
    from model.checkpoint import load_checkpoint
    from model.precision import parse_overrides

    configs = DEFAULT_CONFIGS if opts.configs is None else [c.strip() for c in opts.configs.split(",") if c.strip()]
    if not configs:
        raise ConfigError(f"--configs {opts.configs!r} names no precision config.")
    for switch, value in (("+fidelity=off", opts.fidelity), ("+sfpu=off", opts.sfpu)):
        if value == "off":
            configs = [c if switch in c else c + switch for c in configs]
    if opts.prefill_len < 1:
        raise ConfigError(f"--prefill-len {opts.prefill_len} must be at least 1.")
    if opts.decode_steps < 0:
        raise ConfigError(f"--decode-steps {opts.decode_steps} must be 0 or more.")
    if not -1 <= opts.pcc_threshold <= 1:  # also refuses nan
        raise ConfigError(f"--pcc-threshold {opts.pcc_threshold} is outside -1..1, the range of a PCC.")
    if opts.reference_spread and opts.reference != "transformers":
        raise ConfigError(f"--reference-spread measures transformers' reference; it has no meaning with --reference {opts.reference}.")
    from model.precision import ModelOptimizations

    with naming("--override"):
        overrides = parse_overrides(opts.override or [])
    for name in configs:  # every name checked before minutes of loading and references
        with naming("--configs"):
            ModelOptimizations.named(name)
    with naming("--model"):
        ck = load_checkpoint(opts.model, progress=not opts.json)
    progress = None if opts.json else (lambda r: print(f"  {r.name}: top-1 {100 * r.top1:.1f}%, top-5 {100 * r.top5:.1f}%, "
                                                       f"perplexity {r.perplexity:.2f} ({r.seconds:.0f} s)", file=sys.stderr))
    rep = evaluate(
        ck, configs, prefill_len=opts.prefill_len, decode_steps=opts.decode_steps, reference=opts.reference,
        overrides=overrides, progress=progress, reference_spread=opts.reference_spread,
    )
    if opts.json:
        print(json.dumps(rep))
    else:
        print(format_report(rep, opts.pcc_threshold))
        if opts.debug_pcc:
            print(pcc_debug(rep, opts.pcc_threshold))
    return 0


def run_precision(opts) -> int:
    from model.precision import ModelOptimizations
    from model.tools.precision_table import format_table, op_table

    from model.config import canonical_model_name

    name = canonical_model_name(opts.model_name)
    opt = ModelOptimizations.named(opts.mode, name)
    rows = op_table(opt, galaxy=opts.galaxy)
    print(json.dumps({"model": name, "mode": opts.mode, "galaxy": opts.galaxy, "ops": rows}) if opts.json
          else format_table(name, opts.mode, rows, opts.galaxy))
    return 0


def run_bench(opts) -> int:
    from model.tools.bench import run

    return run(opts)


def _add_mesh_options(p, required=False):
    p.add_argument("--mesh", required=required, default=None, help="device mesh ROWSxCOLS, e.g. 1x2 (N300), 1x8 (T3K), 8x4 (Galaxy)")
    p.add_argument("--ccl", choices=("reduce_scatter", "all_reduce"), default=None, help="reduction after row-parallel matmuls")
    p.add_argument("--norm", choices=("auto", "replicated", "distributed"), default=None, help="RMSNorm on a fractured stream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttjax", description="Llama inference the TT-NN way, in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="greedy generation from a prompt")
    prompt = g.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt text")
    prompt.add_argument("--prompt-ids", default=None, help="the prompt as comma-separated token ids (no tokenizer needed)")
    g.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    g.add_argument("--model", default=None, help="a .gguf file, Hugging Face folder or Meta folder (default: shipped SmolLM2-135M)")
    g.add_argument("--model-name", default=None,
                   help="dummy weights of a named model's shapes instead (e.g. Llama-3.1-8B; needs --prompt-ids)")
    g.add_argument("--max-seq-len", type=positive_int, default=None,
                   help="KV cache length (default: fits the request); at most the model's trained context unless --allow-past-context")
    g.add_argument("--allow-past-context", action="store_true",
                   help="allow --max-seq-len past the context the model was trained for (positions it never saw)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="weight and activation dtype (default float32)")
    g.add_argument("--precision", choices=PRECISIONS, default=None, help="a tt_transformers precision config instead of --dtype")
    g.add_argument("--override", action="append", help="GROUP=DTYPE or layers.N.GROUP=DTYPE on top of --precision (repeatable)")
    g.add_argument("--paged", action="store_true", help="paged KV cache (on by itself when the prompt needs chunked prefill)")
    g.add_argument("--fidelity", choices=("on", "off"), default="on",
                   help="off: exact float matmuls instead of the matrix engine's math fidelity and Dst (dtypes kept)")
    g.add_argument("--sfpu", choices=("on", "off"), default="on",
                   help="off: exact float32 exp, reciprocal, rsqrt and SiLU instead of the SFPU's (formats kept)")
    _add_mesh_options(g)
    g.set_defaults(func=run_generate)

    c = sub.add_parser("comm-report", help="collectives per layer and bytes per token, from the compiled program")
    _add_mesh_options(c, required=True)
    c.add_argument("--mode", choices=("prefill", "decode"), default="decode", help="which step to compile (default decode)")
    c.add_argument("--model", default=None, help="checkpoint whose config to use (default: shipped SmolLM2-135M); no weights are read")
    c.add_argument("--model-name", default=None, help="a named shape instead, e.g. Llama-3.1-70B")
    c.add_argument("--n-layers", type=int, default=None, help="compile only this many layers (default: all)")
    c.add_argument("--batch", type=positive_int, default=32, help="decode batch (default 32, tt-metal's)")
    c.add_argument("--seq-len", type=positive_int, default=128, help="prefill length / cache length (default 128)")
    c.add_argument("--precision", default=None,
                   help="a precision config (accuracy, performance, ...) for the formats the collectives carry (default float32)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_comm_report)

    a = sub.add_parser("accuracy", help="top-1 / top-5 / perplexity and per-layer PCC of precision configs")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a.add_argument("--model", default=None, help="checkpoint (default: shipped SmolLM2-135M)")
    a.add_argument("--configs", default=None, help="comma list of float32, bfloat16, accuracy, performance, bfloat8_b, bfloat4_b; "
                   "each may end in +GROUP=DTYPE, +layers.N.GROUP=DTYPE, +fidelity=off or +sfpu=off")
    a.add_argument("--prefill-len", type=int, default=512, help="tokens of the text prefilled first (default 512)")
    a.add_argument("--decode-steps", type=int, default=128,
                   help="tokens then decoded, each fed the text's own next token (default 128)")
    a.add_argument("--reference", choices=("transformers", "float32"), default="transformers",
                   help="what top-1 / top-5 are measured against: Hugging Face transformers on the same weights, or "
                        "ttjax's float32 (default transformers)")
    a.add_argument("--override", action="append", help="GROUP=DTYPE or layers.N.GROUP=DTYPE, e.g. FF1_FF3=bfloat16 (repeatable)")
    a.add_argument("--pcc-threshold", type=float, default=0.99, help="PCC debugger threshold (default 0.99)")
    a.add_argument("--debug-pcc", action="store_true", help="print every layer's PCC and the first below the threshold")
    a.add_argument("--fidelity", choices=("on", "off"), default="on", help="off: every config with exact float matmuls")
    a.add_argument("--sfpu", choices=("on", "off"), default="on",
                   help="off: every config with exact float32 SFPU functions (exp, reciprocal, rsqrt, SiLU)")
    a.add_argument("--reference-spread", action="store_true",
                   help="also re-run transformers under the CPU kernels other hosts pick and report how far it moves")
    a.set_defaults(func=run_accuracy)

    pr = sub.add_parser("precision", help="the per-op precision table of a model, as tt_transformers' model_config sets it")
    pr.add_argument("--model-name", default="Llama-3.1-8B", help="a model name, any case, e.g. Llama-3.1-70B (default Llama-3.1-8B)")
    pr.add_argument("--mode", choices=("performance", "accuracy"), default="performance")
    pr.add_argument("--galaxy", action="store_true", help="the formats a Galaxy (TG, 8x4) writes")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=run_precision)

    b = sub.add_parser("bench", help="decode, prefill, TTFT, compile and memory against transformers and llama.cpp, with the roofline")
    b.add_argument("--json", action="store_true", help="print one JSON object (keys: model/tools/bench.py)")
    b.add_argument("--model", default=None, help="a .gguf file or Hugging Face folder (default: shipped SmolLM2-135M)")
    b.add_argument("--model-name", default=None,
                   help="a named model's shapes (Llama-3.2-1B, Llama-3.1-8B, ...) in same-shape GGUF files of random weights "
                        "and SmolLM2's tokenizer, written once into the cache: ttjax and transformers read the first format, "
                        "llama.cpp each (model/checkpoint/synthetic.py)")
    b.add_argument("--gguf-formats", default=None, help="with --model-name: comma list of Q8_0, Q4_0, F16, F32 (default Q8_0,Q4_0)")
    b.add_argument("--n-layers", type=positive_int, default=None, help="with --model-name: its first N layers")
    b.add_argument("--precision", default="float32", help="comma list of float32, bfloat16, accuracy, performance, bfloat8_b, bfloat4_b")
    b.add_argument("--batch", default="1,32", help="comma list of decode batch sizes (default 1,32)")
    _add_mesh_options(b)
    b.add_argument("--profile", default=None, metavar="DIR", help="write a jax.profiler trace (Perfetto) and DIR/ops.txt")
    b.add_argument("--prefill-lengths", default="128,8000", help="comma list of prompt lengths to time prefill at, or none")
    b.add_argument("--runs", type=positive_int, default=3, help="timed runs of each figure; the median is reported (default 3)")
    b.add_argument("--new-tokens", type=positive_int, default=64, help="tokens each user decodes (default 64)")
    b.add_argument("--max-seq-len", type=positive_int, default=256, help="ttjax's KV cache length for decode (default 256)")
    b.add_argument("--allow-past-context", action="store_true", help="allow --max-seq-len past the model's trained context")
    b.add_argument("--prompt", default="The capital of France is", help="the decode prompt, copied to every user")
    b.add_argument("--peers", default=None,
                   help="comma list of peers, each of which must be installed (default: transformers, and llama.cpp when installed)")
    b.add_argument("--no-peers", action="store_true", help="ttjax alone")
    b.add_argument("--bandwidth-mib", type=positive_int, default=1024, help="size of the matrix the read bandwidth is measured on")
    b.set_defaults(func=run_bench)
    from model.tools.launch import add_parser as add_launch
    from model.tools.perf_model import add_parser as add_perf_model
    from model.tools.serve import add_parser as add_serve

    add_serve(sub, positive_int, PRECISIONS, _add_mesh_options)
    add_perf_model(sub, positive_int)

    subcommands = list(sub.choices)
    add_launch(sub, subcommands)
    for p in (sub.choices[name] for name in COMPILES):  # the commands that compile: JAX's persistent compilation cache (model.tools.compile_cache)
        p.add_argument("--compile-cache", default=None, metavar="DIR",
                       help="folder of compiled programs (default: $TTJAX_CACHE_DIR or ~/.cache/ttjax/xla)")
        p.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, keep nothing")
    return parser


def report_errors(prog: str, command, *args, **kwargs) -> int:
    """Run a command; bad input (a TTJaxError) ends it with one line on stderr and exit status 2, as argparse ends
    a bad flag, instead of a traceback.

    In a process of a multi-process mesh (the environment of mesh.processes, set by `ttjax launch`) the command
    runs after joining the mesh, only process 0 prints, and an error is told to the other processes (they stop
    naming it) and printed with this process's number."""
    try:
        group = processes.join_from_env()
        if group is None:
            return command(*args, **kwargs)
        prog = f"{prog} (process {group.process_id} of {group.num_processes})"
        code = command(*args, **kwargs)
        processes.leave()
        return code
    except TTJaxError as e:
        # sys.__stderr__ in a process of a mesh: the others' sys.stderr is quieted, and their errors must show.
        print(f"{prog}: error: {e}", file=sys.__stderr__ if processes.group() else sys.stderr, flush=True)
        processes.fail(str(e))
        return 2
    except Exception as e:
        if processes.group() is None:
            raise
        traceback.print_exc(file=sys.__stderr__)
        processes.fail(f"{type(e).__name__}: {e}")
        processes.linger()
        return 1


# The subcommands that compile programs, and so keep them in the compile cache; perf-model and precision compute
# tables only and touch no cache.
COMPILES = ("generate", "comm-report", "accuracy", "bench", "serve")


def main(argv=None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.command == "launch":  # starts (or becomes) the processes; it joins no mesh itself
        return report_launch_errors(opts)
    return report_errors("ttjax", _with_cache, opts)


def _with_cache(opts) -> int:
    # A multi-process run compiles afresh in every process: the stores below are one process's.
    if opts.command in COMPILES and not opts.no_compile_cache and processes.from_env() is None:
        from model.tools.compile_cache import enable

        enable(opts.compile_cache)
    return opts.func(opts)


def report_launch_errors(opts) -> int:
    from model.tools.launch import run

    try:
        return run(opts, opts.subcommands)
    except TTJaxError as e:
        print(f"ttjax launch: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `ttjax` console command: main(), then out of the process without Python's teardown. Unloading jax (its
    backends, thread pools and modules) took 0.3 s on a quiet machine and a second under load, after every output
    is written and every cache file closed, so it would only delay the prompt."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`ttjax generate ... | head`): end as a killed writer does
        code = 128 + signal.SIGPIPE
    except KeyboardInterrupt:  # Ctrl-C: no traceback, the shell's status for SIGINT
        code = 128 + signal.SIGINT
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()

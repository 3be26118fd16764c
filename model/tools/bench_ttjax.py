"""ttjax measured the way `ttjax bench` and the benchmark demos measure it.

Decode: the Engine (model.serving.engine, what `ttjax generate` and the demos serve with) runs `batch` copies of
the prompt, greedy, EOS ignored, `new_tokens` each. Its programs are compiled before the clock starts and one
short run warms them up; then each timed run gives
  - time to first token: from the run's start until every user of the batch has its first token (the batch's
    prefills, one user at a time as on TT, and the first token of each);
  - decode tokens/s: the tokens of the decode steps (new_tokens - 1 a user) over the time from the last first
    token to the last token: steady steps only.
Prefill: one user's prompt of n tokens prefilled into its cache (chunked through a paged cache when its bucket is
longer than max_prefill_chunk_size), timed until its logits' argmax reaches the host, after one untimed run.
"""

from __future__ import annotations

import time

import numpy as np

from model.buckets import get_padded_prefill_len
from model.errors import SequenceLengthError
from model.serving.build import build_generator
from model.serving.engine import Engine, Request


def decode_runs(gen, prompt, batch: int, new_tokens: int, runs: int) -> dict:
    """{"decode_tokens_per_s": [per run], "ttft_s": [per run], "tokens": the first user's tokens of the last run,
    "compile_s": compile time of the programs it used}."""
    def requests(n):
        return [Request(prompt, n, stop_at_eos=False) for _ in range(batch)]

    engine = Engine(gen)
    engine.check_request(requests(new_tokens)[0])  # a prompt that does not fit fails before anything compiles
    compile_before = gen.compile_s
    engine.warm_up([prompt], sampled=False)
    compile_s = gen.compile_s - compile_before

    engine.run(requests(min(new_tokens, 3)))  # the first calls of each program, untimed
    rates, ttfts, tokens = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        outs = engine.run(requests(new_tokens))
        first = max(o.first_token_s for o in outs)
        steps = sum(len(o.tokens) - 1 for o in outs)
        rates.append(steps / (max(o.finish_s for o in outs) - first))
        ttfts.append(first - start)
        tokens = outs[0].tokens
    return {"decode_tokens_per_s": rates, "ttft_s": ttfts, "tokens": tokens, "compile_s": compile_s}


def prefill_generator(ck, longest: int, mesh=None, precision=None, **options):
    """A Generator for prefills of up to `longest` tokens: one user, a cache of the longest prompt's bucket (within
    the model's context), paged when that bucket must be prefilled in chunks."""
    max_seq_len = max(longest, min(get_padded_prefill_len(longest), ck.args.max_context_len))
    paged = get_padded_prefill_len(longest) > ck.args.max_prefill_chunk_size
    return build_generator(ck, mesh, precision, paged=paged, max_batch_size=1, max_seq_len=max_seq_len, **options)


def prefill_runs(gen, ids, runs: int, kv_cache=None, page_table=None, warm_up: bool = True) -> dict:
    """{"seconds": [per run], "top1": the last token's argmax}: prefills of ids into user 0 (its page-table row
    reserved here when the cache is paged and no table is given)."""
    cache = gen.allocate_kv_cache() if kv_cache is None else kv_cache
    if gen.paged is not None and page_table is None:
        page_table = gen.new_page_table()
        page_table.reserve(0, len(ids))
    seconds, top = [], None
    for i in range(runs + bool(warm_up)):
        start = time.perf_counter()
        logits, cache = gen.prefill_forward_text(ids, cache, page_table=page_table)
        top = int(np.argmax(np.asarray(logits)))
        if i or not warm_up:
            seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "top1": top}


def text_tokens(tokenizer, n: int) -> list[int]:
    """The first n tokens of the shipped text (A Tale of Two Cities), repeated if a tokenizer makes fewer."""
    from model.tools.accuracy import shipped_text

    ids = tokenizer.encode(shipped_text())
    return (ids * (n // len(ids) + 1))[:n]


def measure(spec: dict) -> dict:
    """A `ttjax bench` row (model.tools.bench runs it in a process of its own): decode at spec["batch"] with a cache
    of spec["max_seq_len"], in spec["precision"], on spec["mesh"]; then the prefills of spec["prefill_lengths"], on
    the same generator when they fit its cache unchunked, else on one sized for them (prefill_generator). Returns the
    raw runs, the token ids used (for the peers), compile times (decode's programs; then what the prefills added)
    and the weight bytes a decode step reads."""
    import jax

    from model.checkpoint import open_checkpoint
    from model.serving.build import mesh_device_for
    from model.tools.roofline import ttjax_weight_bytes

    mesh = mesh_device_for(spec["mesh"])
    options = generator_options(spec)
    ck = open_checkpoint(spec["model"])  # weights read straight into the precision: no float32 copy of the model
    tok = ck.require_tokenizer()
    prompt = tok.encode(spec["prompt"])
    if len(prompt) + spec["new_tokens"] > spec["max_seq_len"]:  # in the flags the user gave the bench
        raise SequenceLengthError(f"--prompt ({len(prompt)} tokens) plus --new-tokens {spec['new_tokens']} is "
                                  f"{len(prompt) + spec['new_tokens']} tokens, more than --max-seq-len {spec['max_seq_len']}.")
    gen = build_generator(ck, mesh, spec["precision"], max_batch_size=spec["batch"], max_seq_len=spec["max_seq_len"], **options)
    row = {"version": f"jax {jax.__version__}", "prompt_ids": prompt, "weight_bytes": ttjax_weight_bytes(gen.params)}
    row.update(decode_runs(gen, prompt, spec["batch"], spec["new_tokens"], spec["runs"]))
    lengths = spec["prefill_lengths"]
    if lengths:
        longest = max(lengths)
        if longest > gen.args.max_seq_len or get_padded_prefill_len(longest) > gen.args.max_prefill_chunk_size:
            del gen  # its params and programs, before the prefill generator's
            gen = prefill_generator(ck, longest, mesh, spec["precision"], **options)
        compile_before = gen.compile_s
        ids = {str(n): text_tokens(tok, n) for n in lengths}
        row["prefill_s"] = {n: prefill_runs(gen, v, spec["runs"])["seconds"] for n, v in ids.items()}
        row["prefill_compile_s"], row["prefill_ids"] = gen.compile_s - compile_before, ids
    return row


def generator_options(spec: dict) -> dict:
    """build_generator's options a bench spec sets beside the mesh and the precision."""
    return {k: spec[k] for k in ("ccl", "norm", "allow_past_context") if spec.get(k)}

"""The two compiled programs, TT's traces: prefill of one user and the decode step of every slot.

Each is a pure function of (params, inputs, rot mats, KV cache), compiled once per shape by the
Generator (prefill once per bucket or chunk size, decode once per batch) with the cache donated,
so it is updated in place. Arguments are positional throughout (shard_map maps positional
arguments): the cache is argument 3 of prefill and 4 of decode. page_table is None for a
contiguous cache, chunk_start None for a whole (not chunked) prefill, sampling None for greedy.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from model.config import ModelArgs
from model.serving.placement import Placement
from model.serving.sampling import next_token
from model.transformer import forward

CACHE_ARG = {"prefill": 3, "decode": 4}


def prefill(params, tokens, rot, kv_cache, user_id, last_row, page_table=None, chunk_start=None, *, args: ModelArgs):
    """One user's padded prompt (or a chunk of it) into its cache slot or pages; logits [1, 1, vocab] of its last
    token (row last_row)."""
    return forward(
        params, tokens, rot, kv_cache, args=args, mode="prefill", user_id=user_id, last_row=last_row,
        page_table=page_table, chunk_start_idx=chunk_start,
    )


def decode(params, tokens, current_pos, rot, kv_cache, page_table=None, sampling=None, *, args: ModelArgs):
    """One decode step for every slot. The next token is chosen on device and positions advance on device, so
    the outputs feed the next step directly: no host round trip between steps."""
    logits, kv_cache = forward(params, tokens, rot, kv_cache, args=args, mode="decode", current_pos=current_pos, page_table=page_table)
    logits = logits[:, 0, :]
    # Empty slots (negative positions) stay empty, and a slot that reaches max_seq_len becomes empty rather than
    # write past the cache (host-given positions are checked; these advance on device).
    advanced = jnp.where((current_pos >= 0) & (current_pos + 1 < args.max_seq_len), current_pos + 1, -1)
    return next_token(logits, current_pos + 1, sampling), logits, jnp.where(current_pos >= 0, advanced, current_pos), kv_cache


def build_program(fn, args: ModelArgs, placement: Placement):
    """fn (prefill or decode) jitted for args, wrapped for the placement, its cache donated."""
    return jax.jit(placement.wrap(partial(fn, args=args)), donate_argnums=CACHE_ARG[fn.__name__])

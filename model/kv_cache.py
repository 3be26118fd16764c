"""The contiguous KV cache: per layer [K, V], each [batch, n_kv_heads, max_seq_len, head_dim] (tt-metal's layout)."""

import jax.numpy as jnp

from model.config import ModelArgs


def allocate_kv_cache(args: ModelArgs, batch: int | None = None):
    """In the activation dtype; a block-float KV_CACHE setting rounds the values written (model.attention)."""
    shape = (batch or args.max_batch_size, args.n_kv_heads, args.max_seq_len, args.head_dim)
    dtype = args.activation_dtype
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(args.n_layers))

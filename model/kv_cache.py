"""The KV cache, one interface for both layouts: per layer [K, V], each either

- contiguous, tt-metal's [batch, n_kv_heads, max_seq_len, head_dim] (slot b holds user b), or
- paged (args.paged_attention_config set), a block pool [max_num_blocks, n_kv_heads, block_size,
  head_dim] that users reach through a page table (model.serving.page_table).

On a mesh the KV heads are this device's (args.layout.n_local_kv_heads).
"""

import jax.numpy as jnp

from model.config import ModelArgs


def kv_cache_shape(args: ModelArgs, batch: int | None = None) -> tuple[int, ...]:
    n_kv = args.layout.n_local_kv_heads
    paged = args.paged_attention_config
    if paged is not None:
        return (paged.max_num_blocks, n_kv, paged.block_size, args.head_dim)
    return (batch or args.max_batch_size, n_kv, args.max_seq_len, args.head_dim)


def allocate_kv_cache(args: ModelArgs, batch: int | None = None):
    """In the activation dtype; a block-float KV_CACHE setting rounds the values written (model.attention)."""
    shape, dtype = kv_cache_shape(args, batch), args.activation_dtype
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(args.n_layers))

"""Paged KV cache writes: ttnn.experimental.paged_fill_cache (prefill) and paged_update_cache (decode).

A paged cache is a pool of blocks, [max_num_blocks, n_kv_heads, block_size, head_dim]; a
user's position p lives in block page_table[user, p // block_size] at row p % block_size.
page_table is int32 [batch, blocks_per_user]; -1 marks an entry with no block assigned, and
writes that land there are dropped (prefill pads a prompt to a bucket, and its padding must
not spill into a block that belongs to someone else: the "stale block" pitfall of paged
prefill). Every block, 0 included, is an ordinary block.

Writes are scatters into a donated buffer, so they happen in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mesh.errors import TTJaxError


def check_page_table(page_table, max_num_blocks: int, block_size: int | None = None, max_seq_len: int | None = None):
    """On the host: every entry is -1 or a block of the pool, and no block serves two places."""
    table = np.asarray(page_table)
    if table.ndim != 2:
        raise TTJaxError(f"page_table must be [batch, blocks_per_user], got shape {table.shape}.")
    bad = table[(table < -1) | (table >= max_num_blocks)]
    if bad.size:
        raise TTJaxError(f"page_table entry {int(bad[0])} points outside the block pool of {max_num_blocks} blocks (0..{max_num_blocks - 1}).")
    used = table[table >= 0]
    if len(np.unique(used)) != used.size:
        values, counts = np.unique(used, return_counts=True)
        raise TTJaxError(f"block {int(values[counts > 1][0])} appears more than once in the page_table.")
    if block_size is not None and max_seq_len is not None and table.shape[1] * block_size < max_seq_len:
        raise TTJaxError(
            f"page_table rows of {table.shape[1]} blocks x block_size {block_size} cover {table.shape[1] * block_size} "
            f"positions, fewer than max_seq_len = {max_seq_len}."
        )


def _on_host(x) -> bool:
    """Checks run on host (numpy) inputs only: reading a device array back would stall the decode loop."""
    return isinstance(x, np.ndarray)


def paged_fill_cache(cache: jax.Array, x: jax.Array, page_table: jax.Array, batch_idx=0, start_pos=0) -> jax.Array:
    """Write one user's x [1, n_kv_heads, seq, head_dim] at positions start_pos .. start_pos + seq - 1 through
    row batch_idx of page_table. start_pos (a multiple of block_size) and batch_idx may be traced."""
    n_blocks, n_kv, block, d = cache.shape
    seq = x.shape[2]
    if seq % block:
        raise TTJaxError(f"prefill length {seq} is not a multiple of block_size = {block}.")
    if _on_host(page_table):
        check_page_table(page_table, n_blocks)
    row = jax.lax.dynamic_index_in_dim(jnp.asarray(page_table), batch_idx, axis=0, keepdims=False)
    blocks = jax.lax.dynamic_slice_in_dim(row, start_pos // block, seq // block)
    blocks = jnp.where(blocks < 0, n_blocks, blocks)  # out of range: dropped
    values = x[0].reshape(n_kv, seq // block, block, d).transpose(1, 0, 2, 3).astype(cache.dtype)
    return cache.at[blocks].set(values, mode="drop")


def paged_update_cache(cache: jax.Array, x: jax.Array, update_idxs: jax.Array, page_table: jax.Array) -> jax.Array:
    """Write x [batch, n_kv_heads, head_dim] at position update_idxs[b] of each user b, through page_table.

    A negative position marks an empty slot, and a position whose page-table entry is -1 has no block:
    both leave the cache as it was."""
    n_blocks, n_kv, block, d = cache.shape
    if _on_host(page_table):
        check_page_table(page_table, n_blocks)
    if _on_host(update_idxs):
        limit = page_table.shape[1] * block
        over = np.asarray(update_idxs)[np.asarray(update_idxs) >= limit]
        if over.size:
            raise TTJaxError(f"position {int(over[0])} is past the {limit} positions a page-table row covers.")
    pos = update_idxs.astype(jnp.int32)
    safe = jnp.clip(pos, 0, page_table.shape[1] * block - 1)
    blocks = jnp.take_along_axis(page_table, (safe // block)[:, None], axis=1)[:, 0]
    blocks = jnp.where((pos < 0) | (blocks < 0), n_blocks, blocks)
    return cache.at[blocks, :, safe % block].set(x.astype(cache.dtype), mode="drop")

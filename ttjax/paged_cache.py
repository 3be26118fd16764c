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
import ttjax.native as native


def check_page_table(page_table, max_num_blocks: int, block_size: int | None = None, max_seq_len: int | None = None):
    """On the host: a 2-D integer table whose every entry is -1 or a block of the pool, no block serving two places."""
    table = np.asarray(page_table)
    if table.ndim != 2:
        raise TTJaxError(f"page_table must be [batch, blocks_per_user], got shape {table.shape}.")
    if table.size and table.dtype.kind not in "iu":
        raise TTJaxError(f"page_table holds {table.dtype} values; block ids are integers.")
    bad = table[(table < -1) | (table >= max_num_blocks)]
    if bad.size:
        raise TTJaxError(
            f"page_table entry {int(bad[0])} is neither -1 (no block) nor a block of the pool of {max_num_blocks} (0..{max_num_blocks - 1})."
        )
    used = table[table >= 0]
    if len(np.unique(used)) != used.size:
        values, counts = np.unique(used, return_counts=True)
        raise TTJaxError(f"block {int(values[counts > 1][0])} appears more than once in the page_table.")
    if block_size is not None and max_seq_len is not None and table.shape[1] * block_size < max_seq_len:
        raise TTJaxError(
            f"page_table rows of {table.shape[1]} blocks x block_size {block_size} cover {table.shape[1] * block_size} "
            f"positions, fewer than max_seq_len = {max_seq_len}."
        )


def concrete(x) -> bool:
    """An input whose values can be checked here: host data or a device array, not a value traced inside jit
    (a traced index is its caller's to check on the host: the Generator does)."""
    return not isinstance(x, jax.core.Tracer)


def paged_fill_cache(cache: jax.Array, x: jax.Array, page_table: jax.Array, batch_idx=0, start_pos=0) -> jax.Array:
    """Write one user's x [1, n_kv_heads, seq, head_dim] at positions start_pos .. start_pos + seq - 1 through
    row batch_idx of page_table. start_pos (a multiple of block_size) and batch_idx may be traced; concrete ones
    are checked against the table (dynamic slicing would clamp them silently)."""
    n_blocks, n_kv, block, d = cache.shape
    seq = x.shape[2]
    if seq % block:
        raise TTJaxError(f"prefill length {seq} is not a multiple of block_size = {block}.")
    if concrete(page_table):
        check_page_table(page_table, n_blocks)
    rows, width = page_table.shape
    if concrete(batch_idx) and not 0 <= int(batch_idx) < rows:
        raise TTJaxError(f"batch_idx {int(batch_idx)} is outside the page table's rows 0..{rows - 1}.")
    if concrete(start_pos) and (int(start_pos) % block or int(start_pos) < 0 or int(start_pos) + seq > width * block):
        raise TTJaxError(
            f"positions {int(start_pos)}..{int(start_pos) + seq - 1} are not whole blocks within the {width * block} positions "
            "a page-table row covers."
        )
    row = jax.lax.dynamic_index_in_dim(jnp.asarray(page_table), batch_idx, axis=0, keepdims=False)
    blocks = jax.lax.dynamic_slice_in_dim(row, start_pos // block, seq // block)
    blocks = jnp.where(blocks < 0, n_blocks, blocks)  # -1, no block: out of range on purpose, so the write is dropped
    values = x[0].reshape(n_kv, seq // block, block, d).transpose(1, 0, 2, 3).astype(cache.dtype)
    return cache.at[blocks].set(values, mode="drop")


def paged_update_cache(cache: jax.Array, x: jax.Array, update_idxs: jax.Array, page_table: jax.Array) -> jax.Array:
    """Write x [batch, n_kv_heads, head_dim] at position update_idxs[b] of each user b, through page_table.
    A negative position marks an empty slot, and a position whose page-table entry is -1 has no block: both
    leave the cache as it was. So does a position past the row (concrete positions are refused instead):
    clamping it would overwrite the row's last position."""
    n_blocks, n_kv, block, d = cache.shape
    if concrete(page_table):
        check_page_table(page_table, n_blocks)
    limit = page_table.shape[1] * block
    if concrete(update_idxs):
        over = np.asarray(update_idxs)[np.asarray(update_idxs) >= limit]
        if over.size:
            raise TTJaxError(f"position {int(over[0])} is past the {limit} positions a page-table row covers.")
    pos = update_idxs.astype(jnp.int32)
    safe = jnp.clip(pos, 0, limit - 1)  # only to read the table; the write goes where pos says or nowhere
    blocks = jnp.take_along_axis(page_table, (safe // block)[:, None], axis=1)[:, 0]
    blocks = jnp.where((pos < 0) | (pos >= limit) | (blocks < 0), n_blocks, blocks)  # out of range on purpose: dropped
    if native.rows_kernels_for(cache):  # the rows in place (XLA would convert the whole bfloat16 cache)
        rows = (blocks[:, None] * n_kv + jnp.arange(n_kv)) * block + (safe % block)[:, None]
        return native.scatter_rows(cache, jnp.where(blocks[:, None] < n_blocks, rows, -1), x)
    return cache.at[blocks, :, safe % block].set(x.astype(cache.dtype), mode="drop")

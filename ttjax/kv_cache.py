"""KV-cache writes: fill_cache (prefill, one user) and update_cache (decode, one position per user).

The cache is tt-metal's [batch, n_kv_heads, max_seq_len, head_dim]. Both writes are
dynamic_update_slices on a donated buffer, so they happen in place. update_cache writes
through a [batch * n_kv_heads, max_seq_len, head_dim] view: written on the 4-D array, XLA:CPU
duplicates the update into each consumer and copies the whole cache every step (measured:
2x to 7x slower decode at max_seq_len 2048).
"""

import jax
import jax.numpy as jnp
import numpy as np

from mesh.errors import TTJaxError
import ttjax.native as native
from ttjax.paged_cache import concrete


def fill_cache(cache: jax.Array, x: jax.Array, batch_idx, start_pos=0) -> jax.Array:
    """Write x [1, n_kv_heads, seq, head_dim] into cache[batch_idx, :, start_pos:start_pos+seq].

    Rows of x that fall past max_seq_len are not written: prefill pads prompts up to a length bucket, and
    callers check that the real tokens fit before padding. batch_idx and start_pos may be traced (the caller
    checks them on the host); concrete ones are checked here, since dynamic_update_slice would clamp them
    and write into another slot or position without a word.
    """
    batch, _, room, _ = cache.shape
    if concrete(batch_idx) and not 0 <= int(batch_idx) < batch:
        raise TTJaxError(f"batch_idx {int(batch_idx)} is outside the cache's slots 0..{batch - 1}.")
    if concrete(start_pos) and not 0 <= int(start_pos) < room:
        raise TTJaxError(f"start_pos {int(start_pos)} is outside the cache's positions 0..{room - 1}.")
    if x.shape[2] > room:
        x = x[:, :, :room]
    x = x.astype(cache.dtype)
    return jax.lax.dynamic_update_slice(cache, x, (batch_idx, 0, start_pos, 0))


def update_cache(cache: jax.Array, x: jax.Array, update_idxs: jax.Array) -> jax.Array:
    """Write x [batch, n_kv_heads, head_dim] at position update_idxs[b] of each user b.

    A negative index marks an empty slot: its cache row is left as it was. So is a position at or past
    max_seq_len (dynamic_update_slice would clamp it onto the last position); concrete positions past it
    are refused.
    """
    batch, n_kv, seq, head_dim = cache.shape
    if concrete(update_idxs) and (np.asarray(update_idxs) >= seq).any():
        raise TTJaxError(f"position {int(np.max(update_idxs))} is past max_seq_len = {seq} (positions 0..{seq - 1}).")
    if native.rows_kernels_for(cache):  # the rows in place (XLA would convert the whole bfloat16 cache)
        pos = update_idxs.astype(jnp.int32)[:, None]
        rows = (jnp.arange(batch)[:, None] * n_kv + jnp.arange(n_kv)) * seq + pos
        return native.scatter_rows(cache, jnp.where((pos >= 0) & (pos < seq), rows, -1), x)
    flat = cache.reshape(batch * n_kv, seq, head_dim)
    idx = jnp.repeat(update_idxs.astype(jnp.int32), n_kv)
    rows = x.reshape(batch * n_kv, 1, head_dim).astype(cache.dtype)

    def write(row_cache, row, pos):
        safe = jnp.clip(pos, 0, seq - 1)  # in range by construction; the where keeps the old row unless pos is
        old = jax.lax.dynamic_slice(row_cache, (safe, 0), (1, head_dim))
        return jax.lax.dynamic_update_slice(row_cache, jnp.where((pos >= 0) & (pos < seq), row, old), (safe, 0))

    return jax.vmap(write)(flat, rows, idx).reshape(cache.shape)

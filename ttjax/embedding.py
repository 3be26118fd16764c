"""ttjax.embedding: a row lookup in a [vocab, dim] table."""

import jax
import jax.numpy as jnp

from ttjax.blockfloat import BlockFloatTensor


def embedding(tokens: jax.Array, weight, dtype=None) -> jax.Array:
    """Rows `tokens` of the table, in `dtype` (default: the table's own; float32 for a block-float table,
    of which only the looked-up rows are decoded)."""
    if isinstance(weight, BlockFloatTensor):
        rows = weight.take_rows(tokens.reshape(-1)).reshape(*tokens.shape, weight.shape[-1])
    else:
        rows = jnp.take(weight, tokens, axis=0)
    return rows if dtype is None else rows.astype(dtype)

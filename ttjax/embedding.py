"""ttjax.embedding: a row lookup in a [vocab, dim] table."""

import jax
import jax.numpy as jnp


def embedding(tokens: jax.Array, weight: jax.Array) -> jax.Array:
    return jnp.take(weight, tokens, axis=0)

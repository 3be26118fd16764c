"""ttjax.linear: a matmul against a weight stored [K, N], the way TT stores matmul weights."""

import jax
import jax.numpy as jnp


def linear(x: jax.Array, weight: jax.Array) -> jax.Array:
    """x [..., K] @ weight [K, N] -> [..., N], accumulated in float32, returned in x's dtype."""
    out = jnp.matmul(x, weight.astype(x.dtype), preferred_element_type=jnp.float32)
    return out.astype(x.dtype)

"""ttjax.linear: a matmul against a weight stored [K, N], the way TT stores matmul weights."""

import jax
import jax.numpy as jnp

from ttjax.blockfloat import BlockFloatTensor


def linear(x: jax.Array, weight) -> jax.Array:
    """x [..., K] @ weight [K, N] -> [..., N], accumulated in float32, returned in x's dtype.

    A block-float weight is decoded inside the program, so it stays compact at rest. Its values fit
    bfloat16 and float32 exactly, so decoding to x's dtype changes nothing."""
    if isinstance(weight, BlockFloatTensor):
        weight = weight.decode(x.dtype)
    out = jnp.matmul(x, weight.astype(x.dtype), preferred_element_type=jnp.float32)
    return out.astype(x.dtype)

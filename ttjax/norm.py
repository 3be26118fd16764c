"""ttjax.rms_norm: RMSNorm over the last dim, statistics in float32 whatever the input dtype."""

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, weight: jax.Array, *, epsilon: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + epsilon)
    return (xf * inv_rms * weight.astype(jnp.float32)).astype(x.dtype)

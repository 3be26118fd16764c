"""ttjax.rms_norm: RMSNorm over the last dim, statistics in float32 whatever the input dtype."""

import jax
import jax.numpy as jnp


def rms_norm(x: jax.Array, weight: jax.Array, *, epsilon: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + epsilon)
    return (xf * inv_rms * weight.astype(jnp.float32)).astype(x.dtype)


def rms_norm_pre_all_gather(x: jax.Array) -> jax.Array:
    """Distributed RMSNorm, step 1: this device's sum of squares over its slice of the last dim, [..., 1]."""
    xf = x.astype(jnp.float32)
    return jnp.sum(xf * xf, axis=-1, keepdims=True)


def rms_norm_post_all_gather(x: jax.Array, stats: jax.Array, weight: jax.Array, *, epsilon: float, dim: int) -> jax.Array:
    """Distributed RMSNorm, step 3: normalize the local slice with the gathered statistics [..., n_devices]."""
    inv_rms = jax.lax.rsqrt(jnp.sum(stats, axis=-1, keepdims=True) / dim + epsilon)
    return (x.astype(jnp.float32) * inv_rms * weight.astype(jnp.float32)).astype(x.dtype)

"""Rotary position embedding in Meta's interleaved-pair layout (the layout tt-metal uses).

Each head vector is read as pairs (x[2i], x[2i+1]) rotated by angle pos * freq_i, so with
cos/sin tables that repeat each frequency twice ([c0, c0, c1, c1, ...]):

    out = x * cos + rotate_pairs(x) * sin,   rotate_pairs(x) = [-x1, x0, -x3, x2, ...]

Hugging Face checkpoints use the rotate-half layout instead; the checkpoint loader permutes
their wq/wk rows into this layout once, so the model only ever sees interleaved pairs.
"""

import jax
import jax.numpy as jnp


def rotate_pairs(x: jax.Array) -> jax.Array:
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def rotary_embedding_llama(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [..., head_dim] by cos/sin tables broadcastable to it (interleaved layout)."""
    xf = x.astype(jnp.float32)
    return (xf * cos + rotate_pairs(xf) * sin).astype(x.dtype)

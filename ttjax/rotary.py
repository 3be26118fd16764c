"""Rotary position embedding in Meta's interleaved-pair layout (the layout tt-metal uses).

Each head vector is read as pairs (x[2i], x[2i+1]) rotated by angle pos * freq_i, so with
cos/sin tables that repeat each frequency twice ([c0, c0, c1, c1, ...]):

    out = x * cos + rotate_pairs(x) * sin,   rotate_pairs(x) = [-x1, x0, -x3, x2, ...]

TT's fused rotary_embedding_llama gets rotate_pairs from a matmul instead: per 32-wide tile of
head_dim, x @ trans_mat with the 32x32 transformation matrix M[2k, 2k+1] = 1, M[2k+1, 2k] = -1
(get_rot_transformation_mat), which the matrix engine does well. Both give the same values.

Hugging Face checkpoints use the rotate-half layout instead; the checkpoint loader permutes
their wq/wk rows into this layout once, so the model only ever sees interleaved pairs.
"""

import jax
import jax.numpy as jnp

from mesh.errors import TTJaxError


def rotate_pairs(x: jax.Array) -> jax.Array:
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


TILE = 32


def get_rot_transformation_mat() -> jax.Array:
    """tt-metal's 32x32 rotary transformation matrix: x @ M == rotate_pairs(x) within a tile."""
    m = jnp.zeros((TILE, TILE), jnp.float32)
    even = jnp.arange(0, TILE, 2)
    return m.at[even, even + 1].set(1.0).at[even + 1, even].set(-1.0)


def rotate_pairs_by_matmul(x: jax.Array, trans_mat: jax.Array) -> jax.Array:
    """rotate_pairs as the fused op computes it: each 32-wide tile of the last dim times trans_mat."""
    d = x.shape[-1]
    if d % TILE:
        raise TTJaxError(f"the fused rotary needs head_dim a multiple of {TILE}, got {d}.")
    tiles = x.reshape(*x.shape[:-1], d // TILE, TILE)
    return jnp.einsum("...ti,ij->...tj", tiles, trans_mat, precision=jax.lax.Precision.HIGHEST).reshape(x.shape)


def rotary_embedding_llama(x: jax.Array, cos: jax.Array, sin: jax.Array, trans_mat: jax.Array | None = None) -> jax.Array:
    """Rotate x [..., head_dim] by cos/sin tables broadcastable to it (interleaved layout); with trans_mat, the
    fused form (x @ trans_mat per tile)."""
    xf = x.astype(jnp.float32)
    rotated = rotate_pairs(xf) if trans_mat is None else rotate_pairs_by_matmul(xf, trans_mat)
    return (xf * cos + rotated * sin).astype(x.dtype)

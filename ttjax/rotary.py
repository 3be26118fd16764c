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


def rotary_embedding_llama(x: jax.Array, cos: jax.Array, sin: jax.Array, trans_mat: jax.Array | None = None, *,
                           compute_kernel_config=None, fpu: bool = True) -> jax.Array:
    """Rotate x [..., head_dim] by cos/sin tables broadcastable to it (interleaved layout); with trans_mat, the
    fused form (x @ trans_mat per tile).

    Without a compute_kernel_config: float32 math (a reference). With one (ttnn's own default, which
    tt_transformers keeps, is HiFi4 with a 16-bit Dst), what the op's compute kernel computes
    (rotary_embedding_llama.cpp / _sharded.cpp), every intermediate in x's format (bfloat16): rotated = x @
    trans_mat on the matrix engine (each output one +-x term: x itself from HiFi3 up, x cut to the 7 bits SrcB's
    first phase reads at LoFi and HiFi2);
    sin_interm = rotated * sin and cos_interm = x * cos on the matrix engine (ELWMUL at the config's fidelity,
    the tables in bfloat16 as tt stores them), packed; out = cos_interm + sin_interm (ELWADD), packed. Each product
    of Src bits is exact in float32, so no host's fused multiply-add changes a bit. fpu=False makes the products
    and the sum exact float math on the same formats."""
    if compute_kernel_config is None:
        xf = x.astype(jnp.float32)
        rotated = rotate_pairs(xf) if trans_mat is None else rotate_pairs_by_matmul(xf, trans_mat)
        return (xf * cos + rotated * sin).astype(x.dtype)
    from ttjax.matrix_engine import elwadd, elwmul, pack, tensix_matmul

    if x.shape[-1] % TILE:
        raise TTJaxError(f"rotary_embedding_llama needs head_dim a multiple of {TILE}, got {x.shape[-1]}.")
    if x.dtype != jnp.bfloat16:
        raise TTJaxError(f"rotary_embedding_llama with a compute_kernel_config takes bfloat16 input, as ttnn's op does; got {x.dtype}.")
    cfg = compute_kernel_config
    packed = lambda dst: pack(dst, jnp.bfloat16, cfg.fp32_dest_acc_en).astype(jnp.float32)  # noqa: E731
    if fpu:
        mat = get_rot_transformation_mat() if trans_mat is None else trans_mat
        mul = lambda a, b: elwmul(a, b, cfg)  # noqa: E731
        add = lambda a, b: elwadd(a, b, cfg)  # noqa: E731
        rotate = lambda t: packed(tensix_matmul(t.reshape(-1, TILE), mat, cfg)).reshape(t.shape)  # noqa: E731
    else:
        mul, add, rotate = jnp.multiply, jnp.add, rotate_pairs
    cos, sin = (jnp.asarray(t).astype(jnp.bfloat16).astype(jnp.float32) for t in (cos, sin))
    xf = x.astype(jnp.float32)
    cos_interm = packed(mul(xf, cos))
    sin_interm = packed(mul(rotate(xf), sin))
    return packed(add(cos_interm, sin_interm)).astype(jnp.bfloat16)

"""Scaled dot-product attention in ttnn's layouts, prefill (causal) and decode (one query per user).

Grouped-query attention: n_heads query heads share n_kv_heads K/V heads, query head h reading
KV head h // (n_heads // n_kv_heads). Scores and softmax are float32. Masked scores get a
large negative finite value rather than -inf, as tt-metal does, so a fully masked row is a
uniform average instead of NaN.
"""

import jax
import jax.numpy as jnp

MASK_VALUE = -1e9


def _group(q: jax.Array, n_kv: int) -> jax.Array:
    """[B, H, ...] -> [B, n_kv, H // n_kv, ...]: query heads grouped under their KV head."""
    b, h = q.shape[:2]
    return q.reshape(b, n_kv, h // n_kv, *q.shape[2:])


def scaled_dot_product_attention(q, k, v, *, is_causal: bool = True, scale: float | None = None):
    """q [B, H, S, d], k/v [B, KV, S, d] -> [B, H, S, d]."""
    b, h, s, d = q.shape
    n_kv = k.shape[1]
    scale = d**-0.5 if scale is None else scale
    qg = _group(q, n_kv).astype(jnp.float32)
    scores = jnp.einsum("bkgqd,bksd->bkgqs", qg, k.astype(jnp.float32)) * scale
    if is_causal:
        causal = jnp.arange(s)[:, None] >= jnp.arange(k.shape[2])[None, :]
        scores = jnp.where(causal, scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgqs,bksd->bkgqd", probs, v.astype(jnp.float32))
    return out.reshape(b, h, s, d).astype(q.dtype)


def scaled_dot_product_attention_decode(q, k_cache, v_cache, cur_pos, *, scale: float | None = None):
    """One new query per user against its cache: q [B, H, d], caches [B, KV, S_max, d] -> [B, H, d].

    User b attends to cache positions 0..cur_pos[b] inclusive (its new token is already written).
    """
    b, h, d = q.shape
    n_kv, s_max = k_cache.shape[1], k_cache.shape[2]
    scale = d**-0.5 if scale is None else scale
    # Batch and KV heads folded into one batch dim: XLA:CPU runs it as one batched matmul
    # and keeps the in-place cache update free of copies.
    qf = q.reshape(b * n_kv, h // n_kv, d).astype(jnp.float32)
    kf = k_cache.reshape(b * n_kv, s_max, d).astype(jnp.float32)
    vf = v_cache.reshape(b * n_kv, s_max, d).astype(jnp.float32)
    scores = jnp.einsum("ngd,nsd->ngs", qf, kf).reshape(b, n_kv, h // n_kv, s_max) * scale
    valid = jnp.arange(s_max)[None, :] <= cur_pos[:, None]
    scores = jnp.where(valid[:, None, None, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).reshape(b * n_kv, h // n_kv, s_max)
    out = jnp.einsum("ngs,nsd->ngd", probs, vf)
    return out.reshape(b, h, d).astype(q.dtype)

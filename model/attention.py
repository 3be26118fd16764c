"""Attention: fused wqkv, rotary, KV-cache write, grouped-query SDPA, wo.

Written per device: it sees this device's heads (args.layout.n_local_heads query heads,
n_local_kv_heads KV heads; all of them on one device). wqkv is column-parallel, wo
row-parallel; model.ccl supplies the reductions between.

prefill: one user per call (x [1, seq, dim]); its K/V fill cache slot `user_id` and the
prompt attends causally to itself. decode: one token per user (x [batch, 1, dim]); K/V are
written at each user's current_pos and each user attends to its cache up to that position.
"""

from __future__ import annotations

import jax

import ttjax
from model.ccl import reduce_k_split, reduce_row_parallel
from model.config import ModelArgs
from ttjax.errors import TTJaxError
from model.params import AttentionParams
from model.precision import TensorGroup, weight_dtype
from ttjax.blockfloat import block_format
from model.rope import RotMats, decode_rot_mats, prefill_rot_mats


def split_qkv(xqkv: jax.Array, args: ModelArgs):
    """[b, s, qkv_size] -> q [b, s, n_heads, hd], k and v [b, s, n_kv_heads, hd]."""
    b, s, _ = xqkv.shape
    hd, nq, nkv = args.head_dim, args.layout.n_local_heads, args.layout.n_local_kv_heads
    q = xqkv[..., : nq * hd].reshape(b, s, nq, hd)
    k = xqkv[..., nq * hd : (nq + nkv) * hd].reshape(b, s, nkv, hd)
    v = xqkv[..., (nq + nkv) * hd :].reshape(b, s, nkv, hd)
    return q, k, v


def kv_cache_values(x, args: ModelArgs, layer_id: int):
    """K or V as the cache holds them: rounded to bfloat8_b / bfloat4_b when KV_CACHE is a block float
    (blocks of 16 along head_dim, one position's values; the same rounding TT's cache applies)."""
    fmt = block_format(weight_dtype(args, TensorGroup.KV_CACHE, layer_id))
    return x if fmt is None else ttjax.typecast(x, fmt)


def attention(p: AttentionParams, x, rot: RotMats, cache, *, args: ModelArgs, mode: str, current_pos=None, user_id=0, layer_id=0):
    """Returns (output [b, s, dim], (k_cache, v_cache))."""
    b, s, _ = x.shape
    q, k, v = split_qkv(reduce_k_split(ttjax.linear(x, p.wqkv), args), args)
    k_cache, v_cache = cache
    if mode == "prefill":
        if b != 1:
            raise TTJaxError(f"prefill takes one user per call (batch 1), got a batch of {b}.")
        cos, sin = prefill_rot_mats(rot, s)
        q = ttjax.rotary_embedding_llama(q, cos[:, None], sin[:, None])
        k = ttjax.rotary_embedding_llama(k, cos[:, None], sin[:, None])
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [1, heads, seq, hd]
        k, v = kv_cache_values(k, args, layer_id), kv_cache_values(v, args, layer_id)
        k_cache = ttjax.fill_cache(k_cache, k, user_id)
        v_cache = ttjax.fill_cache(v_cache, v, user_id)
        out = ttjax.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(0, 2, 1, 3).reshape(b, s, -1)
    elif mode == "decode":
        cos, sin = decode_rot_mats(rot, current_pos)
        q = ttjax.rotary_embedding_llama(q[:, 0], cos[:, None], sin[:, None])  # [b, n_heads, hd]
        k = ttjax.rotary_embedding_llama(k[:, 0], cos[:, None], sin[:, None])  # [b, n_kv_heads, hd]
        k, v = kv_cache_values(k, args, layer_id), kv_cache_values(v[:, 0], args, layer_id)
        k_cache = ttjax.update_cache(k_cache, k, current_pos)
        v_cache = ttjax.update_cache(v_cache, v, current_pos)
        out = ttjax.scaled_dot_product_attention_decode(q, k_cache, v_cache, current_pos)
        out = out.reshape(b, 1, -1)
    else:
        raise ValueError(f"mode must be 'prefill' or 'decode', got {mode!r}.")
    return reduce_row_parallel(ttjax.linear(out, p.wo), args), (k_cache, v_cache)

"""Flash decode: ttnn.transformer.scaled_dot_product_attention_decode and its paged form.

One new query per user (q [B, H, d]) against that user's cache up to cur_pos[b] inclusive (its
new K/V already written). The parallel dims, as the report lays them out on Tensix cores:

- batch x KV heads: each (user, KV head) pair is independent, and the H // KV query heads that
  share a KV head are computed together against it (GQA);
- the KV sequence: split into chunks of k_chunk_size that are processed in parallel (on TT, a
  group of cores per user and head, one chunk range per core). Each chunk yields a partial
  result: its max score m_c, its sum l_c = sum exp(s - m_c) and its unnormalized output o_c;
- the reduction: partial results combine by log-sum-exp, M = max m_c,
  out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c, which equals softmax over the whole
  sequence exactly.

Positions past cur_pos[b] are masked with a large negative finite value, so a chunk wholly
past it adds exp(-1e9 - M) = 0; an empty slot (cur_pos < 0) gets a uniform average instead of
NaN. Each user has its own position, so ragged batches need no padding.

Here every chunk is computed in one vectorized step (the chunks are a batch dim); batch and KV
heads are folded into one leading dim, which XLA:CPU runs as a batched matmul without copying a
contiguous cache that is being updated in place.
"""

from __future__ import annotations

import jax.numpy as jnp

from mesh.errors import TTJaxError
from ttjax.flash_attention import MASK_VALUE, SDPAProgramConfig


def _flash_decode(q, k, v, cur_pos, k_chunk: int, scale):
    """q [B, H, d]; k/v [B * KV, S, d] (any dtype) -> [B, H, d] float32."""
    b, h, d = q.shape
    n, s, _ = k.shape
    n_kv, n_chunks = n // b, s // k_chunk
    qf = q.reshape(n, h // n_kv, d).astype(jnp.float32) * scale
    kc = k.reshape(n, n_chunks, k_chunk, d).astype(jnp.float32)
    vc = v.reshape(n, n_chunks, k_chunk, d).astype(jnp.float32)
    scores = jnp.einsum("ngd,ncsd->ncgs", qf, kc)  # [B*KV, chunks, G, k_chunk]
    pos = jnp.arange(s).reshape(n_chunks, 1, k_chunk)
    valid = pos[None] <= jnp.repeat(cur_pos, n_kv)[:, None, None, None]
    scores = jnp.where(valid, scores, MASK_VALUE)
    # Per chunk: partial max, sum and output (what each core computes).
    m_c = scores.max(-1)
    p = jnp.exp(scores - m_c[..., None])
    l_c = p.sum(-1)
    o_c = jnp.einsum("ncgs,ncsd->ncgd", p, vc)
    # Reduction across chunks by log-sum-exp.
    m = m_c.max(1, keepdims=True)
    w = jnp.exp(m_c - m)
    out = (o_c * w[..., None]).sum(1) / (l_c * w).sum(1)[..., None]
    return out.reshape(b, h, d)


def decode_k_chunk(seq: int, program_config: SDPAProgramConfig | None) -> int:
    size = min((program_config or SDPAProgramConfig()).k_chunk_size, seq)
    if seq % size:
        raise TTJaxError(f"the cache length {seq} is not a multiple of k_chunk_size = {size}.")
    return size


def scaled_dot_product_attention_decode(q, k_cache, v_cache, cur_pos, *, scale=None, program_config=None):
    """q [B, H, d], caches [B, KV, S, d], cur_pos [B] int32 -> [B, H, d]."""
    b, n_kv, s, d = k_cache.shape
    if q.shape[0] != b:
        raise TTJaxError(f"q has {q.shape[0]} users but the cache has {b} slots.")
    k_chunk = decode_k_chunk(s, program_config)
    scale = d**-0.5 if scale is None else scale
    flat = lambda c: c.reshape(b * n_kv, s, d)  # noqa: E731
    return _flash_decode(q, flat(k_cache), flat(v_cache), cur_pos, k_chunk, scale).astype(q.dtype)


def paged_scaled_dot_product_attention_decode(q, k_cache, v_cache, cur_pos, page_table, *, scale=None, program_config=None):
    """q [B, H, d], paged caches [max_num_blocks, KV, block_size, d], page_table [B, blocks_per_user] int32,
    cur_pos [B] -> [B, H, d]. Each user's blocks are read through its page-table row, in order."""
    b, blocks_per_user = page_table.shape
    _, n_kv, block, d = k_cache.shape
    s = blocks_per_user * block
    k_chunk = decode_k_chunk(s, program_config)
    scale = d**-0.5 if scale is None else scale
    idx = jnp.maximum(page_table, 0)  # unassigned entries (-1) lie past cur_pos: read block 0, masked

    def gather(cache):  # [B, blocks, KV, block, d] -> [B * KV, S, d]
        return cache[idx].transpose(0, 2, 1, 3, 4).reshape(b * n_kv, s, d)

    return _flash_decode(q, gather(k_cache), gather(v_cache), cur_pos, k_chunk, scale).astype(q.dtype)

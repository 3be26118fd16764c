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

tt-metal reads only the chunks that hold a user's positions, ceil((cur_pos + 1) / k_chunk_size)
of them, so a step costs what it reads, not what the cache could hold. Here the chunks run one
after another in a loop whose trip count is that number for the furthest user of the batch (at
least one chunk), and each chunk is folded into a running (m, l, o) by the same log-sum-exp
(m <- max(m, m_c), l and o rescaled by exp(m_old - m)): the result is the reduction above.
The paged form gathers, through the page table, only the blocks of the chunk being read.

In a chunk that is read, positions past cur_pos[b] are masked with a large negative finite value,
so their weight exp(-1e9 - m) is exactly 0 and finite garbage there adds nothing (NaN would, as
0 * NaN is NaN); chunks past the furthest user are not read at all. An empty slot (cur_pos < 0)
has every score masked alike, so it gets the uniform average of the values read instead of NaN.
Each user has its own position, so ragged batches need no padding.

Batch and KV heads are folded into one leading dim, which XLA:CPU runs as one batched matmul. It
copies each chunk it slices out of the cache (its matmul reads whole buffers), never the cache
itself, which stays updated in place; a cache of one chunk is read where it lies. A bfloat16 cache is read
by the native row kernel (ttjax.native.gather_rows) instead: XLA:CPU moves bfloat16 data through float32 and
would convert the whole cache before the loop.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mesh.errors import TTJaxError
import numpy as np

import ttjax.native as native
import ttjax.sfpu as sfpu_fns
from ttjax.matrix_engine import pack
from ttjax.flash_attention import DEFAULT_PROGRAM_CONFIG, MASK_VALUE, SDPAProgramConfig, kernel_math
import ttjax.sdpa_kernel as sdpa_kernel


def _flash_decode(q, load_kv, cur_pos, n_kv: int, n_chunks: int, k_chunk: int, scale, kernel=None):
    """q [B, H, d]; load_kv(j) -> (k, v), each [B * KV, k_chunk, d] (any dtype): key chunk j of every
    (user, KV head), 0 <= j < n_chunks. kernel: a ttjax.sdpa_kernel.KernelMath to walk the chunks as tt-metal's
    decode kernel does. Returns [B, H, d] float32."""
    b, h, d = q.shape
    n = b * n_kv
    qf = q.reshape(n, h // n_kv, d).astype(jnp.float32) * (1.0 if kernel is not None else scale)
    pos = jnp.repeat(cur_pos.astype(jnp.int32), n_kv)[:, None]  # [B * KV, 1]
    if kernel is not None:
        return _kernel_walk(kernel, qf, load_kv, pos, n_chunks, k_chunk, jnp.dtype(q.dtype), h).reshape(b, h, d)

    def step(j, carry):
        m, l, o = carry
        k, v = load_kv(j)
        valid = (j * k_chunk + jnp.arange(k_chunk) <= pos)[:, None]  # [B * KV, 1, k_chunk]
        # XLA:CPU's batched matmul is several times faster with the chunk's rows, not the G query heads, as M:
        # the scores come out [B * KV, k_chunk, G] and turn [B * KV, G, k_chunk] (the fast layout for the matmul
        # with V) in the masking pass. The barrier stops XLA folding that transpose back into the matmul.
        s = jax.lax.optimization_barrier(jnp.einsum("nsd,ngd->nsg", k.astype(jnp.float32), qf))
        s = jnp.where(valid, s.transpose(0, 2, 1), MASK_VALUE)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.exp(s - m_new[..., None])
        rescale = jnp.exp(m - m_new)
        o = o * rescale[..., None] + jnp.einsum("ngs,nsd->ngd", p, v.astype(jnp.float32))
        return m_new, l * rescale + p.sum(-1), o

    init = (jnp.full((n, h // n_kv), -jnp.inf), jnp.zeros((n, h // n_kv)), jnp.zeros((n, h // n_kv, d)))
    # The chunks up to the furthest user's position; at least one, so an all-empty batch divides by l > 0,
    # at most n_chunks, so no chunk start is ever clamped.
    stop = jnp.clip((cur_pos.max() + k_chunk) // k_chunk, 1, n_chunks)
    _, l, o = step(0, init) if n_chunks == 1 else jax.lax.fori_loop(0, stop, step, init)
    return (o / l[..., None]).reshape(b, h, d)


def _native_walk(kernel, q, k_cache, v_cache, cur_pos, page_table, k_chunk: int, seq: int, n_kv: int, block: int):
    """The decode kernel's walk in one native call (ttjax/csrc/sdpa_decode.inc, the same bits as _kernel_walk), or
    None where it does not apply (native kernels not built, or a half of the Tensix not emulated)."""
    if not (kernel.fpu and kernel.sfpu and native.available()):
        return None
    b, h, d = q.shape
    approx = kernel.exp_approx or sdpa_kernel.half_tile_queries(h, q.dtype, is_causal=True)
    a_bits = np.asarray(sfpu_fns.SCHRAUDOLPH_A * np.float32(kernel.scale), np.float32).view(np.uint32)
    out = native.sdpa_decode(
        q.reshape(b * n_kv, h // n_kv, d).astype(jnp.float32), k_cache, v_cache,
        jnp.repeat(jnp.asarray(cur_pos, jnp.int32), n_kv), jnp.zeros((0, 0), jnp.int32) if page_table is None else page_table,
        n_kv=n_kv, block=block, seq=seq, k_chunk=k_chunk, phases=len(kernel.config.math_fidelity.phases),
        fp32=kernel.fp32, exp_approx=approx, corr_approx=kernel.exp_approx, recip_approx=kernel.config.math_approx_mode,
        scale_bits=int(kernel.scale_bits), a_bits=int(a_bits))
    return pack(out, q.dtype, kernel.fp32).astype(jnp.float32).reshape(b, h, d)


def _kernel_walk(kernel, qf, load_kv, pos, n_chunks: int, k_chunk: int, q_dtype, n_heads: int):
    """The chunks as sdpa_flash_decode.cpp walks them on one core (ttjax.sdpa_kernel.decode_chunk), up to the
    furthest user's chunk; an empty slot (cur_pos < 0, skipped by the op) gives zeros."""
    approx = kernel.exp_approx or sdpa_kernel.half_tile_queries(n_heads, q_dtype, is_causal=True)

    def chunk(j, state, first):
        k, v = load_kv(j)
        allowed = (j * k_chunk + jnp.arange(k_chunk) <= pos)[:, None]  # [B * KV, 1, k_chunk]
        return sdpa_kernel.decode_chunk(kernel, qf, k.astype(jnp.float32), v.astype(jnp.float32), allowed, first, state,
                                        approx)

    def later(j, state):  # a user walks only its own chunks (the kernel's k_chunk_end): past them, its state stays
        new = chunk(j, state, False)
        mine = j * k_chunk <= pos  # [B * KV, 1]
        return tuple(jnp.where(mine[..., None], n, o) for n, o in zip(new, state))

    stop = jnp.clip((pos.max() + k_chunk) // k_chunk, 1, n_chunks)
    state = chunk(0, None, True)
    state = jax.lax.fori_loop(1, stop, later, state)
    out = sdpa_kernel.decode_finish(kernel, state, q_dtype)
    return jnp.where(pos[:, :, None] >= 0, out, 0.0)


# Positions read per loop step: a chunk of the program config longer than this is read in pieces of this size.
# TT splits the sequence across cores, so a long chunk costs it little; here the steps run one after another and
# the last one is read whole, so a 512-row chunk would read up to 511 rows past a user's position (at max_seq_len
# 2048 and up, where tt's chunk is 512, a step at position 100 cost a quarter more than at max_seq_len 256, and
# 3x at batch 32). The pieces fold into the running log-sum-exp like chunks: the same result up to float rounding.
READ_ROWS = 128


def decode_k_chunk(seq: int, program_config: SDPAProgramConfig | None) -> int:
    """The program config's k_chunk_size for a cache of seq positions (at most seq; it must divide seq). 0 lets the
    op pick, as ttnn's decode does: the largest power of two that divides seq, up to 512."""
    size = (program_config or DEFAULT_PROGRAM_CONFIG).k_chunk_size
    if size == 0:
        size = 512
        while seq % size:
            size //= 2
    elif size % 32:
        raise TTJaxError(f"k_chunk_size = {size} must be 0 (the op picks) or a multiple of 32 (the tile size).")
    size = min(size, seq)
    if seq % size:
        raise TTJaxError(f"the cache length {seq} is not a multiple of k_chunk_size = {size}.")
    return size


def read_rows(k_chunk: int) -> int:
    """The rows one loop step reads: the chunk, in pieces of READ_ROWS where it divides into them."""
    return READ_ROWS if k_chunk > READ_ROWS and k_chunk % READ_ROWS == 0 else k_chunk


def scaled_dot_product_attention_decode(q, k_cache, v_cache, cur_pos, *, scale=None, program_config=None,
                                        compute_kernel_config=None, fpu: bool = True, sfpu: bool = True):
    """q [B, H, d], caches [B, KV, S, d], cur_pos [B] int32 -> [B, H, d]. With a compute_kernel_config the chunks
    are the program config's and walked as the decode kernel does (ttjax.sdpa_kernel; fpu / sfpu: which halves of
    the Tensix to emulate)."""
    b, n_kv, s, d = k_cache.shape
    if q.shape[0] != b:
        raise TTJaxError(f"q has {q.shape[0]} users but the cache has {b} slots.")
    scale = d**-0.5 if scale is None else scale
    kernel = kernel_math(program_config or DEFAULT_PROGRAM_CONFIG, scale, compute_kernel_config, fpu, sfpu)
    k_chunk = decode_k_chunk(s, program_config)
    k_chunk = k_chunk if kernel is not None else read_rows(k_chunk)
    if kernel is not None:
        out = _native_walk(kernel, q, k_cache, v_cache, cur_pos, None, k_chunk, s, n_kv, s)
        if out is not None:
            return out.astype(q.dtype)
    k, v = (c.reshape(b * n_kv, s, d) for c in (k_cache, v_cache))

    def load_kv(j):  # rows j * k_chunk .. (j + 1) * k_chunk - 1; j < n_chunks, so the start is never clamped
        if native.rows_kernels_for(k_cache):  # read where they lie (XLA would convert the whole bfloat16 cache)
            rows = jnp.arange(b * n_kv)[:, None] * s + j * k_chunk + jnp.arange(k_chunk)
            return native.gather_rows(k_cache, rows), native.gather_rows(v_cache, rows)
        return tuple(jax.lax.dynamic_slice_in_dim(c, j * k_chunk, k_chunk, axis=1) for c in (k, v))

    return _flash_decode(q, load_kv, jnp.asarray(cur_pos), n_kv, s // k_chunk, k_chunk, scale, kernel).astype(q.dtype)


def paged_scaled_dot_product_attention_decode(q, k_cache, v_cache, cur_pos, page_table, *, scale=None, program_config=None,
                                              compute_kernel_config=None, fpu: bool = True, sfpu: bool = True):
    """q [B, H, d], paged caches [max_num_blocks, KV, block_size, d], page_table [B, blocks_per_user] int32,
    cur_pos [B] -> [B, H, d]. Each user's blocks are read through its page-table row, in order.
    compute_kernel_config, fpu, sfpu: as scaled_dot_product_attention_decode's."""
    b, blocks_per_user = page_table.shape
    k_cache, v_cache = jnp.asarray(k_cache), jnp.asarray(v_cache)
    _, n_kv, block, d = k_cache.shape
    s = blocks_per_user * block
    scale = d**-0.5 if scale is None else scale
    kernel = kernel_math(program_config or DEFAULT_PROGRAM_CONFIG, scale, compute_kernel_config, fpu, sfpu)
    k_chunk = decode_k_chunk(s, program_config)
    k_chunk = k_chunk if kernel is not None else read_rows(k_chunk)
    if kernel is not None:
        out = _native_walk(kernel, q, k_cache, v_cache, cur_pos, page_table, k_chunk, s, n_kv, block)
        if out is not None:
            return out.astype(q.dtype)
    # The blocks one chunk can touch: k_chunk // block when blocks tile chunks, one when chunks tile blocks,
    # else one more for a chunk that starts inside a block. The table is padded so that slicing it never clamps.
    per_chunk = -(-(k_chunk + block - math.gcd(k_chunk, block)) // block)
    idx = jnp.pad(jnp.maximum(page_table, 0), ((0, 0), (0, per_chunk)))  # -1 and padding lie past cur_pos: block 0, masked

    def load_kv(j):
        start = j * k_chunk
        if native.rows_kernels_for(k_cache):  # read where they lie (XLA would convert the whole bfloat16 cache)
            pos = start + jnp.arange(k_chunk)
            blocks = jnp.take(idx, pos // block, axis=1)  # [B, k_chunk]; pos < s, so every column is in the table
            rows = (blocks[:, None, :] * n_kv + jnp.arange(n_kv)[:, None]) * block + pos % block
            rows = rows.reshape(b * n_kv, k_chunk)
            return native.gather_rows(k_cache, rows), native.gather_rows(v_cache, rows)
        ids = jax.lax.dynamic_slice_in_dim(idx, start // block, per_chunk, axis=1)  # [B, per_chunk]

        def read(cache):  # [B, per_chunk, KV, block, d] -> [B * KV, k_chunk, d]
            rows = cache[ids].transpose(0, 2, 1, 3, 4).reshape(b * n_kv, per_chunk * block, d)
            if per_chunk * block == k_chunk:
                return rows
            return jax.lax.dynamic_slice_in_dim(rows, start % block, k_chunk, axis=1)

        return read(k_cache), read(v_cache)

    return _flash_decode(q, load_kv, jnp.asarray(cur_pos), n_kv, s // k_chunk, k_chunk, scale, kernel).astype(q.dtype)

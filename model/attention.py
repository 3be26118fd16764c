"""Attention: fused wqkv, rotary, KV-cache write, grouped-query SDPA, wo.

Written per device: it sees this device's heads (args.layout.n_local_heads query heads,
n_local_kv_heads KV heads; all of them on one device). wqkv is column-parallel, wo
row-parallel, or on T3K column-parallel on the all-gathered heads (tt's all_gather_matmul,
args.layout.wo_gathered); model.ccl supplies the collectives between. On a 2D mesh decode
computes attention for this mesh column's group of users only (tt's batch_size_per_device_group,
args.layout.user_groups), whose KV-cache slots only this column's devices write.

prefill: one user per call (x [1, seq, dim]); its K/V fill cache slot `user_id` (or its pages)
and the prompt attends causally to itself by flash attention; a chunk of a long prompt attends
to the cache through the page table instead. decode: one token per user (x [batch, 1, dim]); K/V are
written at each user's current_pos and each user attends to its cache up to that position, by
flash decode. Chunk sizes are the op configs of model.model_config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import ttjax
from model.ccl import gather_heads, gather_users, reduce_qkv, reduce_row_parallel
from model.config import ModelArgs
from model.errors import ConfigError, KVCacheError
from model.params import AttentionParams
from model.precision import (OpGroup, OutputSite, TensorGroup, compute_kernel_config, emulation_kwargs, output_dtype, to_output,
                             weight_dtype)
from ttjax.blockfloat import block_format
from model.model_config import sdpa_decode_program_config, sdpa_program_config
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
    (blocks of 16 along head_dim, one position's values).

    The cache ops pack on the device, so ties round away from zero (ttjax.blockfloat.DEVICE_PACKER); K and V
    arrive in bfloat16, so the packer's first rounding to 7 bits changes nothing. What is not known: whether
    fill_cache / update_cache drop the shifted-out bits as the host packer does (assumed)."""
    fmt = block_format(weight_dtype(args, TensorGroup.KV_CACHE, layer_id))
    return x if fmt is None else ttjax.typecast(x, fmt, device=True)


def attention(
    p: AttentionParams, x, rot: RotMats, cache, *, args: ModelArgs, mode: str, current_pos=None, user_id=0, layer_id=0,
    page_table=None, chunk_start_idx=None,
):
    """Returns (output [b, s, dim], (k_cache, v_cache)).

    page_table None: contiguous caches [batch, kv_heads, max_seq_len, hd]; else paged pools
    [max_num_blocks, kv_heads, block_size, hd] read and written through page_table [batch, blocks_per_user].
    chunk_start_idx (prefill, paged): x is the chunk of user_id's prompt that starts there; it attends to
    the K/V of the earlier chunks from the cache (chunked prefill)."""
    b, s, _ = x.shape
    prefill = mode == "prefill"
    qkv = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LI_QKV_PREFILL if prefill else OpGroup.LI_QKV_DECODE),
               dtype=output_dtype(args, OutputSite.QKV))
    q, k, v = split_qkv(reduce_qkv(ttjax.linear(x, p.wqkv, **qkv), args, mode), args)
    k_cache, v_cache = cache
    trans_mat = rot.trans_mat if args.rotary_impl == "transformation_mat" else None
    rope_kernel = {k: v for k, v in emulation_kwargs(args, OpGroup.ROPE).items() if k != "sfpu"}  # no SFPU step
    rope = lambda t, cos, sin: ttjax.rotary_embedding_llama(t, cos, sin, trans_mat, **rope_kernel)  # noqa: E731
    if mode == "prefill":
        if b != 1:
            raise ConfigError(f"prefill takes one user per call (batch 1), got a batch of {b}.")
        start = 0 if chunk_start_idx is None else chunk_start_idx
        cos, sin = prefill_rot_mats(rot, s, start)
        q, k = rope(q, cos[:, None], sin[:, None]), rope(k, cos[:, None], sin[:, None])
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [1, heads, seq, hd]
        q = to_output(q, args, OutputSite.Q_PREFILL)  # tt_transformers casts Q to bfloat8_b before prefill SDPA
        k, v = kv_cache_values(k, args, layer_id), kv_cache_values(v, args, layer_id)
        if page_table is None:
            if chunk_start_idx is not None:
                raise KVCacheError("chunked prefill reads earlier chunks through a page table; this cache is contiguous.")
            k_cache = ttjax.fill_cache(k_cache, _own_group_only(k, k_cache, user_id, args), user_id)
            v_cache = ttjax.fill_cache(v_cache, _own_group_only(v, v_cache, user_id, args), user_id)
        else:
            k_cache = ttjax.paged_fill_cache(k_cache, k, page_table, user_id, start)
            v_cache = ttjax.paged_fill_cache(v_cache, v, page_table, user_id, start)
        cfg = sdpa_program_config(s)
        kernel = emulation_kwargs(args, OpGroup.SDPA_PREFILL)  # the kernel's fidelity, Dst, exp and reciprocal
        if chunk_start_idx is None:
            out = ttjax.scaled_dot_product_attention(q, k, v, is_causal=True, program_config=cfg, **kernel)
        else:
            row = jax.lax.dynamic_index_in_dim(page_table, user_id, axis=0)
            out = ttjax.chunked_scaled_dot_product_attention(q, k_cache, v_cache, row, start, program_config=cfg, **kernel)
        out = out.transpose(0, 2, 1, 3).reshape(b, s, -1)
    elif mode == "decode":
        cos, sin = decode_rot_mats(rot, current_pos)
        q = rope(q[:, 0], cos[:, None], sin[:, None])  # [b, n_heads, hd]
        k = rope(k[:, 0], cos[:, None], sin[:, None])  # [b, n_kv_heads, hd]
        k, v = kv_cache_values(k, args, layer_id), kv_cache_values(v[:, 0], args, layer_id)
        group = _UserGroup(args, b)
        # Every user's K / V is at hand (after the all-reduce, as on TG); only this column's group is written and read.
        write_pos, q, current_pos = group.positions(current_pos), group.rows(q), group.rows(current_pos)
        if page_table is None:
            k_cache, v_cache = ttjax.update_cache(k_cache, k, write_pos), ttjax.update_cache(v_cache, v, write_pos)
            own_k, own_v = group.rows(k_cache), group.rows(v_cache)
            cfg = sdpa_decode_program_config(k_cache.shape[2])
            out = ttjax.scaled_dot_product_attention_decode(q, own_k, own_v, current_pos, program_config=cfg,
                                                            **emulation_kwargs(args, OpGroup.SDPA_DECODE))
        else:
            k_cache = ttjax.paged_update_cache(k_cache, k, write_pos, page_table)
            v_cache = ttjax.paged_update_cache(v_cache, v, write_pos, page_table)
            page_table = group.rows(page_table)
            sdpa = args.optimizations.emulation(OpGroup.SDPA_DECODE)  # the paged op's chunk cap depends on the Dst size
            cfg = sdpa_decode_program_config(page_table.shape[1] * k_cache.shape[2], paged=True,
                                             fp32_dest_acc_en=sdpa is None or sdpa.config.fp32_dest_acc_en)
            out = ttjax.paged_scaled_dot_product_attention_decode(q, k_cache, v_cache, current_pos, page_table, program_config=cfg,
                                                                  **emulation_kwargs(args, OpGroup.SDPA_DECODE))
        out = gather_users(out.reshape(group.size, 1, -1), args) if group.n > 1 else out.reshape(b, 1, -1)
    else:
        raise ConfigError(f"mode must be 'prefill' or 'decode', got {mode!r}.")
    wo = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LI_O_PREFILL if prefill else OpGroup.LI_O_DECODE),
              dtype=output_dtype(args, OutputSite.WO_PREFILL if prefill else OutputSite.WO_DECODE))
    if args.layout.wo_gathered:  # T3K: all_gather_matmul, wo column-parallel; its output is the fractured residual
        return ttjax.linear(gather_heads(out, args), p.wo, **wo), (k_cache, v_cache)
    return reduce_row_parallel(ttjax.linear(out, p.wo, **wo), args, "wo", mode), (k_cache, v_cache)


class _UserGroup:
    """This device's users in decode: on a 2D mesh with grouped users (args.layout.user_groups), the batch / C users
    of its mesh column, c * size .. (c + 1) * size - 1 (tt's slice_mat); else every user."""

    def __init__(self, args: ModelArgs, batch: int):
        self.n = args.layout.user_groups(batch)
        self.size = batch // self.n
        self.start = jax.lax.axis_index(ttjax.ccl.axis_names(1)) * self.size if self.n > 1 else 0

    def rows(self, x):
        return x if self.n == 1 else jax.lax.dynamic_slice_in_dim(x, self.start, self.size, axis=0)

    def positions(self, current_pos):
        """Cache-write positions: the group's users' own, -1 (no write) for the other columns' users."""
        if self.n == 1:
            return current_pos
        users = jnp.arange(current_pos.shape[0])
        return jnp.where((users >= self.start) & (users < self.start + self.size), current_pos, -1)


def _own_group_only(x, cache, user_id, args: ModelArgs):
    """Prefill into a contiguous cache on a 2D mesh with grouped users: the prompt's K or V [1, kv, seq, hd] on the
    devices of the column whose group holds slot user_id (tt's prefill_prepare_tensor_for_kv_cache), and on the other
    columns what the slot already holds, so that fill_cache leaves it as it was."""
    slots = cache.shape[0]
    lay = args.layout
    groups = lay.user_groups(slots)
    if groups == 1:
        return x
    x = x[:, :, : cache.shape[2]].astype(cache.dtype)
    mine = jax.lax.axis_index(ttjax.ccl.axis_names(1)) == user_id // (slots // groups)
    held = jax.lax.dynamic_slice(cache, (user_id, 0, 0, 0), x.shape)
    return jnp.where(mine, x, held)

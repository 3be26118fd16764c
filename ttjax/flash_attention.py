"""Flash attention for prefill: ttnn.transformer.scaled_dot_product_attention and its chunked (paged) form.

The queries are cut into q_chunk_size rows and the keys into k_chunk_size rows. Each query
chunk walks the key chunks in order keeping, per row, the running max m, the running sum l of
exp(score - m) and the running weighted sum of values (the online softmax): when a chunk raises
the max, what was accumulated is rescaled by exp(m_old - m_new). With a causal mask the walk
stops at the key chunk that holds the query chunk's last position, so about half the chunks are
never touched, and no seq x seq score matrix exists: the largest score block is
q_chunk_size x k_chunk_size.

Grouped-query attention: query head h reads KV head h // (n_heads // n_kv_heads). Scores and
softmax are float32. Masked scores take a large negative finite value, never -inf, as in
tt-metal.

chunked_scaled_dot_product_attention is the same walk over keys read from a paged cache through
the user's page table, for queries that start at chunk_start_idx (chunked prefill: each chunk of
a long prompt attends to everything the earlier chunks wrote).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mesh.errors import TTJaxError
from ttjax.core_range import CoreCoord, CoreRangeSet
from ttjax.op_validation import validate_sdpa
import ttjax.native as native
import ttjax.sdpa_kernel as sdpa_kernel
import ttjax.sfpu as sfpu_fns
from ttjax.matrix_engine import MathFidelity, pack

MASK_VALUE = -1e9
TILE = 32


@dataclass(frozen=True, kw_only=True)
class SDPAProgramConfig:
    """ttnn.SDPAProgramConfig, fields, defaults and keyword-only constructor as ttnn's: the chunk sizes and the core
    grid the chunks are spread over (on one JAX device they run in sequence). Like ttnn's constructor it takes any
    non-negative chunk sizes; the op checks them (multiples of 32 for prefill; 0 lets decode pick its k chunk) and
    the grid and the chunks' circular buffers as a Wormhole does (ttjax.op_validation.validate_sdpa).
    exp_approx_mode: the softmax's exp (and the correction's) approximate on the SFPU under a compute kernel config;
    None (unset) is what ttnn's program factories then take, true. tt_transformers sets it False. sub_core_grids,
    max_cores_per_head_batch, max_k_splits, matmul_math_fidelity and segmented_accumulation are kept for a config
    carried from ttnn; they place work on cores and change no value here."""

    compute_with_storage_grid_size: CoreCoord
    sub_core_grids: CoreRangeSet | None = None
    q_chunk_size: int
    k_chunk_size: int
    exp_approx_mode: bool | None = None
    max_cores_per_head_batch: int = 16
    max_k_splits: int = 1
    matmul_math_fidelity: MathFidelity | None = None
    segmented_accumulation: bool = False

    def __post_init__(self):
        grid = self.compute_with_storage_grid_size
        if isinstance(grid, tuple) and len(grid) == 2:
            object.__setattr__(self, "compute_with_storage_grid_size", CoreCoord(*map(int, grid)))
        for name in ("q_chunk_size", "k_chunk_size", "max_cores_per_head_batch", "max_k_splits"):
            size = getattr(self, name)
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
                raise TTJaxError(f"SDPAProgramConfig: {name} = {size!r} must be a non-negative integer.")
            object.__setattr__(self, name, int(size))

    @property
    def exp_approx(self) -> bool:
        """The exp mode the kernels run: exp_approx_mode, true where it is unset."""
        return True if self.exp_approx_mode is None else bool(self.exp_approx_mode)


# ttjax's chunks where no program config is given (ttnn's ops then pick theirs from the shapes).
DEFAULT_PROGRAM_CONFIG = SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=64, k_chunk_size=64)


def check_on_device(op: str, cfg: SDPAProgramConfig, head_dim: int, dtype) -> None:
    """The config as the chip would take it: its grid on the device, its chunks' buffers in L1. A float32 reference
    run (or any format ttnn's SDPA does not take) is checked in bfloat16, the widest it takes. Only a config given by
    the caller is checked: the defaults are ttjax's, not a placement."""
    fmt = jnp.dtype(dtype).name if jnp.dtype(dtype).name in ("bfloat16", "bfloat8_b", "bfloat4_b") else "bfloat16"
    validate_sdpa(op, cfg.q_chunk_size, cfg.k_chunk_size, head_dim, cfg.compute_with_storage_grid_size, fmt)


def group_heads(q: jax.Array, n_kv: int) -> jax.Array:
    """[B, H, ...] -> [B, n_kv, H // n_kv, ...]: query heads grouped under their KV head."""
    b, h = q.shape[:2]
    if h % n_kv:
        raise TTJaxError(f"{h} query heads do not divide into {n_kv} KV heads.")
    return q.reshape(b, n_kv, h // n_kv, *q.shape[2:])


def _pad_to(x, axis: int, multiple: int):
    pad = -x.shape[axis] % multiple
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def flash_attention(qg, load_kv, n_k_chunks: int, k_chunk: int, q_start, *, is_causal: bool, q_chunk: int, n_keys=None,
                    kernel=None, out_dtype=jnp.float32):
    """The online-softmax walk. qg [B, KV, G, Sq, d] float32, already scaled (unscaled with a kernel, which scales
    inside its exp), Sq a multiple of q_chunk; load_kv(j) -> (k, v), each [B, KV, k_chunk, d] float32, for key rows
    [j * k_chunk, (j + 1) * k_chunk). Query row i is at position q_start + i; keys from n_keys on (padding) are
    masked. kernel: a ttjax.sdpa_kernel.KernelMath to walk as tt-metal's kernel does (its output packed to
    out_dtype). Returns [B, KV, G, Sq, d] float32."""
    b, n_kv, g, sq, d = qg.shape
    n_q_chunks = sq // q_chunk

    def one_q_chunk(i):
        q = jax.lax.dynamic_slice_in_dim(qg, i * q_chunk, q_chunk, axis=3)
        q_pos = q_start + i * q_chunk + jnp.arange(q_chunk)

        def allowed(j):
            k_pos = j * k_chunk + jnp.arange(k_chunk)
            keep = jnp.ones((q_chunk, k_chunk), bool)
            if is_causal:
                keep = k_pos[None, :] <= q_pos[:, None]
            if n_keys is not None:
                keep = keep & (k_pos < n_keys)
            return keep

        def step(j, carry):
            m, l, acc = carry
            k, v = load_kv(j)
            s = jnp.where(allowed(j), jnp.einsum("bkgqd,bksd->bkgqs", q, k), MASK_VALUE)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            rescale = jnp.exp(m - m_new)
            l = l * rescale + p.sum(-1)
            acc = acc * rescale[..., None] + jnp.einsum("bkgqs,bksd->bkgqd", p, v)
            return m_new, l, acc

        # Causal: key chunks past this query chunk's last position are skipped, not masked.
        last = q_start + (i + 1) * q_chunk - 1
        stop = jnp.minimum(n_k_chunks, last // k_chunk + 1) if is_causal else n_k_chunks
        if kernel is not None:
            return _kernel_walk(kernel, q, load_kv, allowed, stop, out_dtype)
        init = (jnp.full((b, n_kv, g, q_chunk), -jnp.inf), jnp.zeros((b, n_kv, g, q_chunk)), jnp.zeros((b, n_kv, g, q_chunk, d)))
        _, l, acc = jax.lax.fori_loop(0, stop, step, init)
        return acc / l[..., None]

    out = jax.lax.map(one_q_chunk, jnp.arange(n_q_chunks))  # [nq, B, KV, G, q_chunk, d]
    return jnp.moveaxis(out, 0, 3).reshape(b, n_kv, g, sq, d)


def _kernel_walk(kernel, q, load_kv, allowed, stop, out_dtype):
    """The key chunks of one query chunk as the SDPA kernel walks them (ttjax.sdpa_kernel): the G query heads of a KV
    head stacked as rows of one Q block, the first chunk peeled (it has no previous max or sums to correct)."""
    b, n_kv, g, q_chunk, d = q.shape
    rows = q.reshape(b, n_kv, g * q_chunk, d)

    def chunk(j, state, first):
        k, v = load_kv(j)
        keep = jnp.tile(allowed(j), (g, 1))  # [G * q_chunk, k_chunk]
        return sdpa_kernel.prefill_chunk(kernel, rows, k, v, keep, first, state)

    state = chunk(0, None, True)  # every query chunk reads key chunk 0
    state = jax.lax.fori_loop(1, stop, lambda j, st: chunk(j, st, False), state)
    return sdpa_kernel.prefill_finish(kernel, state, out_dtype).reshape(b, n_kv, g, q_chunk, d)


def _native_walk(kernel, qg, k, v, page_row, q_start, *, q_chunk: int, k_chunk: int, seq: int, block: int, n_keys: int,
                 is_causal: bool):
    """The prefill kernel's walk in one native call (ttjax/csrc/sdpa_prefill.inc, the same bits as _kernel_walk): qg
    [B, KV, G, Sq, d] unscaled; k, v contiguous [B, KV, seq, d] or a paged cache. Returns [B, KV, G, Sq, d] packed
    values, or None where the native kernels do not apply."""
    if kernel is None or not (kernel.fpu and kernel.sfpu and native.available()):
        return None
    b, n_kv, g, sq, d = qg.shape
    a_bits = np.asarray(sfpu_fns.SCHRAUDOLPH_A * np.float32(kernel.scale), np.float32).view(np.uint32)
    out = native.sdpa_prefill(
        qg.reshape(b * n_kv, g, sq, d), k, v, jnp.zeros((0,), jnp.int32) if page_row is None else page_row, q_start,
        block=block, seq=seq, q_chunk=q_chunk, k_chunk=k_chunk, n_keys=n_keys, causal=is_causal,
        phases=len(kernel.config.math_fidelity.phases), fp32=kernel.fp32, exp_approx=kernel.exp_approx or not kernel.fp32,
        corr_approx=kernel.exp_approx, recip_approx=kernel.config.math_approx_mode, scale_bits=int(kernel.scale_bits),
        a_bits=int(a_bits))
    return out.reshape(b, n_kv, g, sq, d)


def kernel_math(cfg: SDPAProgramConfig, scale: float, compute_kernel_config, fpu: bool, sfpu: bool):
    """The kernel's arithmetic for a compute kernel config (None: float32 math, the reference)."""
    if compute_kernel_config is None:
        return None
    return sdpa_kernel.KernelMath(compute_kernel_config, float(scale), cfg.exp_approx, fpu, sfpu)


def scaled_dot_product_attention(q, k, v, *, is_causal: bool = True, scale: float | None = None, program_config=None,
                                 compute_kernel_config=None, fpu: bool = True, sfpu: bool = True):
    """q [B, H, Sq, d], k/v [B, KV, Sk, d] -> [B, H, Sq, d], flash attention in program_config's chunks.

    Causal attention needs Sq == Sk. Lengths that are not chunk multiples are zero-padded here and the
    padding masked (ttnn wants tile-padded inputs; here any length runs). With a compute_kernel_config the walk is
    the SDPA kernel's (ttjax.sdpa_kernel; fpu / sfpu: which halves of the Tensix to emulate)."""
    cfg = program_config or DEFAULT_PROGRAM_CONFIG
    b, h, sq, d = q.shape
    if program_config is not None:
        check_on_device("ttjax.scaled_dot_product_attention", cfg, d, q.dtype)
    sk = k.shape[2]
    if is_causal and sk != sq:
        raise TTJaxError(f"causal attention needs as many keys as queries, got {sk} keys for {sq} queries.")
    scale = d**-0.5 if scale is None else scale
    kernel = kernel_math(cfg, scale, compute_kernel_config, fpu, sfpu)
    tiled = -(-sk // TILE) * TILE if kernel is not None else sk  # the kernel reads whole tiles of keys
    q_chunk, k_chunk = min(cfg.q_chunk_size, sq), min(cfg.k_chunk_size, tiled)
    qg = _pad_to(group_heads(q, k.shape[1]).astype(jnp.float32) * (1.0 if kernel else scale), 3, q_chunk)
    kf, vf = (_pad_to(t.astype(jnp.float32), 2, k_chunk) for t in (k, v))

    def load_kv(j):
        return (jax.lax.dynamic_slice_in_dim(kf, j * k_chunk, k_chunk, axis=2), jax.lax.dynamic_slice_in_dim(vf, j * k_chunk, k_chunk, axis=2))

    n_keys = None if sk % k_chunk == 0 else sk
    out = _native_walk(kernel, qg, kf, vf, None, 0, q_chunk=q_chunk, k_chunk=k_chunk, seq=kf.shape[2], block=1,
                       n_keys=sk if n_keys is None else n_keys, is_causal=is_causal)
    if out is not None:
        out = pack(out, q.dtype, kernel.fp32).astype(jnp.float32)
    else:
        out = flash_attention(qg, load_kv, kf.shape[2] // k_chunk, k_chunk, 0, is_causal=is_causal, q_chunk=q_chunk,
                              n_keys=n_keys, kernel=kernel, out_dtype=q.dtype)
    return out[..., :sq, :].reshape(b, h, sq, d).astype(q.dtype)


def chunked_scaled_dot_product_attention(q, k_cache, v_cache, page_table, chunk_start_idx, *, scale=None, program_config=None,
                                         compute_kernel_config=None, fpu: bool = True, sfpu: bool = True):
    """Causal attention of one user's query chunk against its paged cache.

    q [1, H, S, d] holds positions chunk_start_idx .. chunk_start_idx + S - 1 (its K/V already written);
    caches [max_num_blocks, KV, block_size, d]; page_table [1, blocks_per_user] (or [blocks_per_user]).
    chunk_start_idx may be traced: one program serves every chunk of a prompt. compute_kernel_config, fpu, sfpu: as
    scaled_dot_product_attention's."""
    cfg = program_config or DEFAULT_PROGRAM_CONFIG
    _, h, s, d = q.shape
    if program_config is not None:
        check_on_device("ttjax.chunked_scaled_dot_product_attention", cfg, d, q.dtype)
    n_kv, block = k_cache.shape[1], k_cache.shape[2]
    row = page_table.reshape(-1)
    k_chunk = min(cfg.k_chunk_size, row.shape[0] * block)
    if k_chunk % block:
        raise TTJaxError(f"k_chunk_size = {k_chunk} is not a multiple of the cache's block_size = {block}.")
    if (row.shape[0] * block) % k_chunk:
        raise TTJaxError(f"the page table spans {row.shape[0] * block} positions, not a multiple of k_chunk_size = {k_chunk}.")
    q_chunk = min(cfg.q_chunk_size, s)
    if s % q_chunk:
        raise TTJaxError(f"the query chunk of {s} rows is not a multiple of q_chunk_size = {q_chunk}.")
    per_chunk = k_chunk // block
    scale = d**-0.5 if scale is None else scale
    kernel = kernel_math(cfg, scale, compute_kernel_config, fpu, sfpu)
    qg = group_heads(q, n_kv).astype(jnp.float32) * (1.0 if kernel else scale)

    def load_kv(j):
        blocks = jax.lax.dynamic_slice_in_dim(row, j * per_chunk, per_chunk)
        blocks = jnp.maximum(blocks, 0)  # unassigned entries (-1) lie past the causal limit; read block 0 and mask

        def read(cache):  # [per_chunk, KV, block, d] -> [1, KV, k_chunk, d]
            return cache[blocks].transpose(1, 0, 2, 3).reshape(1, n_kv, k_chunk, d).astype(jnp.float32)

        return read(k_cache), read(v_cache)

    out = _native_walk(kernel, qg, k_cache, v_cache, row, chunk_start_idx, q_chunk=q_chunk, k_chunk=k_chunk,
                       seq=row.shape[0] * block, block=block, n_keys=row.shape[0] * block, is_causal=True)
    if out is not None:
        out = pack(out, q.dtype, kernel.fp32).astype(jnp.float32)
    else:
        out = flash_attention(qg, load_kv, row.shape[0] // per_chunk, k_chunk, chunk_start_idx, is_causal=True,
                              q_chunk=q_chunk, kernel=kernel, out_dtype=q.dtype)
    return out.reshape(1, h, s, d).astype(q.dtype)

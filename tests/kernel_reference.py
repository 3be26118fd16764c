"""Plain numpy references of the compute kernels' sequences ttjax emulates (ttjax.norm's RMSNorm, ttjax.mul with its
fused SiLU, ttjax.sdpa_kernel's flash attention and flash decode), for the tests only, on small shapes.

Written apart from ttjax: every matmul and reduce is tests/fpu_reference.py's loop-by-loop matrix engine, every SFPU
step tests/sfpu_reference.py's numpy transcription of tt-llk's kernels, the element-wise matrix-engine steps and the
packer's roundings are float64 arithmetic on each value's bits (fpu_reference's keep_bits / round_away); the step
lists follow the kernels (compute_common.hpp, sdpa_flash_decode.cpp, layernorm.cpp, rmsnorm_pre/post_allgather,
binary_ng's eltwise_binary_no_bcast.cpp), each line naming the one it stands for.
"""

from __future__ import annotations

import numpy as np

from tests import fpu_reference as fr
from tests import sfpu_reference as sr

F32 = np.float32


def flush(v):
    return fr.flush(np.asarray(v, np.float64))


def to_tf32(v):
    """float32 data as the unpacker reads it into Src as TF32: 11 significant bits kept (truncated), flushed."""
    return flush(fr.keep_bits(v, 11))


def to_bf16_src(v):
    return flush(fr.keep_bits(v, 8))


def dst_write(v, fp32):
    """A sum written to Dst: FP32 (round to nearest even, numpy's float32), or BF16 (TF32 then BF16, ties away)."""
    v = np.asarray(v, np.float32).astype(np.float64)
    return v if fp32 else flush(fr.round_away(fr.round_away(v, 11), 8))


def pack_bf16(dst, fp32):
    """Dst values written to a bfloat16 buffer: from FP32 rounded to 8 bits ties away, flushed; BF16 as they are
    (a float32 sum that is not bfloat16 rounds to nearest even, as ttjax's float32 -> bfloat16 conversion)."""
    dst = np.asarray(dst, np.float64)
    if fp32:
        return flush(np.where(np.isinf(dst), dst, fr.round_away(dst, 8)))
    return _rne_bf16(dst)


def _rne_bf16(v):
    import ml_dtypes

    return np.asarray(np.asarray(v, np.float32).astype(ml_dtypes.bfloat16), np.float64)


def pack_im(v, fp32):
    """To an intermediate buffer: float32 with an FP32 Dst, else bfloat16."""
    return np.asarray(v, np.float32).astype(np.float64) if fp32 else _rne_bf16(v)


def phase_bits(v, phase, src_a: bool):
    """The part of a Src value a fidelity phase multiplies: SrcA 5 bits then the next 5, SrcB 7 then the next 4."""
    if src_a:
        hi = fr.keep_bits(v, 5)
        return hi if phase & 1 == 0 else fr.keep_bits(v, 10) - hi
    hi = fr.keep_bits(v, 7)
    return hi if phase & 2 == 0 else fr.keep_bits(v, 11) - hi


PHASES = {"LoFi": 1, "HiFi2": 2, "HiFi3": 3, "HiFi4": 4}


def elwmul(a, b, fidelity, fp32, a_tf32=False, b_tf32=False):
    """ELWMUL: per phase SrcA bits x SrcB bits added into Dst (from zero); a in SrcA sets the style (BF16 unless
    TF32: SrcB is then read as BF16)."""
    a = to_tf32(a) if a_tf32 else flush(a)
    b = to_tf32(b) if b_tf32 else flush(b)
    if not a_tf32:
        b = fr.keep_bits(b, 8)
    d = np.zeros(np.broadcast_shapes(a.shape, b.shape))
    for p in range(PHASES[fidelity]):
        d = dst_write(d + phase_bits(a, p, True) * phase_bits(b, p, False), fp32)
    return d


def elwadd(a, b, fp32, subtract=False, a_tf32=False, b_tf32=False):
    a = to_tf32(a) if a_tf32 else flush(a)
    b = to_tf32(b) if b_tf32 else flush(b)
    if not a_tf32:
        b = fr.keep_bits(b, 8)
    s = np.asarray(a, np.float32) - np.asarray(b, np.float32) if subtract else np.asarray(a, np.float32) + np.asarray(b, np.float32)
    return dst_write(s, fp32)


def matmul(x, w, fidelity, fp32, w_tf32=False):
    return np.asarray(fr.matmul_reference(np.asarray(x, np.float32), np.asarray(w, np.float32), fidelity, fp32, w_tf32), np.float64)


def reduce_rows(x, scaler, fidelity, fp32, from_float32):
    """reduce_tile REDUCE_ROW: the scaler row (SrcB) times x^T (SrcA) on the matrix engine, per row."""
    ones = np.full((1, x.shape[-1]), scaler, np.float32)
    return matmul(ones, np.asarray(x, np.float32).T, fidelity, fp32, w_tf32=from_float32).T


def sfpu(dst, fp32, fn):
    return np.asarray(sr.on_dst(np.asarray(dst, np.float32), fp32, fn), np.float64)


# ---------------------------------------------------------------------------------------------------- RMSNorm
def rms_norm(x, gamma, eps, fidelity, fp32, approx):
    """layernorm.cpp, RMSNORM + FUSE_GAMMA, one row of x per row."""
    im = lambda v: pack_im(v, fp32)  # noqa: E731
    xx = im(elwmul(x, x, fidelity, fp32))  # ckl::square -> xmm2
    total = reduce_rows(xx, 1.0, fidelity, fp32, from_float32=fp32)  # row_wise_mean: reduce_tile SUM ...
    inv_n = np.float32(1.0) / np.float32(x.shape[-1])
    mean = im(sfpu(total, fp32, lambda v: sr.MAD(v, np.uint64(inv_n.view(np.uint32)), 0)))  # ... mul_unary_tile 1/N
    return normalize(x, mean, gamma, eps, fidelity, fp32, approx)


def normalize(x, mean, gamma, eps, fidelity, fp32, approx):
    im = lambda v: pack_im(v, fp32)  # noqa: E731
    eps = np.float32(eps).view(np.uint32) & np.uint32(0xFFFF0000)  # the bf16 eps tile: bits >> 16
    var = elwadd(mean, eps.view(np.float32), fp32, a_tf32=fp32)  # BinaryFpu<Add>(ex2, eps)
    inv = im(sfpu(var, fp32, lambda v: sr.sqrt(v, approx, fp32, recip=True)))  # Rsqrt, PackTile(ex2pe)
    xn = im(elwmul(x, inv, fidelity, fp32, b_tf32=fp32))  # x * ex2pe (column broadcast)
    out = elwmul(xn, gamma, fidelity, fp32, a_tf32=fp32)  # * gamma (row broadcast)
    return pack_bf16(out, fp32)


def rms_norm_pre(x, fidelity, fp32):
    xx = pack_im(elwmul(x, x, fidelity, fp32), fp32)
    return pack_bf16(reduce_rows(xx, 1.0, fidelity, fp32, from_float32=fp32), fp32)


def rms_norm_post(x, stats, gamma, eps, dim, fidelity, fp32, approx):
    scaler = (np.float32(1.0) / np.float32(dim)).view(np.uint32) & np.uint32(0xFFFF0000)
    mean = pack_im(reduce_rows(stats, scaler.view(np.float32), fidelity, fp32, from_float32=False), fp32)
    return normalize(x, mean, gamma, eps, fidelity, fp32, approx)


# ---------------------------------------------------------------------------------------------------- MLP multiply
def silu_mul(a, b, fidelity, fp32, out_bf16=True):
    """binary_ng: copy_tile(a), silu_tile, pack to a's format (bfloat16); mul_tiles(a', b) on the matrix engine."""
    s = sfpu(to_bf16_src(a) if not fp32 else a, fp32, lambda v: sr.silu(v, False, fp32))
    s = pack_bf16(s, fp32)
    d = elwmul(s, b, fidelity, fp32)
    return pack_bf16(d, fp32) if out_bf16 else d


# ---------------------------------------------------------------------------------------------------- SDPA
def _exp_scores(diff, fp32, scale, approx):
    if approx:
        return sfpu(diff, fp32, lambda v: schraudolph(v, fp32, scale))
    scaled = sfpu(diff, fp32, lambda v: sr.MAD(v, np.uint64(np.float32(scale).view(np.uint32)), 0))
    return sfpu(scaled, fp32, lambda v: sr.exp(v, False, fp32))


def schraudolph(v, fp32, scale):
    return sr.schraudolph_scaled(v, fp32, scale)


def _exp_correction(diff, fp32, scale, exp_approx):
    sb = int(np.float32(scale).view(np.uint32)) >> 16
    if exp_approx:
        return sfpu(diff, fp32, lambda v: sr.exp_accurate_scaled(v, fp32, sb))
    return sfpu(diff, fp32, lambda v: sr.exp_polynomial(v, fp32, sb))


def _recip(l, fp32, approx):
    if approx:
        return sfpu(l, fp32, lambda v: sr.reciprocal_iter(v, 1, False, sr.DEFAULT_SEED))
    if fp32:
        return sfpu(l, fp32, lambda v: sr.reciprocal_iter(v, 2, False, sr.DEFAULT_SEED))
    return sfpu(l, fp32, lambda v: sr.reciprocal_iter(v, 1, True, sr.DEFAULT_SEED))


def flash_attention(q, k, v, q_pos, k_chunk, fidelity, fp32, math_approx, exp_approx_mode, scale):
    """sdpa.cpp's standard path for one Q block (rows q [R, d] at positions q_pos [R]) against keys k, v [S, d],
    causal, S a multiple of k_chunk."""
    im = lambda x: pack_im(x, fp32)  # noqa: E731
    approx = exp_approx_mode or not fp32
    m = sums = o = None
    stop = min(len(k) // k_chunk, int(q_pos.max()) // k_chunk + 1)
    for j in range(stop):
        kc, vc = k[j * k_chunk:(j + 1) * k_chunk], v[j * k_chunk:(j + 1) * k_chunk]
        s = im(matmul(q, kc.T, fidelity, fp32))  # matmul_blocks(Q, K^T) -> qk_im
        kpos = j * k_chunk + np.arange(k_chunk)
        s = np.where(kpos[None, :] <= q_pos[:, None], s, -np.inf)  # the causal mask (-inf tiles)
        mj = (to_tf32(s) if fp32 else flush(s)).max(-1, keepdims=True)  # reduce_c<MAX>
        m_new = pack_bf16(mj if m is None else np.maximum(mj, m), fp32)
        diff = elwadd(s, m_new, fp32, subtract=True, a_tf32=fp32)  # sub_tiles_bcast_cols
        p = im(np.maximum(_exp_scores(diff, fp32, scale, approx), 0))  # exp, packed with ReLU
        tiles = p.reshape(len(p), -1, 32)
        s_new = tiles[:, 0]
        for t in range(1, tiles.shape[1]):  # the partial sums, L1-accumulated tile after tile
            s_new = im(s_new + tiles[:, t])
        pv = pack_bf16(matmul(p if not fp32 else fr.keep_bits(p, 8), vc, fidelity, fp32), fp32)  # P V -> out_im
        if m is None:
            m, sums, o = m_new, s_new, pv
            continue
        alpha = pack_bf16(_exp_correction(elwadd(m, m_new, fp32, subtract=True), fp32, scale, exp_approx_mode), fp32)
        old = im(elwmul(sums, alpha, fidelity, fp32, a_tf32=fp32))  # prev_sum *= alpha
        sums = im(elwadd(s_new, old, fp32, a_tf32=fp32, b_tf32=fp32))  # cur_sum += prev_sum
        o = pack_bf16(pv + pack_bf16(elwmul(o, alpha, fidelity, fp32), fp32), fp32)  # O: L1-accumulated in bfloat16
        m = m_new
    l = im(matmul(sums, np.ones((32, 1)), fidelity, fp32))  # matmul_reduce with a column of ones
    recip = im(_recip(to_tf32(l) if fp32 else flush(l), fp32, math_approx))
    return elwmul(o, recip, fidelity, fp32, b_tf32=fp32)  # final Dst (before the output's format)


def flash_decode(q, k, v, pos, k_chunk, fidelity, fp32, math_approx, exp_approx, exp_approx_mode, scale):
    """sdpa_flash_decode.cpp for one (user, KV head) on one core: q [G, d], k, v [S, d], the user at pos."""
    bf = lambda x: pack_bf16(x, fp32)  # noqa: E731
    m = l = o = None
    for j in range(pos // k_chunk + 1):
        kc, vc = k[j * k_chunk:(j + 1) * k_chunk], v[j * k_chunk:(j + 1) * k_chunk]
        kpos = j * k_chunk + np.arange(k_chunk)
        s = bf(np.where(kpos[None, :] <= pos, matmul(q, kc.T, fidelity, fp32), -np.inf))  # mask added in Dst
        mj = flush(s).max(-1, keepdims=True)
        m_new = bf(mj if m is None else np.maximum(mj, m))
        diff = elwadd(s, m_new, fp32, subtract=True)
        p = bf(np.maximum(_exp_scores(diff, fp32, scale, exp_approx), 0))
        l_new = bf(reduce_rows(p, 1.0, fidelity, fp32, from_float32=False))  # reduce_c<SUM>
        pv = bf(matmul(p, vc, fidelity, fp32))
        if m is None:
            m, l, o = m_new, l_new, pv
            continue
        alpha = bf(_exp_correction(elwadd(m, m_new, fp32, subtract=True), fp32, scale, exp_approx_mode))
        l_old = bf(elwmul(l, alpha, fidelity, fp32))
        o_old = bf(elwmul(o, alpha, fidelity, fp32))
        l = bf(elwadd(l_new, l_old, fp32))
        o = bf(elwadd(o_old, pv, fp32))
        m = m_new
    recip = bf(_recip(l, fp32, math_approx))
    return elwmul(o, recip, fidelity, fp32)


# ---------------------------------------------------------------------------------------------------- RoPE
def rotary(x, cos, sin, fidelity, fp32):
    """rotary_embedding_llama.cpp: rotated = x @ trans_mat per 32-wide tile (matmul_tiles), rotated * sin and x * cos
    (mul_tiles, the tables bfloat16 rows), their sum (add_tiles), each packed to x's bfloat16."""
    trans = np.zeros((32, 32))
    trans[np.arange(0, 32, 2), np.arange(1, 32, 2)] = 1.0
    trans[np.arange(1, 32, 2), np.arange(0, 32, 2)] = -1.0
    rows = x.reshape(-1, 32)
    rotated = pack_bf16(matmul(rows, trans, fidelity, fp32), fp32).reshape(x.shape)
    cos, sin = _rne_bf16(cos), _rne_bf16(sin)
    cos_interm = pack_bf16(elwmul(x, cos, fidelity, fp32), fp32)
    sin_interm = pack_bf16(elwmul(rotated, sin, fidelity, fp32), fp32)
    return pack_bf16(elwadd(cos_interm, sin_interm, fp32), fp32)

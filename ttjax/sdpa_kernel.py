"""Flash attention's arithmetic as tt-metal's SDPA compute kernels do it, under a compute kernel config.

ttjax.flash_attention and ttjax.flash_decode walk the key chunks in float32 (a reference). With a config they walk
them as the kernels do (ttnn/cpp/ttnn/operations/transformer/sdpa/device/kernels/compute/compute_common.hpp,
sdpa_flash_decode.cpp; ckernel_sfpu_sdpa.h), every step on ttjax's matrix engine (fidelity, Dst) or SFPU
(ttjax.sfpu), every intermediate in the format of its circular buffer:

prefill (sdpa.cpp's standard path; the intermediates S, P and the running sum are float32 with fp32_dest_acc_en, else
bfloat16; the running max and the output accumulator bfloat16):
  S = Q K^T on the matrix engine (K in SrcA); the causal mask adds -inf;
  m = the row max of S (read as TF32), max with the previous m, packed to bfloat16;
  P = exp(scale * (S - m)): S - m on the matrix engine, then on the SFPU either an FP32 multiply by the scale and
      the accurate exp, or (exp_approx_mode) the approximate exp with the scale folded in; packed with ReLU;
  the running sum keeps 32 columns: each chunk's P tiles added element-wise (the packer's accumulation), and only
      after the last chunk summed along the row by a matmul with a column of ones;
  O += P V on the matrix engine (P read as BF16 against bfloat16 or block-float V), packed to bfloat16;
  from the second chunk on, alpha = exp(scale * (m_old - m_new)) by ckernel_sfpu_sdpa's polynomial exp with the
      scale truncated to BF16, the sums and O rescaled by it on the matrix engine, O's two parts added in bfloat16;
  finally 1/l on the SFPU (the compute config's math_approx_mode: one Newton step, else two with FP32 Dst) and O
      times it on the matrix engine, packed to the output format.
decode (sdpa_flash_decode.cpp; every intermediate bfloat16): the same walk for each user's chunks, except that the
  row sum of P is a reduce on the matrix engine each chunk, the correction rescales the sums element-wise, and Q
  heads that fit a half tile (at most 16 heads, causal, bfloat16 Q) take the approximate exp whatever
  exp_approx_mode says (the kernel's VectorMode::R branch).

What is not modelled: decode's split of a user's sequence over several cores and their tree reduction (ttjax walks
the chunks on one core, which is what the kernel does when users x KV heads fill the grid); the packer's addition
into a bfloat16 buffer (O's two parts) is taken as a float32 add rounded as the packer rounds; prefill without
fp32_dest_acc_en takes sdpa.cpp's streaming path, whose exp is always approximate (modelled) and whose intermediates
are bfloat16 (modelled), but whose order of steps differs in ways not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import ttjax.sfpu as sfpu_fns
import ttjax.vector_unit as vu
from ttjax.matrix_engine import WormholeComputeKernelConfig, elwadd, elwmul, pack, read_src, reduce_rows, tensix_matmul

NEG_INF = float("-inf")


@dataclass(frozen=True)
class KernelMath:
    """The SDPA kernels' steps for one compute config: fpu / sfpu say which halves are emulated (the other is float32
    math on the same formats)."""

    config: WormholeComputeKernelConfig
    scale: float
    exp_approx: bool
    fpu: bool = True
    sfpu: bool = True

    @property
    def fp32(self) -> bool:
        return self.config.fp32_dest_acc_en

    @property
    def scale_bits(self) -> np.uint32:
        return np.asarray(self.scale, np.float32).view(np.uint32)

    def pack(self, dst, fmt: str, relu: bool = False):
        """Dst values packed to a buffer of format "float32" or "bfloat16", as float32 values."""
        if relu:
            dst = jnp.maximum(dst, 0.0)
        return pack(dst, jnp.float32 if fmt == "float32" else jnp.bfloat16, self.fp32).astype(jnp.float32)

    @property
    def im(self) -> str:
        """The format of the intermediates that follow the Dst (S, P, the running sum): float32 or bfloat16."""
        return "float32" if self.fp32 else "bfloat16"

    def matmul(self, x, w, x_float32: bool, w_float32: bool):
        """x [..., R, K] @ w [..., K, N] per leading index: x in0 (SrcB), w in1 (SrcA); Dst values."""
        if not self.fpu:
            return jnp.einsum("...rk,...kn->...rn", x, w)
        lead = x.shape[:-2]
        xf = x.reshape(-1, *x.shape[-2:])
        wf = jnp.broadcast_to(w, (*lead, *w.shape[-2:])).reshape(-1, *w.shape[-2:])
        if x_float32 and not w_float32:  # SrcA's BF16 style reads a float32 SrcB as BF16
            xf = read_src(xf, True)
        out = jax.vmap(lambda a, b: tensix_matmul(a, b, self.config, weight_is_float32=w_float32))(xf, wf)
        return out.reshape(*lead, *out.shape[-2:])

    def mul(self, a, b, a_float32: bool, b_float32: bool):
        if not self.fpu:
            return a * b
        return elwmul(a, b, self.config, a_float32=a_float32, b_float32=b_float32)

    def add(self, a, b, a_float32: bool, b_float32: bool, subtract: bool = False):
        if not self.fpu:
            return a - b if subtract else a + b
        return elwadd(a, b, self.config, a_float32=a_float32, b_float32=b_float32, subtract=subtract)

    def row_max(self, s, s_float32: bool):
        """GMPOOL's max along the row: of the values as read into Src (TF32 from a float32 buffer)."""
        return jnp.max(read_src(s, s_float32) if self.fpu else s, axis=-1, keepdims=True)

    def row_sum(self, p, p_float32: bool):
        if not self.fpu:
            return jnp.sum(p, axis=-1, keepdims=True)
        return reduce_rows(p, 1.0, self.config, from_float32=p_float32)

    def exp_scores(self, diff, approx: bool):
        """exp(scale * diff) on the SFPU over Dst values: the FP32 scale product then exp_tile (accurate), or the
        approximate exp with the scale folded into its constant and no input clamp (the packer's ReLU follows)."""
        if not self.sfpu:
            return jnp.exp(jnp.float32(self.scale) * diff)
        if approx:
            return sfpu_fns.run_on_dst(diff, "exp_schraudolph", fp32=self.fp32, scale=self.scale, clamp_negative=False)
        scaled = sfpu_fns.run_on_dst(diff, "mul_scalar", fp32=self.fp32, constant=np.float32(self.scale))  # mul_unary_tile
        return sfpu_fns.run_on_dst(scaled, "exp", fp32=self.fp32)

    def exp_correction(self, diff):
        """exp_tile_first_column: the correction factor exp(scale * diff), the scale truncated to BF16."""
        scale_bf16 = int(self.scale_bits >> 16)
        if not self.sfpu:
            return jnp.exp(jnp.float32(vu.value(np.uint32(scale_bf16 << 16))) * diff)
        name = "exp_accurate_scaled" if self.exp_approx else "exp_polynomial"
        return sfpu_fns.run_on_dst(diff, name, fp32=self.fp32, scale_bf16=scale_bf16)

    def reciprocal(self, dst):
        """recip_tile_first_column (after sfpu_reciprocal_init's default seed): one Newton step with APPROX, two with
        an FP32 Dst, else one rounded to BF16."""
        if not self.sfpu:
            return 1.0 / dst
        if self.config.math_approx_mode:
            return sfpu_fns.run_on_dst(dst, "reciprocal_iter", fp32=self.fp32, iterations=1)
        return sfpu_fns.run_on_dst(dst, "reciprocal_iter", fp32=self.fp32, iterations=2 if self.fp32 else 1,
                                   round_to_bf16=not self.fp32)

    def accumulate_bf16(self, a, b):
        """The packer adding a bfloat16 value onto a bfloat16 buffer (L1 accumulation): a float32 sum, packed."""
        return self.pack(a + b, "bfloat16")


def prefill_chunk(km: KernelMath, q, k, v, allowed, first: bool, state):
    """One K chunk of one query chunk (compute_common.hpp's sdpa_inner_loop, standard path). q [..., Sq, d] and k, v
    [..., Sk, d] as stored (float32 arrays of their values); allowed [..., Sq, Sk] the mask. state: (m [..., Sq, 1]
    bfloat16 values, sums [..., Sq, 32], o [..., Sq, d] bfloat16 values), None on the first chunk."""
    im32 = km.im == "float32"
    s = km.pack(km.matmul(q, jnp.swapaxes(k, -1, -2), False, False), km.im)
    s = jnp.where(allowed, s, NEG_INF)
    m = km.row_max(s, im32)
    if not first:
        m = jnp.maximum(m, state[0])
    m = km.pack(m, "bfloat16")
    diff = km.add(s, m, im32, False, subtract=True)
    p = km.pack(km.exp_scores(diff, approx=km.exp_approx or not km.fp32), km.im, relu=True)
    tiles = p.reshape(*p.shape[:-1], p.shape[-1] // 32, 32)
    sums = tiles[..., 0, :]
    for t in range(1, tiles.shape[-2]):  # the packer's L1 accumulation, tile after tile
        sums = km.pack(sums + tiles[..., t, :], km.im)
    pv = km.pack(km.matmul(p, v, im32, False), "bfloat16")
    if first:
        return m, sums, pv
    m_old, sums_old, o_old = state
    alpha = km.pack(km.exp_correction(km.add(m_old, m, False, False, subtract=True)), "bfloat16")
    sums_old = km.pack(km.mul(sums_old, alpha, im32, False), km.im)
    sums = km.pack(km.add(sums, sums_old, im32, im32), km.im)
    o = km.accumulate_bf16(pv, km.pack(km.mul(o_old, alpha, False, False), "bfloat16"))
    return m, sums, o


def prefill_finish(km: KernelMath, state, out_dtype):
    """After the last chunk: l = the row sum of the 32 running columns (a matmul with a column of ones), 1/l on the
    SFPU, O times it on the matrix engine, packed to out_dtype."""
    im32 = km.im == "float32"
    _, sums, o = state
    ones = jnp.ones((sums.shape[-1], 1), jnp.float32)
    l = km.pack(km.matmul(sums, ones, im32, False), km.im)
    recip = km.pack(km.reciprocal(read_src(l, im32) if km.fpu else l), km.im)
    out = km.mul(o, recip, False, im32)
    return pack(out, out_dtype, km.fp32).astype(jnp.float32)


def decode_chunk(km: KernelMath, q, k, v, allowed, first: bool, state, approx_exp: bool):
    """One K chunk of flash decode (sdpa_flash_decode.cpp): q [..., G, d], k, v [..., Sk, d], allowed [..., 1, Sk].
    state (m, l, o), all bfloat16 values: [..., G, 1], [..., G, 1], [..., G, d]."""
    s = jnp.where(allowed, km.matmul(q, jnp.swapaxes(k, -1, -2), False, False), NEG_INF)  # mask added in Dst
    s = km.pack(s, "bfloat16")
    m = km.row_max(s, False)
    if not first:
        m = jnp.maximum(m, state[0])
    m = km.pack(m, "bfloat16")
    diff = km.add(s, m, False, False, subtract=True)
    p = km.pack(km.exp_scores(diff, approx=approx_exp), "bfloat16", relu=True)
    l = km.pack(km.row_sum(p, False), "bfloat16")
    pv = km.pack(km.matmul(p, v, False, False), "bfloat16")
    if first:
        return m, l, pv
    m_old, l_old, o_old = state
    alpha = km.pack(km.exp_correction(km.add(m_old, m, False, False, subtract=True)), "bfloat16")
    l_old = km.pack(km.mul(l_old, alpha, False, False), "bfloat16")
    o_old = km.pack(km.mul(o_old, alpha, False, False), "bfloat16")
    l = km.pack(km.add(l, l_old, False, False), "bfloat16")
    o = km.pack(km.add(o_old, pv, False, False), "bfloat16")
    return m, l, o


def decode_finish(km: KernelMath, state, out_dtype):
    _, l, o = state
    recip = km.pack(km.reciprocal(l), "bfloat16")
    return pack(km.mul(o, recip, False, False), out_dtype, km.fp32).astype(jnp.float32)


def half_tile_queries(n_q_heads: int, q_dtype, is_causal: bool) -> bool:
    """sdpa_decode's use_half_tile: Q in 16 x 32 tiles when causal with at most 16 query heads in bfloat16; then the
    kernel's exp runs in VectorMode::R, which takes the approximate branch."""
    return is_causal and n_q_heads <= 16 and jnp.dtype(q_dtype) == jnp.bfloat16

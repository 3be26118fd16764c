"""ttjax.rms_norm and the distributed RMSNorm's two halves.

Without a compute_kernel_config: RMSNorm in float32 math (a reference). With one: what tt-metal's norm kernels
compute for it (ttnn/cpp/ttnn/operations/normalization: layernorm.cpp with RMSNORM and FUSE_GAMMA,
rmsnorm_pre_allgather.cpp, rmsnorm_post_allgather), step by step:
1. x^2 on the matrix engine (ELWMUL at the config's fidelity), packed to the intermediate format: float32 with
   fp32_dest_acc_en, else bfloat16 (every intermediate buffer of these kernels follows that rule);
2. the sum over the row on the matrix engine (a reduce with a scaler of 1.0), then times 1/N on the SFPU (an exact
   FP32 1/N; the pre-all-gather half stops at the sum and packs it to bfloat16, the format tt_transformers asks for
   and all-gathers; the post half reduces the gathered sums with a scaler of 1/(N * devices) truncated to bfloat16);
3. + epsilon (truncated to bfloat16, as the reader writes it) on the matrix engine, then rsqrt on the SFPU at the
   config's math_approx_mode (ttjax.sfpu), packed;
4. x times that (the rsqrt read as BF16: x in SrcA sets the style), packed; times gamma (bfloat16), packed to x's
   dtype.
fpu=False computes steps 1-4's matrix-engine arithmetic exactly (in float32, formats kept); sfpu=False the rsqrt and
the 1/N product. Not modelled: the sharded decode kernel's split of the row over cores (its per-core partial sums
with a scaler of cores / N); ttjax reduces a row in one piece, as the interleaved kernel does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import ttjax.sfpu as _sfpu
from ttjax.matrix_engine import (MathFidelity, WormholeComputeKernelConfig, elwadd, elwmul, init_device_compute_kernel_config,
                                 pack, reduce_rows)

# What ttnn.rms_norm computes with when it is given no compute_kernel_config (normalization's device operations call
# init_device_compute_kernel_config with HiFi4, approximate SFPU functions, a 16-bit Dst). ttjax.rms_norm without a
# config is the float32 reference instead; pass this to compute what the chip's default computes.
RMS_NORM_DEFAULT_COMPUTE_KERNEL_CONFIG = init_device_compute_kernel_config(
    "wormhole_b0", None, math_fidelity=MathFidelity.HiFi4, math_approx_mode=True, fp32_dest_acc_en=False)


def rms_norm(x: jax.Array, weight: jax.Array, *, epsilon: float, compute_kernel_config: WormholeComputeKernelConfig | None = None,
             fpu: bool = True, sfpu: bool = True) -> jax.Array:
    if compute_kernel_config is None:
        xf = x.astype(jnp.float32)
        inv_rms = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + epsilon)
        return (xf * inv_rms * weight.astype(jnp.float32)).astype(x.dtype)
    k = _Kernel(compute_kernel_config, fpu, sfpu)
    total = k.reduce(k.pack(k.square(x)), 1.0)
    mean = k.pack(k.sfpu_mul(total, np.float32(1.0) / np.float32(x.shape[-1])))
    return k.normalize(x, mean, weight, epsilon)


def rms_norm_pre_all_gather(x: jax.Array, *, compute_kernel_config: WormholeComputeKernelConfig | None = None,
                            fpu: bool = True, sfpu: bool = True) -> jax.Array:
    """Distributed RMSNorm, step 1: this device's sum of squares over its slice of the last dim, [..., 1] (bfloat16
    values with a config, as tt_transformers asks the op for them)."""
    if compute_kernel_config is None:
        xf = x.astype(jnp.float32)
        return jnp.sum(xf * xf, axis=-1, keepdims=True)
    k = _Kernel(compute_kernel_config, fpu, sfpu)
    return pack(k.reduce(k.pack(k.square(x)), 1.0), jnp.bfloat16, k.fp32).astype(jnp.float32)


def rms_norm_post_all_gather(x: jax.Array, stats: jax.Array, weight: jax.Array, *, epsilon: float, dim: int,
                             compute_kernel_config: WormholeComputeKernelConfig | None = None, fpu: bool = True,
                             sfpu: bool = True) -> jax.Array:
    """Distributed RMSNorm, step 3: normalize the local slice with the gathered statistics [..., n_devices]."""
    if compute_kernel_config is None:
        inv_rms = jax.lax.rsqrt(jnp.sum(stats, axis=-1, keepdims=True) / dim + epsilon)
        return (x.astype(jnp.float32) * inv_rms * weight.astype(jnp.float32)).astype(x.dtype)
    k = _Kernel(compute_kernel_config, fpu, sfpu)
    scaler = _truncate_bf16(np.float32(1.0) / np.float32(dim))
    mean = k.pack(k.reduce(stats.astype(jnp.bfloat16), scaler, from_float32=False))
    return k.normalize(x, mean, weight, epsilon)


def _truncate_bf16(v: np.float32) -> np.float32:
    """A float as the norm readers write it into a bfloat16 tile (bits >> 16: truncation)."""
    return (np.asarray(v, np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


class _Kernel:
    """The norm kernels' steps for one compute config; intermediates in float32 (FP32 Dst) or bfloat16."""

    def __init__(self, config: WormholeComputeKernelConfig, fpu: bool, sfpu: bool):
        self.config, self.fpu, self.sfpu, self.fp32 = config, fpu, sfpu, config.fp32_dest_acc_en

    def pack(self, dst):
        """Dst values written to an intermediate buffer."""
        return pack(dst, jnp.float32 if self.fp32 else jnp.bfloat16, self.fp32).astype(jnp.float32)

    def square(self, x):
        if not self.fpu:
            xf = x.astype(jnp.float32)
            return xf * xf
        return elwmul(x, x, self.config)

    def reduce(self, v, scaler, from_float32=None):
        from_float32 = self.fp32 if from_float32 is None else from_float32
        if not self.fpu:
            return jnp.sum(v * jnp.float32(scaler), axis=-1, keepdims=True)
        return reduce_rows(v, scaler, self.config, from_float32=from_float32)

    def sfpu_mul(self, dst, c: np.float32):
        """mul_unary_tile: an SFPMAD by an FP32 constant on Dst, stored back (truncated into a 16-bit Dst)."""
        if not self.sfpu:
            return dst * jnp.float32(c)
        return _sfpu.run_on_dst(dst, "mul_scalar", fp32=self.fp32, constant=c)

    def rsqrt(self, dst):
        if not self.sfpu:
            return jax.lax.rsqrt(dst)
        return _sfpu.run_on_dst(dst, "rsqrt", fp32=self.fp32, approx=self.config.math_approx_mode)

    def normalize(self, x, mean, weight, epsilon):
        eps = _truncate_bf16(np.float32(epsilon))
        if self.fpu:
            var = elwadd(mean, jnp.float32(eps), self.config, a_float32=self.fp32)
        else:
            var = mean + jnp.float32(eps)
        inv_rms = self.pack(self.rsqrt(var))
        if self.fpu:
            xn = self.pack(elwmul(x, inv_rms, self.config, b_float32=self.fp32))
            out = elwmul(xn, weight.astype(jnp.bfloat16), self.config, a_float32=self.fp32)
        else:
            xn = self.pack(x.astype(jnp.float32) * inv_rms)
            out = xn * weight.astype(jnp.bfloat16).astype(jnp.float32)
        return pack(out, x.dtype, self.fp32).astype(x.dtype)

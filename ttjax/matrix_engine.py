"""The Tensix matrix engine (FPU) of a Wormhole B0: a matmul as it computes it, selected by ttnn's
compute-kernel config (ttjax.matmul / ttjax.linear with compute_kernel_config=): math fidelity phases, 16-deep partial products, Dst in FP32 or BF16, and
the packer's rounding to the output format.

The functional model, with its sources (tenstorrent/tt-isa-documentation, WormholeB0/TensixTile/
TensixCoprocessor: MVMUL.md, the SrcAFidelityBits / SrcBFidelityBits helpers of ELWMUL.md and
MatrixUnit.md, SrcASrcB.md, Dst.md, Unpackers/ and Packers/FormatConversion.md; the loop order is
tenstorrent/tt-llk, tt_llk_wormhole_b0/llk_lib/llk_math_matmul.h):

1. Operands. in0 (the activations, x) is unpacked to SrcB and in1 (the weights) to SrcA
   (llk_math_matmul.h: "in0 - loaded to SrcB", "in1 - loaded to SrcA"); MVMUL computes
   Dst[8x16] += SrcB[8x16] @ SrcA[16x16], so C = x @ w with no transpose. bfloat16, bfloat8_b and
   bfloat4_b values reach Src exactly (the unpacker's BFP8ToBF16 is lossless). float32 is truncated,
   to TF32 (10 mantissa bits) when fp32_dest_acc_en, else to BF16 (UNPACR_Regular.md: DatumBits >> 13,
   >> 16); when the weights are not TF32 the engine reads both operands as BF16 (MVMUL.md: the SrcA
   format sets SrcAStyle, and SrcDecodeBF16 masks the three low TF32 bits). Denormals flush to zero.
2. Fidelity. The multipliers take 5 bits of a SrcA mantissa and 7 of a SrcB one per phase
   (ELWMUL.md): phase p uses SrcA's implicit 1 and top 4 mantissa bits when p & 1 == 0, else its next
   5 bits (x - (x & 0xfff83fff)); SrcB's implicit 1 and top 6 bits when p & 2 == 0, else its next 4.
   LoFi runs phase 0, HiFi2 phases 0-1, HiFi3 0-2, HiFi4 0-3 (tt-metal MathFidelity = 0, 2, 3, 4;
   cmath_common: the phase count is the value's low 3 bits). A split operand has at most 5 (SrcA) or
   7 (SrcB) significant bits, so every product is exact in float32.
3. Accumulation. Each MVMUL sums its 16 products in k order in float32 (MVMUL.md's `x += SrcB * SrcA`)
   and adds the sum to Dst. Per output element the LLK's order is: for each K tile (the compute
   kernel's loop), for each fidelity phase, the tile's two 16-deep halves (B0A0 .. B2A1 cover k 0-15,
   B1A2 .. B3A3 k 16-31, then ADDR_MOD_5 increments the phase). K is zero-padded to whole tiles.
4. Dst. FP32 when fp32_dest_acc_en: each add rounds to nearest even (the ISA model's float add; the
   hardware's rounding there is not published). Otherwise BF16, rounded at every add: to TF32, then to
   BF16, each to nearest with ties away from zero (a Tenstorrent maintainer on tt-metal #46101; the ISA
   says only "real hardware rounds"; this reproduces the hardware results reported in tt-metal #12923
   and #16448, which truncation does not). Results below 2^-126 flush to zero.
5. Packing. A float32 output from FP32 Dst is exact; a bfloat16 one rounds to nearest, ties away from
   zero, denormals to zero (Packers/FormatConversion.md; tt-metal #17018 shows a tie rounding up); from
   BF16 Dst it is Dst itself. bfloat8_b / bfloat4_b outputs round as the device's packer does: first to
   7 mantissa bits, then to the block's shared exponent, ties away each time (ttjax.blockfloat.DEVICE_PACKER,
   from tt-metal #17237, PR #14822 and #52155; the kernel flag bfp8_pack_precise, which skips the first
   rounding, is not set by ttnn's matmul, #52155).

math_approx_mode changes SFPU functions only, never the FPU matmul. packer_l1_acc accumulates partial
results of K blocks in L1 through the packer; without a matmul program config there are no K blocks
here, so it has no effect (the packer's L1 add is not published either). Not modelled: the Wormhole
HiFi4 + fp32_dest_acc_en fault of tt-metal #38306; NaN and infinity (the FPU treats exponent 255 as
a number).

`matmul_reference` in tests/fpu_reference.py implements the same model with loops over tiles, faces
and phases; this jitted form must equal it bit for bit. Where ttjax's native kernels are built (ttjax.native,
a jax.ffi custom call: ttjax/csrc/tensix_matmul.cc), the same arithmetic runs there, a few times faster and
compiling in a fraction of the time; the pure-JAX schedules below stay as its reference and fallback.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from mesh.errors import TTJaxError
import ttjax.native as native_lib

TILE = 32
FACE = 16


class MathFidelity(enum.Enum):
    """ttnn.MathFidelity, with tt-metal's values (the low 3 bits are the number of phases, LoFi being 1). Invalid is
    ttnn's "not set": a compute kernel config's default, which an op must not compute with."""

    LoFi = 0
    HiFi2 = 2
    HiFi3 = 3
    HiFi4 = 4
    Invalid = 0xFF

    @property
    def phases(self) -> tuple[int, ...]:
        if self is MathFidelity.Invalid:
            raise TTJaxError("math_fidelity is Invalid (WormholeComputeKernelConfig's default): give the op a config "
                             "with LoFi, HiFi2, HiFi3 or HiFi4.")
        return tuple(range(max(1, self.value)))


class ThrottleLevel(enum.Enum):
    """ttnn.ThrottleLevel: how much the math engine is slowed to limit di/dt; it changes no value."""

    NO_THROTTLE = 0
    LEVEL_1 = 1
    LEVEL_2 = 2
    LEVEL_3 = 3
    LEVEL_4 = 4
    LEVEL_5 = 5


@dataclass(frozen=True)
class WormholeComputeKernelConfig:
    """ttnn.WormholeComputeKernelConfig, with ttnn's defaults (math_fidelity unset: Invalid)."""

    math_fidelity: MathFidelity = MathFidelity.Invalid
    math_approx_mode: bool = True
    fp32_dest_acc_en: bool = False
    packer_l1_acc: bool = False
    dst_full_sync_en: bool = False
    throttle_level: ThrottleLevel = ThrottleLevel.NO_THROTTLE

    def __post_init__(self):
        if not isinstance(self.math_fidelity, MathFidelity):
            raise TTJaxError(f"math_fidelity {self.math_fidelity!r} is not a ttjax.MathFidelity (LoFi, HiFi2, HiFi3, HiFi4).")


def init_device_compute_kernel_config(arch: str = "wormhole_b0", device_kernel_config: WormholeComputeKernelConfig | None = None,
                                      *, math_fidelity: MathFidelity = MathFidelity.LoFi, math_approx_mode: bool = True,
                                      fp32_dest_acc_en: bool = False, packer_l1_acc: bool = False,
                                      dst_full_sync_en: bool = False,
                                      throttle_level: ThrottleLevel = ThrottleLevel.NO_THROTTLE) -> WormholeComputeKernelConfig:
    """ttnn.init_device_compute_kernel_config: the caller's config as it is, or, without one, the op's defaults
    (the keyword arguments). Ops call it with their own defaults, e.g. rms_norm with HiFi4, approx on, 16-bit Dst
    (ttjax.norm.RMS_NORM_DEFAULT_COMPUTE_KERNEL_CONFIG)."""
    if str(arch).lower().split(".")[-1] not in ("wormhole_b0", "wormhole"):
        raise TTJaxError(f"init_device_compute_kernel_config: arch {arch!r} is not modelled (ttjax models wormhole_b0).")
    if device_kernel_config is not None:
        return device_kernel_config
    return WormholeComputeKernelConfig(math_fidelity, math_approx_mode, fp32_dest_acc_en, packer_l1_acc, dst_full_sync_en,
                                       throttle_level)


def _bits(x):
    return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _float(u):
    return jax.lax.bitcast_convert_type(u, jnp.float32)


def _mask(x, mask: int):
    return _float(_bits(x) & jnp.uint32(mask))


def flush_denormals(x):
    """Values below 2^-126 in magnitude become zero (of the same sign), as every Tensix conversion does."""
    return jnp.where(_bits(x) & jnp.uint32(0x7F800000) == 0, _mask(x, 0x80000000), x)


def round_away(x, dropped_bits: int):
    """x with its low `dropped_bits` mantissa bits rounded off, to nearest with ties away from zero; exponent 255
    (the FPU's overflow pattern) is left as it is."""
    u = _bits(x)
    rounded = (u + jnp.uint32(1 << (dropped_bits - 1))) & jnp.uint32(~((1 << dropped_bits) - 1) & 0xFFFFFFFF)
    return jnp.where((u & jnp.uint32(0x7F800000)) == jnp.uint32(0x7F800000), x, _float(rounded))


def dst_bf16(x):
    """A value written to a BF16 Dst: rounded to TF32, then to BF16 (each to nearest, ties away), denormals flushed."""
    return flush_denormals(round_away(round_away(x, 13), 16))


def unpack(x, tf32: bool):
    """float32 data as the unpacker writes it to Src: truncated to TF32 or BF16, denormals flushed. bfloat16 and
    block-float values pass unchanged (they have at most 8 significant bits)."""
    return flush_denormals(_mask(x, 0xFFFFE000 if tf32 else 0xFFFF0000))


def src_a_bits(w, phase: int):
    """The part of a SrcA (weight) value the multipliers take in this phase: implicit 1 + 4 bits, or the next 5."""
    if phase & 1 == 0:
        return _mask(w, 0xFFF80000)
    return w - _mask(w, 0xFFF83FFF)


def src_b_bits(x, phase: int):
    """The part of a SrcB (activation) value the multipliers take in this phase: implicit 1 + 6 bits, or the next 4."""
    if phase & 2 == 0:
        return _mask(x, 0xFFFE0000)
    return x - _mask(x, 0xFFFE1FFF)


def tensix_matmul(x, w, config: WormholeComputeKernelConfig, *, weight_is_float32: bool = False, native: bool = True,
                  isa: str = "auto"):
    """x [R, K] @ w [K, N] -> Dst as float32 values [R, N] (FP32, or BF16 values), per the model above.

    x and w are float32 arrays holding the operand values; weight_is_float32 says w came as float32 (then TF32
    with fp32_dest_acc_en), not bfloat16 or a block float. native: use the compiled kernel (ttjax.native) where
    it is built (at ISA level `isa`, ttjax.native.ISA_LEVELS); the pure-JAX schedules below are its reference."""
    if native and native_lib.available():
        return tensix_matmul_stored(x, w.astype(jnp.float32), config, weight_is_float32=weight_is_float32, isa=isa)
    r, k = x.shape
    n = w.shape[1]
    tf32 = config.fp32_dest_acc_en and weight_is_float32
    # Both operands are read in SrcA's style: TF32 only when the weights are TF32 (MVMUL.md).
    x = unpack(x.astype(jnp.float32), tf32)
    w = unpack(w.astype(jnp.float32), tf32) if weight_is_float32 else flush_denormals(w.astype(jnp.float32))
    pad = -k % TILE
    x = jnp.pad(x, ((0, 0), (0, pad)))
    w = jnp.pad(w, ((0, pad), (0, 0)))
    tiles = (k + pad) // TILE
    phases = config.math_fidelity.phases
    dst_write = (lambda v: v) if config.fp32_dest_acc_en else dst_bf16
    if r <= GROUPED_MAX_ROWS and r * 2 * tiles * n <= GROUPED_MAX_ELEMENTS:
        return _accumulate_grouped(x, w, phases, tiles, dst_write)
    return _accumulate_by_tile(x, w, phases, tiles, dst_write)


def tensix_matmul_stored(x, weight, config: WormholeComputeKernelConfig, *, weight_is_float32: bool | None = None,
                         isa: str = "auto"):
    """tensix_matmul against a weight as it is stored: a float32 or bfloat16 array [K, N], or a 2-D
    ttjax.BlockFloatTensor. With the native kernels the weight is decoded inside the kernel, a row at a time, and
    never written out decoded; without them it is decoded here and the pure-JAX path runs."""
    from ttjax.blockfloat import BlockFloatTensor

    block = isinstance(weight, BlockFloatTensor)
    check_depth(x, weight)
    if weight_is_float32 is None:
        weight_is_float32 = not block and weight.dtype == jnp.float32
    weight = stored_matrix(weight)
    if not native_lib.available() or (block and weight.codes.ndim != 2):
        values = weight.decode(jnp.float32) if block else weight
        return tensix_matmul(x, values, config, weight_is_float32=weight_is_float32, native=False)
    tf32 = config.fp32_dest_acc_en and weight_is_float32
    x = unpack(x.astype(jnp.float32), tf32)
    depth = weight.codes.shape[-2] if block else x.shape[1] + (-x.shape[1] % TILE)
    x = jnp.pad(x, ((0, 0), (0, depth - x.shape[1])))  # the weight's own padding rows (block floats) or zeros
    return native_lib.tensix_matmul(x, weight, len(config.math_fidelity.phases), config.fp32_dest_acc_en, tf32=tf32, isa=isa)


def check_depth(x, weight):
    """x's K must be the weight's rows: a kernel would read missing rows as zeros."""
    k = weight.shape[-2] if len(weight.shape) >= 2 else None
    if k != x.shape[-1]:
        raise TTJaxError(f"matmul: x has K = {x.shape[-1]} but the weight {tuple(weight.shape)} has {k} rows; they must be equal.")


def stored_matrix(weight):
    """A block-float weight with a mesh's leading dims of size 1 as one 2-D matrix, as the kernels read it."""
    from ttjax.blockfloat import BlockFloatTensor

    if isinstance(weight, BlockFloatTensor) and weight.codes.ndim > 2 and all(d == 1 for d in weight.codes.shape[:-2]):
        return BlockFloatTensor(weight.codes.reshape(weight.codes.shape[-2:]), weight.exps.reshape(weight.exps.shape[-2:]),
                                weight.shape[-2:], weight.fmt)
    return weight


# Two schedules of the same arithmetic (bit-identical): a few rows (batch-1 decode) compute every MVMUL's 16-deep sum
# at once, then add them into Dst in order (measured 2-4x faster there); more rows walk the K tiles keeping only Dst
# (2.5x faster from 32 rows, and its memory is bounded).
GROUPED_MAX_ROWS = 8
GROUPED_MAX_ELEMENTS = 1 << 24


def _mvmul_sum(xb, wa):
    """Sum over the last axis of xb [..., R, 16] times the rows of wa [..., 16, N], in k order: [..., R, N]."""
    s = xb[..., :, 0, None] * wa[..., None, 0, :]
    for i in range(1, FACE):  # each product is exact; the adds round as the ISA model's float sum does
        s = s + xb[..., :, i, None] * wa[..., None, i, :]
    return s


def _accumulate_grouped(x, w, phases, tiles, dst_write):
    r, n = x.shape[0], w.shape[1]
    sums = []
    for p in phases:  # [tiles, 2, R, N]: every MVMUL's sum, per K tile and half
        xb = src_b_bits(x, p).reshape(r, 2 * tiles, FACE).transpose(1, 0, 2)
        wa = src_a_bits(w, p).reshape(2 * tiles, FACE, n)
        sums.append(_mvmul_sum(xb, wa).reshape(tiles, 2, r, n))

    def k_tile(dst, tile_sums):
        for p in range(len(phases)):
            for h in range(2):
                dst = dst_write(dst + tile_sums[p][h])
        return dst, None

    dst, _ = jax.lax.scan(k_tile, jnp.zeros((r, n), jnp.float32), tuple(sums))
    return dst


def _accumulate_by_tile(x, w, phases, tiles, dst_write):
    r, n = x.shape[0], w.shape[1]
    # [tiles, phase, half, R, 16] and [tiles, phase, half, 16, N]: each phase's operand bits per 16-deep half
    xs = jnp.stack([src_b_bits(x, p) for p in phases]).reshape(len(phases), r, tiles, 2, FACE).transpose(2, 0, 3, 1, 4)
    ws = jnp.stack([src_a_bits(w, p) for p in phases]).reshape(len(phases), tiles, 2, FACE, n).transpose(1, 0, 2, 3, 4)

    def k_tile(dst, operands):
        xt, wt = operands
        for p in range(len(phases)):
            for h in range(2):
                dst = dst_write(dst + _mvmul_sum(xt[p, h], wt[p, h]))
        return dst, None

    dst, _ = jax.lax.scan(k_tile, jnp.zeros((r, n), jnp.float32), (xs, ws))
    return dst


def pack(dst, dtype, fp32_dest_acc_en: bool):
    """Dst values written out in dtype (a jnp dtype, or ttjax.bfloat8_b / bfloat4_b)."""
    from ttjax.blockfloat import block_format, quantize

    if block_format(dtype) is not None:
        return quantize(dst, dtype, device=True)
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return dst
    if dtype == jnp.bfloat16:
        return (flush_denormals(round_away(dst, 16)) if fp32_dest_acc_en else dst).astype(jnp.bfloat16)
    raise TTJaxError(f"output dtype {dtype} is not one a matmul packs to: float32, bfloat16, bfloat8_b, bfloat4_b.")


# ---------------------------------------------------------------------------------------------------- element-wise
# The matrix engine's element-wise instructions, as ttnn's eltwise and bcast kernels and the norms' and SDPA's compute
# kernels drive them (ISA: ELWMUL.md, ELWADD.md, GAPOOL.md). The first operand is unpacked to SrcA, the second
# (the broadcast one) to SrcB. A float32 circular buffer is read into Src as TF32; a bfloat16 or block-float one as
# BF16. SrcA's format sets how both are read: TF32 when SrcA holds TF32, else BF16 (a TF32 value in SrcB then loses
# its three low mantissa bits).


def read_src(x, from_float32: bool):
    """Values of a circular buffer as the unpacker writes them to Src: float32 data truncated to TF32, bfloat16 and
    block-float data as they are; denormals flushed."""
    return unpack(jnp.asarray(x).astype(jnp.float32), tf32=True) if from_float32 else flush_denormals(
        jnp.asarray(x).astype(jnp.float32))


def _src_pair(a, b, a_float32: bool, b_float32: bool):
    a, b = read_src(a, a_float32), read_src(b, b_float32)
    if not a_float32:  # BF16 style: SrcB read as BF16 too
        b = _mask(b, 0xFFFF0000)
    return a, b


def elwmul(a, b, config: WormholeComputeKernelConfig, *, a_float32: bool = False, b_float32: bool = False):
    """ELWMUL: a * b element-wise (b broadcast as numpy broadcasts), as Dst values: each fidelity phase's product of
    SrcA's and SrcB's bits added into Dst (zeroed first), FP32 or rounded to BF16 at every add."""
    a, b = _src_pair(a, b, a_float32, b_float32)
    dst_write = (lambda v: v) if config.fp32_dest_acc_en else dst_bf16
    dst = jnp.zeros(jnp.broadcast_shapes(a.shape, b.shape), jnp.float32)
    for p in config.math_fidelity.phases:
        dst = dst_write(dst + src_a_bits(a, p) * src_b_bits(b, p))
    return dst


def elwadd(a, b, config: WormholeComputeKernelConfig, *, a_float32: bool = False, b_float32: bool = False,
           subtract: bool = False):
    """ELWADD / ELWSUB: a + b (or a - b) element-wise as Dst values; no fidelity phases (one pass), FP32 or rounded to
    BF16."""
    a, b = _src_pair(a, b, a_float32, b_float32)
    out = a - b if subtract else a + b
    return out if config.fp32_dest_acc_en else dst_bf16(out)


def reduce_rows(x, scaler, config: WormholeComputeKernelConfig, *, from_float32: bool):
    """reduce_tile<SUM/AVG, REDUCE_ROW>: for each row of x [..., W], the sum over W of x * scaler, on the matrix
    engine (GAPOOL: Dst += SrcB @ SrcA, the scaler row in SrcB, x in SrcA) at the config's fidelity and Dst, K in
    16-deep steps as tensix_matmul orders them. Returns [..., 1] Dst values."""
    lead, w = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, w).astype(jnp.float32).T  # [W, R]: SrcA
    ones = jnp.full((1, w), scaler, jnp.float32)  # SrcB
    out = tensix_matmul(ones, rows, config, weight_is_float32=from_float32)
    return out.reshape(*lead, 1)

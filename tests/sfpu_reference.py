"""A plain numpy transcription of the Wormhole SFPU, for the tests only: the reference ttjax.vector_unit and
ttjax.sfpu are held to bit for bit.

It is written apart from ttjax on purpose. The multiply-add follows fma_model_wh (tenstorrent/tt-isa-documentation,
Miscellaneous/FMA/fma.c) step by step in 64-bit integers, the product formed whole rather than from 12-bit halves;
the other instructions follow their ISA pages literally; the kernels (tt-llk's ckernel_sfpu_*.h for Wormhole, in the
ttnn 0.81.1 wheel) are spelled out instruction by instruction below, each with the line of C it stands for.
Everything is a numpy uint64 array of 32-bit lane values.
"""

from __future__ import annotations

import numpy as np

from ttjax.vector_unit import f32_bits, lut8_to_fp32, lut16_to_fp32, sfpi_lut_code

M32 = np.uint64(0xFFFFFFFF)


def U(v) -> np.ndarray:
    return np.asarray(v, dtype=np.uint64) & M32


def s32(v) -> np.ndarray:
    """uint64 lanes holding 32 bits, read as signed 32-bit integers (int64)."""
    v = U(v).astype(np.int64)
    return np.where(v >= 2**31, v - 2**32, v)


def fma_wh(x, y, z) -> np.ndarray:
    """fma_model_wh(x, y, z) = x * y + z, transcribed step by step; each C branch is a mask, each early `return` a
    lane that is done."""
    x, y, z = np.broadcast_arrays(U(x), U(y), U(z))
    out = np.zeros(x.shape, np.uint64)
    done = np.zeros(x.shape, bool)

    def ret(mask, val):
        nonlocal out, done
        mask = mask & ~done
        out = np.where(mask, val, out)
        done = done | mask

    def unpack(v):  # fp32_unpack_no_denorms
        e = ((v >> 23) & 255).astype(np.int64)
        m = (v & 0x7FFFFF) ^ 0x800000
        return e, np.where(e == 0, 0, m).astype(np.uint64)

    x_e, x_m = unpack(x)
    y_e, y_m = unpack(y)
    z_e, z_m = unpack(z)
    z_sign = z & 0x80000000
    p_sign = (x ^ y) & 0x80000000
    p_m = x_m * y_m  # < 2**48: exact in uint64
    p_e = x_e + y_e - 23 - 127
    p_m, z_m = p_m << 3, z_m << 3
    p_m = (p_m >> 23) | ((p_m & 0x7FFFFF) != 0).astype(np.uint64)
    p_e = p_e + 23
    special = (x_e == 255) | (y_e == 255) | (p_e >= 255) | (z_e == 255)
    c1 = (((x_e == 255) & ((x_m != 0x800000) | (y_m == 0))) | ((y_e == 255) & ((y_m != 0x800000) | (x_m == 0)))
          | ((z_e == 255) & (z_m == 0x4000000) & ((x_e == 255) | (y_e == 255) | (p_e >= 255)) & (z_sign != p_sign)))
    c2 = ~c1 & (z_e == 255) & (z_m != 0x4000000)
    nan_result = np.where(special & c1, p_sign | 0x7F800001, np.where(special & c2, z_sign | 0x7F800001, 0)).astype(np.uint64)
    ret(special & ~c1 & ~c2 & (z_e == 255), z)
    ret(special & ~c1 & ~c2, p_sign | 0x7F800000)
    p_e = np.where(special & (p_e > 255), 255, p_e)
    short = (p_m == 0) | (p_e < 0)
    ret(short & (nan_result == 0), np.where(z_m != 0, z, 0))
    p_m = np.where(short, 0, p_m).astype(np.uint64)
    p_e = np.where(short, 0, p_e)

    def semi_sticky_shift(var, s, width):
        s = np.maximum(s, 0)
        big = s >= width
        sh = np.minimum(s, width - 1).astype(np.uint64)
        orig = var
        var = var >> sh
        back = (var << sh) & np.uint64((1 << width) - 1 if width < 64 else 0xFFFFFFFFFFFFFFFF)
        var = np.where(var != 0, var | (back != orig).astype(np.uint64), var)
        return np.where(big, 0, var).astype(np.uint64)

    r_e = np.maximum(p_e, z_e)
    p_m = np.where(p_e < r_e, semi_sticky_shift(p_m, r_e - p_e, 64), p_m)
    z_m = np.where(z_e < r_e, semi_sticky_shift(z_m, r_e - z_e, 32), z_m)
    r_sign = np.where(p_m >= z_m, p_sign, z_sign)
    z_m = np.where(z_sign != r_sign, ~z_m, z_m)
    p_m = np.where(p_sign != r_sign, ~p_m, p_m)
    with np.errstate(over="ignore"):
        r_m = (z_m + p_m + (p_sign != z_sign).astype(np.uint64)) & M32
    ret(r_m == 0, nan_result)
    clz = 32 - np.frexp(r_m.astype(np.float64))[1].astype(np.int64)  # bit_length: frexp's exponent, exact below 2**53
    n = 5 - clz
    r_e = r_e + n
    ret(r_e >= 255, np.where(nan_result != 0, nan_result, r_sign | 0x7F800000))
    ret(r_e < 0, nan_result)
    left = np.clip(-n, 0, 63).astype(np.uint64)
    right = np.clip(n, 0, 63).astype(np.uint64)
    r_m = np.where(n <= 0, (r_m << left) & M32, (r_m >> right) | (r_m & 1))
    r = ((np.maximum(r_e, 0).astype(np.uint64) << 23) + ((r_m >> 3) & 0x7FFFFF)) & M32
    r = r + (((r_m & 7) + (r & 1)) > 4).astype(np.uint64)
    ret((r >> 23) == 0, nan_result)
    ret(np.ones(x.shape, bool), np.where(nan_result != 0, nan_result, r_sign) | r)
    return out


# ---------------------------------------------------------------------------------------------------- instructions
# Each is its ISA page's functional model on uint64 lanes holding 32 bits.
SIGN = 0x80000000


def MAD(a, b, c):  # SFPMAD / SFPMUL (c = 0) / SFPADD (a = 1.0) / SFPMULI / SFPADDI
    return fma_wh(a, b, c)


def STOCHRND_FP16B(x):  # SFPSTOCHRND FP32 -> FP16B, deterministic (PRNGBits = 0x400000)
    x = U(x)
    exp = (x >> 23) & 0xFF
    discarded = x & 0xFFFF
    rounded = (x - discarded + np.where(discarded >= (0x400000 >> 7), 0x10000, 0).astype(np.uint64)) & M32
    return np.where(exp == 0, 0, np.where(exp == 255, x & 0xFF800000, rounded)).astype(np.uint64)


def STOCHRND_INT(c, keep_sign, max_magnitude):  # SFPSTOCHRND FP32 -> (U)INT8/16, deterministic
    c = U(c)
    sign = (c & SIGN) if keep_sign else np.zeros_like(c)
    exp = ((c >> 23) & 0xFF).astype(np.int64) - 127
    mag0 = 0x800000 | (c & 0x7FFFFF)
    shifted = np.where(exp >= 0, mag0 << np.clip(exp, 0, 15).astype(np.uint64), mag0 >> np.clip(-exp, 0, 63).astype(np.uint64))
    mag = (shifted >> 23) + ((shifted & 0x7FFFFF) >= 0x400000).astype(np.uint64)
    mag = np.minimum(mag, max_magnitude)
    mag = np.where(exp < -1, 0, np.where(exp >= 16, max_magnitude, mag)).astype(np.uint64)
    sign = np.where((exp < -1) | (mag == 0), 0, sign).astype(np.uint64)
    return (sign + mag) & M32


def CAST(c):  # SFPCAST, sign-magnitude int32 -> FP32, round to nearest even
    c = U(c)
    sign, mag = c & SIGN, c & 0x7FFFFFFF
    lz = np.where(mag != 0, 32 - np.frexp(mag.astype(np.float64))[1], 157).astype(np.uint64)
    norm = (mag << (lz & 31)) & M32
    d = (sign + ((157 - lz) << 23) + (norm >> 8)) & M32
    return d + (((norm & 0x80) != 0) & ((norm & 0x17F) != 0)).astype(np.uint64)


def EXEXP(c, biased):  # SFPEXEXP
    e = (U(c) >> 23) & 0xFF
    return e if biased else (e - 127) & M32


def EXMAN(c, pad9):  # SFPEXMAN
    return (0 if pad9 else 1 << 23) + (U(c) & 0x7FFFFF)


def SETEXP_INT(c, b):  # SFPSETEXP, exponent from the low bits of an integer
    c = U(c)
    return (c & 0x807FFFFF) | ((U(b) & 0xFF) << 23)


def SETEXP_EXP(c, b):  # SFPSETEXP, ARG_EXPONENT
    return (U(c) & 0x807FFFFF) | (U(b) & 0x7F800000)


def SETMAN(c, b):  # SFPSETMAN from a register (VD's mantissa bits)
    return (U(c) & 0xFF800000) | (U(b) & 0x7FFFFF)


def SETSGN(c, b):  # SFPSETSGN, sign from a register
    return (U(c) & 0x7FFFFFFF) | (U(b) & SIGN)


def NEG(c):  # SFPMOV with NEGATE
    return U(c) ^ SIGN


def ABS_INT(x):  # SFPABS (INT)
    x = U(x)
    return np.where(x >= SIGN, (-x.astype(np.int64)) & 0xFFFFFFFF, x).astype(np.uint64)


def DIVP2_ADD(c, imm):  # SFPDIVP2 (ADD)
    c = U(c)
    e = (c >> 23) & 0xFF
    return np.where(e == 255, c, (c & 0x807FFFFF) | (((e + (imm & 0xFF)) & 0xFF) << 23)).astype(np.uint64)


def SHFT(v, amount):  # SFPSHFT, amount an int32 lane
    a = s32(amount)
    v = U(v)
    return np.where(a >= 0, (v << (a & 31).astype(np.uint64)) & M32, v >> ((-a) & 31).astype(np.uint64))


def IADD(a, b):  # SFPIADD
    return (U(a) + U(b)) & M32


def ISUB(a, b):
    return (U(a) - U(b)) & M32


def CC_LT0_INT(v):  # SFPIADD / SFPSETCC: the sign of a two's complement result
    return s32(v) < 0


def sign_mag_is_smaller(c, d):  # SFPSWAP's SignMagIsSmaller, literally
    def remap(v):
        return U(v) ^ (((s32(v) >> 30) & 0xFFFFFFFF).astype(np.uint64) >> 1)
    return s32(remap(c)) < s32(remap(d))


def SWAP_MIN(vc, vd):  # SFPSWAP VEC_MIN_MAX: VD gets the minimum (swap when VC is smaller)
    vc, vd = U(vc), U(vd)
    return np.where(sign_mag_is_smaller(vc, vd), vc, vd)


def SWAP_MAX(vc, vd):  # ... and VC the maximum
    vc, vd = U(vc), U(vd)
    return np.where(sign_mag_is_smaller(vc, vd), vd, vc)


def LUT(l3, coeff_pairs, retain):  # SFPLUT with (slope, intercept) FP32 pairs per segment
    l3 = U(l3)
    b = l3 & 0x7FFFFFFF
    seg = np.where(b < 0x3F800000, 0, np.where(b < 0x40000000, 1, 2))
    a = np.array([p[0] for p in coeff_pairs], np.uint64)[seg]
    c = np.array([p[1] for p in coeff_pairs], np.uint64)[seg]
    d = MAD(a, b, c)
    return (d & 0x7FFFFFFF) | (l3 & SIGN) if retain else d


def LUTFP32_6(l3, slopes, intercepts, cut):  # SFPLUTFP32, 6-entry FP16 table, sign not retained
    l3 = U(l3)
    b = l3 & 0x7FFFFFFF
    bf = b.astype(np.uint32).view(np.float32)
    seg = np.select([bf < 0.5, bf < 1.0, bf < 1.5, bf < 2.0, bf < cut], [0, 1, 2, 3, 4], 5)
    return MAD(np.array(slopes, np.uint64)[seg], b, np.array(intercepts, np.uint64)[seg])


def LOAD(dst, fp32):  # SFPLOAD of a float32 Dst value: FP32 exactly, or BF16's bits
    u = np.asarray(dst, np.float32).view(np.uint32).astype(np.uint64)
    return u if fp32 else u & 0xFFFF0000


def STORE(v, fp32):  # SFPSTORE: FP32 exactly, or ToBF16 (denormals to signed zero, truncation)
    v = U(v)
    if not fp32:
        v = np.where((v & 0x7F800000) == 0, v & SIGN, v) & 0xFFFF0000
    return v.astype(np.uint32).view(np.float32)


def K(literal):
    return np.uint64(f32_bits(literal))


# ---------------------------------------------------------------------------------------------------- kernels
# Each is the Wormhole kernel of ckernel_sfpu_<name>.h, one statement per line of C.
ONE_ = K("1.0")


def exp_21f_tti(v, clamp_negative=True):
    """_sfpu_exp_21f_bf16_tti_<SCALE_EN=false, fp32=false, CLAMP_NEGATIVE>: the registers its SFPLOADIs set."""
    LREG3 = np.uint64(0x42FE << 16)  # SFPLOADI FLOATB 0x42fe: 127.0
    LREG5 = np.uint64((0x33A8 << 16) | 0x5ADA)  # UPPER 0x33a8, LOWER 0x5ada
    LREG6 = np.uint64((0 << 31) | ((0xF + 112) << 23) | (0x002 << 13))  # FLOATA 0x3c02 (FP16: exp 15, man 2)
    LREG12, LREG13 = K("1.4426950216293334961f"), K("4.791750143340323e-15f")
    LREG2 = np.uint64(0x437F << 16)  # 255.0
    L0 = MAD(v, LREG12, LREG3)  # SFPMAD(LREG0, LREG12, LREG3, LREG0)
    if clamp_negative:
        L0 = SWAP_MAX(L0, np.uint64(0))  # SFPSWAP(LREG0 <- max(LREG0, LREG1 = 0))
    L0 = SWAP_MIN(LREG2, L0)  # SFPSWAP(0, LREG2, LREG0): LREG0 = min
    L1 = EXEXP(L0, biased=False)  # SFPEXEXP
    L0 = EXMAN(L0, pad9=False)  # SFPEXMAN (exman8)
    L0 = SHFT(L0, L1)  # SFPSHFT(LREG1 -> LREG0)
    L1 = EXMAN(L0, pad9=True)  # SFPEXMAN PAD9
    L1 = CAST(L1)  # SFPCAST INT32_TO_FP32_RNE
    L2 = MAD(L1, LREG13, LREG5)  # SFPMAD(LREG1, LREG13, LREG5, LREG2)
    L1 = MAD(L2, L1, LREG6)  # SFPMAD(LREG2, LREG1, LREG6, LREG1)
    L0 = SETEXP_EXP(L1, L0)  # SFPSETEXP(0, LREG1, LREG0, ARG_EXPONENT)
    return STOCHRND_FP16B(L0)  # SFP_STOCH_RND(RND_EVEN, FP32_TO_FP16B)


def exp_21f_sfpi(val):
    """_sfpu_exp_21f_bf16_<true> (sigmoid's): no rounding."""
    xlog2 = MAD(val, K("1.4426950216293334961f"), K("127.f"))  # val * ONE_LN2 + 127.f
    xlog2 = SWAP_MIN(SWAP_MAX(xlog2, K("0.0f")), K("255.0f"))  # clamp(xlog2, 0.0f, 255.0f) = min(max(.))
    exp = EXEXP(xlog2, biased=False)  # _float_to_int32_for_exp_21f_: exexp(val)
    man = EXMAN(xlog2, pad9=False)  # exman(val, ImplicitOne)
    z = SHFT(man, exp)  # shft(man, exp)
    exponential_part = EXEXP(z, biased=True)
    frac = CAST(EXMAN(z, pad9=True))  # convert<vFloat>(exman(z), Nearest)
    frac = MAD(frac, MAD(frac, K("4.791750143340323e-15f"), K("7.839635491371155e-08f")), K("1.0017248f"))  # eval
    return SETEXP_INT(frac, exponential_part)  # setexp(frac, exponential_part)


def exp_fp32_accurate(a):
    """_sfpu_exp_fp32_accurate_<unsafe=false>."""
    j = MAD(K("1.442695f"), a, 0)  # j = 1.442695f * a
    r = K("1.37805939e-3f")
    sm = STOCHRND_INT(j, True, 32767)  # convert<vSMag16>(j, Nearest)
    j = CAST(sm)  # convert<vFloat>(sm, Nearest)
    f = MAD(j, K("-6.93145752e-1f"), a)
    f = MAD(j, K("-1.42860677e-6f"), f)
    r = MAD(r, f, K("8.37312452e-3f"))
    r = MAD(r, f, K("4.16695364e-2f"))
    r = MAD(r, f, K("1.66664720e-1f"))
    r = MAD(r, f, K("4.99999851e-1f"))
    i = ABS_INT(sm)  # abs(as<vInt>(sm))
    y = MAD(r, f, ONE_)
    i = SETSGN(i, j)  # copysgn(as<vFloat>(i), j)
    r = MAD(y, f, ONE_)
    y = IADD(y, 0xFFFFFFFF)  # as<vInt>(y) + -1
    y = MAD(y, 0, 0)  # y *= 0.0f
    e = IADD(EXEXP(r, biased=True), i)
    overflow = ~CC_LT0_INT(ISUB(e, 1))  # v_if(e >= 1)
    y = np.where(overflow, MAD(ONE_, y, np.uint64(0x7F800000)), y)  # y += infinity
    inside = overflow & CC_LT0_INT(ISUB(e, 255))  # v_if(e < 255)
    return np.where(inside, SETEXP_INT(r, e), y)


def schraudolph(v, fp32):
    """The approximate exp's load-macro sequences with CLAMP_NEGATIVE (exp_init: LREG14 = -88.5, LREG12 = A,
    LREG13 = B - C; sequence 1 stores max(y, -88.5) back to Dst; sequence 0: MAD, STOCHRND to UINT16, SHFT by 15)."""
    A = (np.float32(256.0) * np.float32(1.4426950408889634)).view(np.uint32).astype(np.uint64)
    y = SWAP_MAX(v, K("-88.5f"))
    y = LOAD(STORE(y, fp32), fp32)
    i = STOCHRND_INT(MAD(A, y, K("32500.818359375f")), False, 65535)
    return SHFT(i, 15)


def exp(v, approx, fp32):  # calculate_exponential<APPROX, fp32, SCALE_EN=false, CLAMP_NEGATIVE=true>
    if approx:
        return schraudolph(v, fp32)
    return exp_fp32_accurate(v) if fp32 else exp_21f_tti(v)


def reciprocal_iter(x, max_iter, round_to_bf16, seed):
    """sfpu_reciprocal_iter<max_iter, round_to_bf16, normalized=false>; seed = (Prgm0, Prgm1, Prgm2)."""
    p0, p1, p2 = (K(s) for s in seed)
    negative_x = SETMAN(K("-1.0f"), x)  # copyman(-1.0f, in)
    y = MAD(p0, negative_x, p1)  # vConstFloatPrgm1 + vConstFloatPrgm0 * negative_x
    scale_bits = (~U(x)) & M32  # ~as<vUInt>(in)
    y = MAD(y, negative_x, p2)  # vConstFloatPrgm2 + y * negative_x
    scale = SETMAN(scale_bits, 0)  # setman(as<vFloat>(scale_bits), 0)
    t = MAD(negative_x, y, ONE_)  # 1.0f + negative_x * y
    scale = MAD(scale, K("0.5f"), 0)  # scale *= 0.5f
    y = MAD(y, t, y)  # y + y * t
    if max_iter > 1:
        t = MAD(negative_x, y, ONE_)
        y = MAD(y, t, y)
    if round_to_bf16:
        y = STOCHRND_FP16B(y)
    y = MAD(y, scale, 0)
    return SETSGN(y, x)  # copysgn(y, in)


DEFAULT_SEED = ("0.3232325017452239990234375f", "1.4545459747314453125f", "2.121212482452392578125f")
BF16_SEED = ("0.32133400440216064453125f", "1.4514148235321044921875f", "2.1200883388519287109375f")


def reciprocal(v, approx, fp32):  # _calculate_reciprocal_internal_ after recip_init<APPROX, fp32, !APPROX && !fp32>
    if approx:
        return reciprocal_iter(v, 0, False, DEFAULT_SEED)
    if fp32:
        return reciprocal_iter(v, 2, False, DEFAULT_SEED)
    return reciprocal_iter(v, 1, True, BF16_SEED)


def sqrt_body(x, approx, recip):
    """_calculate_sqrt_body_<APPROXIMATE, RECIPROCAL, FAST_APPROX=false> after sqrt_init<APPROXIMATE>."""
    x = U(x)
    prgm0 = np.uint64(0x5F0B3892 if approx else 0x5F1110A0)
    i = x >> 1  # as<vUInt>(x) >> 1
    y = ISUB(prgm0, i)  # vConstIntPrgm0 - i
    infinity_bits = np.uint64(0x7F800000)
    bits_without_sign = (x << 1) & M32
    if approx:
        c = MAD(x, y, 0)
        negative_y = NEG(y)
        t = MAD(negative_y, c, K("1.89099014875f"))
        if recip:
            infinity_minus_x_bits = ISUB(infinity_bits, x)
            inside = (infinity_minus_x_bits != 0) & (bits_without_sign != 0)
            y1 = MAD(y, t, 0)
            y1 = np.where((x & 0x80000000) != 0, np.uint64(0x7FC00000), y1)  # v_if(x < 0.0F): the sign bit
            y = np.where(inside, y1, infinity_minus_x_bits)
        else:
            y = c
            y = np.where(x != infinity_bits, MAD(y, t, 0), y)
    else:
        xy = MAD(x, y, 0)
        negative_y = NEG(y)
        c = MAD(negative_y, xy, 0)
        inner = MAD(ONE_, K("2.2533049f"), c)  # vConstFloatPrgm2 + c
        y = MAD(y, MAD(c, inner, K("2.2825186f")), 0)  # y * (Prgm1 + c * (...))
        xy = MAD(x, y, 0)
        negative_y = NEG(y)
        one_minus_xyy = MAD(negative_y, xy, ONE_)
        if recip:
            half_y = DIVP2_ADD(y, -1)  # addexp(y, -1)
            infinity_minus_x_bits = ISUB(infinity_bits, x)
            inside = (infinity_minus_x_bits != 0) & (bits_without_sign != 0)
            y1 = MAD(one_minus_xyy, half_y, y)
            y1 = np.where((x & 0x80000000) != 0, np.uint64(0x7FC00000), y1)
            y = np.where(inside, y1, infinity_minus_x_bits)
        else:
            half_xy = MAD(K("0.5f"), xy, 0)
            y = np.where(CC_LT0_INT(ISUB(x, infinity_bits)), MAD(one_minus_xyy, half_xy, xy), y)
    if not recip:
        y = np.where(bits_without_sign == 0, x, np.where((x & 0x80000000) != 0, np.uint64(0x7FC00000), y))
    return y


def sqrt(v, approx, fp32, recip=False):  # _calculate_sqrt_internal_
    y = sqrt_body(v, approx, recip)
    return y if fp32 else STOCHRND_FP16B(y)


def sigmoid_exact(x, fp32):  # _sfpu_sigmoid_<fp32>, after recip_init<false, false>
    e = exp_fp32_accurate(NEG(x)) if fp32 else exp_21f_sfpi(NEG(x))
    denominator = MAD(ONE_, ONE_, e)  # 1.0f + exp_neg_x
    return reciprocal_iter(denominator, 2 if fp32 else 1, False, DEFAULT_SEED)


def sigmoid(v, approx, fp32):  # calculate_sigmoid
    if approx:  # sigmoid_appx_init's vLut8si pairs, then lut(val, ...) + 0.5f
        table = [tuple(lut8_to_fp32(sfpi_lut_code(c, False)) for c in pair)
                 for pair in ((0.22656, 0.0), (0.26562, -0.04687), (0.0, 0.5))]
        return MAD(ONE_, LUT(v, table, retain=True), K("0.5f"))
    r = sigmoid_exact(v, fp32)
    return r if fp32 else STOCHRND_FP16B(r)


def silu(v, approx, fp32):  # calculate_silu (approx unused)
    r = MAD(v, sigmoid_exact(v, fp32), 0)
    return r if fp32 else STOCHRND_FP16B(r)


def _gt(x, c):  # `x > c`: SFPMAD x - c and its sign
    d = MAD(ONE_, x, K(c) ^ SIGN)
    return ((d & SIGN) == 0) & (d != 0)


def _ge(x, c):
    return (MAD(ONE_, x, K(c) ^ SIGN) & SIGN) == 0


def gelu(v, approx, fp32):  # calculate_gelu
    if approx:
        slopes = [lut16_to_fp32(sfpi_lut_code(s, True)) for s in (0.1928, 0.4939, 0.6188, 0.6099, 0.5402, 0.5)]
        icepts = [lut16_to_fp32(sfpi_lut_code(i, True)) for i in (-0.00010443, -0.1604, -0.2796, -0.2635, -0.1194, 0.0)]
        half_in = MAD(v, K("0.5f"), 0)
        return MAD(ONE_, half_in, LUTFP32_6(v, slopes, icepts, 3.0))
    if fp32:
        x = v
        result = MAD(ONE_, x, x ^ SIGN)  # x - x
        scaled = MAD(x, K("0.7071067811865475f"), 0)
        scaled = SWAP_MIN(K("10.0f"), scaled)  # min(scaled, 10.0f)
        x2 = MAD(scaled, scaled, 0)
        num = {1: "1.1283791065e+00f", 3: "2.1477432549e-01f", 5: "6.2133435160e-02f", 7: "5.6230435148e-03f",
               9: "6.1307044234e-04f", 11: "1.7678321456e-05f", 13: "2.7384647439e-08f", 15: "-2.8632063387e-10f"}
        den = {0: "1.0f", 2: "5.2367275953e-01f", 4: "1.2961706519e-01f", 6: "1.9642570987e-02f", 8: "1.9545555115e-03f",
               10: "1.3179056987e-04f", 12: "1.3156344494e-06f", 14: "-3.5153888689e-09f", 16: "-6.7350725691e-12f"}
        numer, denom = K(num[15]), K(den[16])  # parity Horner: NUM_TOP 15, DEN_TOP 16
        denom = MAD(denom, x2, K(den[14]))  # DEN_STEPS - NUM_STEPS = 1 extra step
        for k in range(1, 8):
            numer = MAD(numer, x2, K(num[15 - 2 * k]))
            denom = MAD(denom, x2, K(den[14 - 2 * k]))
        numer = MAD(numer, scaled, 0)  # numer * x
        erf_val = MAD(numer, reciprocal_iter(denom, 2, False, DEFAULT_SEED), 0)
        erf_val = SWAP_MIN(K("1.0f"), SWAP_MAX(erf_val, K("-1.0f")))  # clamp
        out = MAD(x, MAD(K("0.5f"), erf_val, K("0.5f")), 0)
        out = np.where(erf_val == K("-1.0f"), MAD(x, K("2.9802322387695313e-08f"), 0), out)
        return np.where(_gt(x, "-5.54259443f"), out, result)
    x = v  # calculate_gelu_piecewise
    x2 = MAD(x, x, 0)
    xlog2 = MAD(x2, K("-0.72134752044f"), K("127.0f"))
    z = SHFT(EXMAN(xlog2, pad9=False), EXEXP(xlog2, biased=False))
    exponential_part = EXEXP(z, biased=True)
    frac = CAST(EXMAN(z, pad9=True))
    frac = MAD(frac, MAD(frac, K("4.791750143340323e-15f"), K("7.839635491371155e-08f")), K("1.0017248f"))
    exp_val = SETEXP_INT(frac, exponential_part)
    hc = [K(c) for c in ("3.0369991064e-01f", "9.5413386822e-02f", "1.3809983619e-02f", "7.5950479368e-04f")]
    H = MAD(exp_val, MAD(x, MAD(x, MAD(x, hc[3], hc[2]), hc[1]), hc[0]), 0)
    Hs = MAD(ONE_, MAD(ONE_, H, K("0.375f")), K("0.375f") ^ SIGN)  # (H + 0.375) - 0.375
    result = MAD(x, Hs, 0)
    cc = [K(c) for c in ("3.9894227818e-01f", "-6.6361041488e-02f", "9.7720050615e-03f", "-1.0717806322e-03f",
                         "8.1812159812e-05f", "-3.8082057209e-06f", "7.9821413868e-08f")]
    odd = cc[-1]
    for c in reversed(cc[:-1]):
        odd = MAD(x2, odd, c)
    phi = MAD(x, odd, K("5.000000000e-01f"))
    result = np.where(_ge(x, "-3.125f"), MAD(x, phi, 0), result)
    result = np.where(_ge(x, "2.78125f"), x, result)
    result = np.where(_gt(x, "-5.54259443f"), result, 0)
    return STOCHRND_FP16B(result)


KERNELS = {"exp": exp, "reciprocal": reciprocal, "rsqrt": lambda v, a, f: sqrt(v, a, f, recip=True), "sqrt": sqrt,
           "sigmoid": sigmoid, "silu": silu, "gelu": gelu}


def to_dst(x, fp32):
    """The input (float32 values; bfloat16 ones have zero low bits) as Dst holds it."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    if not fp32 or np.asarray(x).dtype != np.float32:
        u = u & 0xFFFF0000
        u = np.where((u & 0x7F800000) == 0, 0, u)  # flushed, and -0 read as +0 on the way through SrcA
    return u.astype(np.uint32).view(np.float32)


def run(name, x, approx, fp32_dest_acc_en, src_is_bf16):
    """The kernel on x: Dst values after SFPSTORE, as float32."""
    x = np.asarray(x, np.float32)
    dst = to_dst(x if not src_is_bf16 else x, fp32_dest_acc_en and not src_is_bf16)
    return STORE(KERNELS[name](LOAD(dst, fp32_dest_acc_en), approx, fp32_dest_acc_en), fp32_dest_acc_en)


# ---------------------------------------------------------------------------------------------------- SDPA's steps
def schraudolph_scaled(v, fp32, scale):
    """The approximate exp with InputClamping::None and the scale folded into A (exp_init<true, scale, false>):
    MAD, STOCHRND to INT16 (sign kept), SHFT2 left 15, SETSGN from the integer."""
    A = (np.float32(256.0) * np.float32(1.4426950408889634) * np.float32(scale)).view(np.uint32).astype(np.uint64)
    i = STOCHRND_INT(MAD(A, v, K("32500.818359375f")), True, 32767)
    return SETSGN((i << 15) & M32, i)


def exp_21f_sfpi_rounded(v):
    """_sfpu_exp_21f_bf16_<false>: exp_21f_sfpi then SFPSTOCHRND to BF16."""
    return STOCHRND_FP16B(exp_21f_sfpi(v))


def exp_polynomial(v, fp32, scale_bf16):
    """ckernel_sfpu_sdpa.h calculate_exponential_polynomial<SCALE_EN, ..., degree 4 (FP32) / 2, SCALE_BF16>."""
    L2 = MAD(v, np.uint64(scale_bf16 << 16), 0)  # SFPMAD(LREG2, LREG0 = SFPLOADI bf16 scale, LCONST_0)
    L0 = MAD(L2, K("1.44269504088896340736f"), 0)
    L1 = CAST(STOCHRND_INT(L0, True, 127))  # FP32_TO_INT8, SFPCAST
    L0 = MAD(L1, K("-0.69314718055994530942f"), L2)
    if fp32:
        c = [K(x) for x in ("1.0000001510806179002040134468008959160576106495165f", "0.99996228117047652035114096488703457970402030983204f",
                            "0.49998365704615426417337683145647067790385638465486f", "0.16792157982882225102649214918047336097544632172075f",
                            "4.1959439860014343843000081999668024587178974865521e-2")]
        L2 = MAD(L0, c[4], c[3])
        L2 = MAD(L0, L2, c[2])
        L2 = MAD(L0, L2, c[1])
        L0 = MAD(L0, L2, c[0])
    else:
        c = [K(x) for x in ("0.999848792924395313327307061545061386175496934006f", "1.01508760098521056684783640695492761469306929535975f",
                            "0.50628367056745568861842335616023694454759126020461f")]
        L2 = MAD(L0, c[2], c[1])
        L0 = MAD(L0, L2, c[0])
    L1 = MAD(np.uint64(0x42FE0000), ONE_, L1)  # SFPADDI 127.0
    L2 = STOCHRND_INT(L1, False, 255)  # FP32_TO_UINT8
    L2 = SETEXP_INT(np.uint64(0), L2)  # SFPSETEXP(0, LCONST_0, LREG2)
    L2 = MAD(L0, L2, 0)
    L2 = np.where(((L1 << 1) & M32) == 0, 0, L2).astype(np.uint64)  # SFPSETCC(LREG1 == 0): LREG2 = 0
    return L2 if fp32 else STOCHRND_FP16B(L2)


def exp_accurate_scaled(v, fp32, scale_bf16):
    """_ckernel_sfpu_exp_accurate_<SCALE_EN=true>: times sFloat16b(scale), then the accurate exp or exp_21f rounded."""
    v = MAD(v, np.uint64(scale_bf16 << 16), 0)
    return exp_fp32_accurate(v) if fp32 else exp_21f_sfpi_rounded(v)


def on_dst(dst, fp32, fn):
    """An SFPU step over Dst values (float32): SFPLOAD, fn, SFPSTORE."""
    return STORE(fn(LOAD(dst, fp32)), fp32)

"""The Wormhole Tensix Vector Unit (SFPU): its instructions as bit-exact functions of 32-bit lanes.

Every value here is a uint32 array holding what an LReg lane holds: FP32 bits, a two's complement integer or a
sign-magnitude integer, as the instruction reads it. The functions follow the functional models of Tenstorrent's ISA
documentation for Wormhole B0 (tenstorrent/tt-isa-documentation, WormholeB0/TensixTile/TensixCoprocessor/SFP*.md)
and, for the multiply-add every FP32 instruction uses, its bit-perfect model of the Wormhole SFPMAD
(Miscellaneous/FMA/fma.c, fma_model_wh): the product kept to 24 + 3 bits with a sticky bit, one rounding to nearest
even, denormal inputs read as zero, denormal and negative-zero results flushed to +0, and the hardware's dropped
sticky bit when normalising shifts right by two.

ttjax.sfpu writes tt-llk's SFPU kernels with these; tests/sfpu_reference.py transcribes the same models again in
plain numpy (64-bit integers, the C code's own steps) as their reference.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

U32 = jnp.uint32


def u32(v) -> jax.Array:
    return jnp.asarray(v, U32)


def bits(x) -> jax.Array:
    """FP32 values (any float dtype) as their uint32 bit patterns."""
    return jax.lax.bitcast_convert_type(jnp.asarray(x).astype(jnp.float32), U32)


def value(u) -> jax.Array:
    """uint32 FP32 bit patterns as float32 values."""
    return jax.lax.bitcast_convert_type(u, jnp.float32)


def as_int(u) -> jax.Array:
    return jax.lax.bitcast_convert_type(u, jnp.int32)


def from_int(i) -> jax.Array:
    return jax.lax.bitcast_convert_type(jnp.asarray(i, jnp.int32), U32)


def f32_bits(literal: str | float) -> int:
    """The bits of a C float literal ("1.4426950216293334961f"): the decimal correctly rounded to FP32 (nearest,
    ties to even), as a C compiler rounds it. Rounding through a Python float first could round twice."""
    exact = Fraction(str(literal).rstrip("fF"))
    if exact == 0:
        return 0
    sign, mag = (0x80000000, -exact) if exact < 0 else (0, exact)
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if Fraction(2) ** e > mag:
        e -= 1
    e = max(e, -126)
    scaled = mag / Fraction(2) ** (e - 23)  # the significand in units of the last place
    q, r = divmod(scaled.numerator, scaled.denominator)
    if 2 * r > scaled.denominator or (2 * r == scaled.denominator and q & 1):
        q += 1
    if q >= 1 << 24:
        q, e = q >> 1, e + 1
    if q < 1 << 23:  # subnormal
        return sign | q
    return sign | ((e + 127) << 23) | (q & 0x7FFFFF)


def f32(literal: str | float) -> np.float32:
    return np.uint32(f32_bits(literal)).view(np.float32)


# Python ints past int32 would not pass as JAX's weakly typed scalars: the large masks are uint32 from the start.
ZERO = np.uint32(0)
ONE = np.uint32(0x3F800000)
INF = np.uint32(0x7F800000)
SIGN = np.uint32(0x80000000)
EXP_SIGN = np.uint32(0xFF800000)
NO_EXP = np.uint32(0x807FFFFF)
HIGH16 = np.uint32(0xFFFF0000)


def _semi_sticky_shift(v, s):
    """v >> s, with the lowest bit set if a set bit was shifted out (only when something is left); 0 from 32 on."""
    s = jnp.clip(s, 0, 32).astype(U32)
    t = jnp.where(s >= 32, u32(0), v >> jnp.minimum(s, 31))
    lost = jnp.where(s >= 32, False, (t << jnp.minimum(s, 31)) != v)
    return jnp.where((t != 0) & lost, t | 1, t)


def mad(a, b, c) -> jax.Array:
    """SFPMAD: a * b + c as the Wormhole computes it (fma_model_wh), lane by lane on FP32 bit patterns."""
    a, b, c = u32(a), u32(b), u32(c)
    a, b, c = jnp.broadcast_arrays(a, b, c)
    x_e, y_e, z_e = ((v >> 23) & 0xFF for v in (a, b, c))
    x_m, y_m, z_m0 = (jnp.where(e == 0, u32(0), (v & 0x7FFFFF) | 0x800000) for v, e in ((a, x_e), (b, y_e), (c, z_e)))
    z_sign = c & SIGN
    p_sign = (a ^ b) & SIGN
    # The 48-bit product x_m * y_m as (P >> 20, sticky of its low 20 bits), from 12-bit halves (no 64-bit integers).
    xh, xl, yh, yl = x_m >> 12, x_m & 0xFFF, y_m >> 12, y_m & 0xFFF
    hi, mid, lo = xh * yh, xh * yl + xl * yh, xl * yl
    r = ((mid & 0xFF) << 12) + lo
    p_m = (hi << 4) + (mid >> 8) + (r >> 20)
    p_m = p_m | ((r & 0xFFFFF) != 0).astype(U32)
    p_e = as_int(x_e) + as_int(y_e) - 127
    z_m = z_m0 << 3
    ze = as_int(z_e)

    special = (x_e == 255) | (y_e == 255) | (p_e >= 255) | (z_e == 255)
    product_inf = (x_e == 255) | (y_e == 255) | (p_e >= 255)
    nan_product = ((x_e == 255) & ((x_m != 0x800000) | (y_m == 0))) | ((y_e == 255) & ((y_m != 0x800000) | (x_m == 0))) | (
        (z_e == 255) & (z_m == 0x4000000) & product_inf & (z_sign != p_sign))
    nan_z = (z_e == 255) & (z_m != 0x4000000)
    nan_result = jnp.where(special & nan_product, p_sign | 0x7F800001,
                           jnp.where(special & ~nan_product & nan_z, z_sign | 0x7F800001, u32(0)))
    has_nan = nan_result != 0
    inf_z = special & ~has_nan & (z_e == 255)
    inf_p = special & ~has_nan & (z_e != 255)
    p_e = jnp.where(special & (p_e > 255), 255, p_e)

    underflow = (p_m == 0) | (p_e < 0)
    early_z = underflow & ~has_nan
    p_m = jnp.where(underflow, u32(0), p_m)
    p_e = jnp.where(underflow, 0, p_e)

    r_e = jnp.maximum(p_e, ze)
    p_m = _semi_sticky_shift(p_m, r_e - p_e)
    z_m = _semi_sticky_shift(z_m, r_e - ze)
    r_sign = jnp.where(p_m >= z_m, p_sign, z_sign)
    zz = jnp.where(z_sign != r_sign, ~z_m, z_m)
    pp = jnp.where(p_sign != r_sign, ~p_m, p_m)
    r_m = zz + pp + (p_sign != z_sign).astype(U32)
    zero_sum = r_m == 0
    n = 5 - jax.lax.clz(r_m).astype(jnp.int32)
    r_e = r_e + n
    overflow = r_e >= 255
    flushed = r_e < 0
    left = jnp.clip(-n, 0, 31).astype(U32)
    right = jnp.clip(n, 0, 31).astype(U32)
    r_m = jnp.where(n <= 0, r_m << left, (r_m >> right) | (r_m & 1))
    rr = (from_int(jnp.clip(r_e, 0, 255)) << 23) + ((r_m >> 3) & 0x7FFFFF)
    rr = rr + (((r_m & 7) + (rr & 1)) > 4).astype(U32)
    denormal = (rr >> 23) == 0
    out = jnp.where(has_nan, nan_result, r_sign) | rr
    out = jnp.where(denormal, nan_result, out)
    out = jnp.where(flushed, nan_result, out)
    out = jnp.where(overflow, jnp.where(has_nan, nan_result, r_sign | INF), out)
    out = jnp.where(zero_sum, nan_result, out)
    out = jnp.where(early_z, jnp.where(z_m0 != 0, c, u32(0)), out)
    out = jnp.where(inf_p, p_sign | INF, out)
    return jnp.where(inf_z, c, out)


def mul(a, b):
    """SFPMUL (SFPMAD with LCONST_0 as the addend)."""
    return mad(a, b, ZERO)


def add(a, c):
    """SFPADD (SFPMAD with LCONST_1 as the multiplier): a + c."""
    return mad(ONE, a, c)


def sub(a, c):
    """a - c as sfpi compiles it: an SFPMAD adding c with its sign flipped (a constant is negated at compile time)."""
    return mad(ONE, a, u32(c) ^ SIGN)


def round_bf16(x):
    """SFPSTOCHRND FP32 -> FP16B, round to nearest (sfpi's convert<vFloat16b>(x, RoundMode::Nearest)): 16 bits
    dropped, ties away from zero; denormals and -0 to +0, NaN to infinity."""
    x = u32(x)
    e = (x >> 23) & 0xFF
    dropped = x & 0xFFFF
    rounded = (x - dropped) + jnp.where(dropped >= 0x8000, u32(0x10000), u32(0))
    return jnp.where(e == 0, u32(0), jnp.where(e == 255, x & EXP_SIGN, rounded))


def round_int(x, *, keep_sign: bool, max_magnitude: int):
    """SFPSTOCHRND FP32 -> a bounded sign-magnitude integer, round to nearest (ties away from zero): INT8 (keep_sign,
    127), UINT8 (255), INT16 (keep_sign, 32767; sfpi's vSMag16), UINT16 (65535)."""
    x = u32(x)
    sign = (x & SIGN) if keep_sign else jnp.zeros_like(x)
    exp = as_int((x >> 23) & 0xFF) - 127
    man = (x & 0x7FFFFF) | 0x800000
    e = jnp.clip(exp, -1, 15)
    whole = man >> from_int(23 - e)
    half = (man >> from_int(22 - e)) & 1
    mag = jnp.minimum(whole + half, u32(max_magnitude))
    mag = jnp.where(exp < -1, u32(0), jnp.where(exp >= 16, u32(max_magnitude), mag))
    return jnp.where(mag == 0, u32(0), sign + mag)


def cast_sm32(c):
    """SFPCAST: a sign-magnitude int32 to FP32, rounding to nearest even."""
    c = u32(c)
    sign, mag = c & SIGN, c & 0x7FFFFFFF
    lz = jnp.where(mag != 0, jax.lax.clz(mag), u32(157))
    norm = mag << (lz & 31)
    d = sign + ((u32(157) - lz) << 23) + (norm >> 8)
    return d + (((norm & 0x80) != 0) & ((norm & 0x17F) != 0)).astype(U32)


def exexp(x, *, biased: bool = False):
    """SFPEXEXP: the exponent field, as a two's complement integer (minus 127 unless biased)."""
    e = (u32(x) >> 23) & 0xFF
    return e if biased else e - 127


def exman(x, *, implicit_one: bool):
    """SFPEXMAN: the 23 mantissa bits, with bit 23 set for the implicit one (PAD8) or clear (PAD9)."""
    m = u32(x) & 0x7FFFFF
    return m | 0x800000 if implicit_one else m


def setexp(x, exponent_int):
    """SFPSETEXP: x's sign and mantissa with the low 8 bits of an integer as the exponent field."""
    return (u32(x) & NO_EXP) | ((u32(exponent_int) & 0xFF) << 23)


def copyexp(x, y):
    """SFPSETEXP (ARG_EXPONENT): x's sign and mantissa with y's exponent field."""
    return (u32(x) & NO_EXP) | (u32(y) & 0x7F800000)


def setman(x, mantissa):
    """SFPSETMAN: x's sign and exponent with the low 23 bits of `mantissa`."""
    return (u32(x) & EXP_SIGN) | (u32(mantissa) & 0x7FFFFF)


def copysgn(x, s):
    """SFPSETSGN: x's exponent and mantissa with s's sign bit."""
    return (u32(x) & 0x7FFFFFFF) | (u32(s) & SIGN)


def setsgn(x, sign: int):
    return (u32(x) & 0x7FFFFFFF) | (u32(SIGN) if sign else u32(0))


def negate(x):
    """SFPMOV with NEGATE: the sign bit flipped (so -(+0) is -0)."""
    return u32(x) ^ SIGN


def abs_float(x):
    """SFPABS (FLOAT): the sign cleared, except on -NaN."""
    x = u32(x)
    return jnp.where(x >= EXP_SIGN, x, x & 0x7FFFFFFF)


def abs_int(x):
    """SFPABS (INT): two's complement negation of a negative integer (-2^31 stays)."""
    x = u32(x)
    return jnp.where(x >= SIGN, u32(0) - x, x)


def addexp(x, imm: int):
    """SFPDIVP2 (ADD): the exponent field plus imm, wrapping in 8 bits; infinity and NaN unchanged."""
    x = u32(x)
    e = (x >> 23) & 0xFF
    return jnp.where(e == 255, x, (x & NO_EXP) | (((e + (imm & 0xFF)) & 0xFF) << 23))


def shft(x, amount):
    """SFPSHFT: a logical shift left by amount (an int32 lane or an immediate), right when negative, modulo 32."""
    x = u32(x)
    amount = as_int(u32(amount)) if not isinstance(amount, int) else jnp.int32(amount)
    left = from_int(amount) & 31
    right = from_int(-amount) & 31
    return jnp.where(amount >= 0, x << left, x >> right)


def lt_int(a, b):
    """The flag of a < b for integers as sfpi compiles it: SFPIADD's subtraction (wrapping) and its sign."""
    return as_int(u32(a) - u32(b)) < 0


def sign_magnitude_key(x):
    """An int32 whose two's complement order is SFPSWAP's order of x (sign-magnitude; -NaN < -Inf < .. < -0 < +0)."""
    x = u32(x)
    return as_int(x ^ ((from_int(as_int(x) >> 30)) >> 1))


def vmin(a, b):
    """The minimum SFPSWAP (VEC_MIN_MAX) leaves: a unless b is smaller in its order."""
    a, b = u32(a), u32(b)
    return jnp.where(sign_magnitude_key(b) < sign_magnitude_key(a), b, a)


def vmax(a, b):
    a, b = u32(a), u32(b)
    return jnp.where(sign_magnitude_key(b) < sign_magnitude_key(a), a, b)


def clamp(x, lower, upper):
    """sfpi::clamp: min(max(x, lower), upper), each an SFPSWAP."""
    return vmin(vmax(x, lower), upper)


def is_negative(x):
    """SFPSETCC's LT0 test on FP32 (sfpi's `x < 0.0f`): the sign bit."""
    return (u32(x) & SIGN) != 0


def lut8_to_fp32(code: int) -> int:
    """SFPLUT's 8-bit coefficient format: sign, 3 bits of negated exponent, 4 of mantissa; 0xFF is zero."""
    if code == 0xFF:
        return 0
    return ((code >> 7) << 31) | ((127 - ((code >> 4) & 7)) << 23) | ((code & 0xF) << 19)


def lut16_to_fp32(code: int) -> int:
    """SFPLUTFP32's 16-bit coefficient format: FP16's fields, exponent 0 read as 2^-15 and 31 as zero."""
    sign, exp, man = code >> 15, (code >> 10) & 0x1F, code & 0x3FF
    return (sign << 31) | ((0 if exp == 0x1F else 112 + exp) << 23) | (man << 13)


def sfpi_lut_code(v: float, fp16: bool) -> int:
    """How sfpi encodes a float LUT coefficient (sLut::convert): mantissa rounded half up, then the 8- or 16-bit
    format, clamped (FP8: |v| < 2; FP16: |v| < 16)."""
    b = f32_bits(v)
    sign, exp, man = b >> 31, (b >> 23) & 0xFF, b & 0x7FFFFF
    man_bits = 10 if fp16 else 4
    man += 1 << (23 - man_bits - 1)
    if man >> 23:
        exp, man = exp + 1, 0
    man >>= 23 - man_bits
    if fp16:
        exp -= 128 - 16
        return (sign << 15) | (0x7C00 if exp < 0 else 0x7BFF if exp >= 31 else (exp << 10) | man)
    exp -= 128
    return (sign << 7) | (0xFF if exp + 7 < 0 else 0x0F if exp >= 0 else ((-1 - exp) << 4) | man)


def lut(x, table, *, retain_sign: bool):
    """SFPLUT: a * |x| + c with (a, c) the 8-bit pair of the segment |x| falls in (< 1, < 2, else), as an SFPMAD;
    with retain_sign the result takes x's sign. table: three (slope, intercept) FP32 bit pairs."""
    x = u32(x)
    b = x & 0x7FFFFFFF
    seg = jnp.where(b < 0x3F800000, 0, jnp.where(b < 0x40000000, 1, 2))
    a = jnp.asarray([t[0] for t in table], U32)[seg]
    c = jnp.asarray([t[1] for t in table], U32)[seg]
    d = mad(a, b, c)
    return (d & 0x7FFFFFFF) | (x & SIGN) if retain_sign else d


def lut6(x, slopes, intercepts, *, cut: float, retain_sign: bool):
    """SFPLUTFP32 with a 6-entry FP16 table: |x| picks one of six (slope, intercept) pairs at 0.5, 1, 1.5, 2 and `cut`
    (3 for TABLE1, 4 for TABLE2); a * |x| + c as an SFPMAD; with retain_sign the result takes x's sign."""
    x = u32(x)
    b = x & 0x7FFFFFFF
    bv = value(b)
    seg = jnp.searchsorted(jnp.asarray([0.5, 1.0, 1.5, 2.0, cut], jnp.float32), bv, side="right")
    a = jnp.asarray(slopes, U32)[seg]
    c = jnp.asarray(intercepts, U32)[seg]
    d = mad(a, b, c)
    return (d & 0x7FFFFFFF) | (x & SIGN) if retain_sign else d


def load_dst(x, fp32: bool):
    """Dst values (float32 arrays) as SFPLOAD reads them: FP32 Dst exactly, a 16-bit Dst as its BF16 bits."""
    u = bits(x)
    return u if fp32 else u & HIGH16


def store_dst(x, fp32: bool):
    """SFPSTORE: into an FP32 Dst exactly; into a BF16 Dst denormals flushed (keeping the sign) and the low 16 bits
    cut off (truncation, not rounding). Returns float32 values."""
    x = u32(x)
    if fp32:
        return value(x)
    x = jnp.where((x & 0x7F800000) == 0, x & SIGN, x)
    return value(x & HIGH16)

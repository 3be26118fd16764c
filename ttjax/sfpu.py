"""The other half of a Tensix: the SFPU functions tt-metal's kernels call, computed as a Wormhole computes them.

exp, reciprocal, rsqrt, sqrt, sigmoid, silu and gelu each take x, a bfloat16 or float32 array (the format the
values arrive in, Src), and return what the kernel leaves in Dst: bfloat16 values in a 16-bit Dst, float32 ones
with fp32_dest_acc_en. `approx` is the compute config's math_approx_mode (the kernels' APPROX). Packing Dst to an
output format is ttjax.matrix_engine.pack's, as for a matmul.

Each function is tt-llk's Wormhole kernel (tt_metal/hw/ckernels/wormhole_b0/metal/llk_api/llk_sfpu/ckernel_sfpu_*.h
in the ttnn 0.81.1 wheel), instruction by instruction on ttjax.vector_unit's bit-exact lanes: its constants, its
iteration counts, the SFPMAD model, the rounding (or the truncation) at each store. How a value reaches Dst:
bfloat16 exactly; float32 into an FP32 Dst exactly (unpacked to Dst), into a 16-bit Dst with denormals flushed and
the low 16 bits cut (the unpacker's FP32 -> BF16 conversion truncates). An SFPSTORE into a 16-bit Dst truncates
too, which is why most kernels round to BF16 themselves (SFPSTOCHRND, nearest, ties away from zero) just before.

Where the C source leaves the instruction sequence to sfpi's compiler, this module picks the reading the hardware's
measurements confirm (tests/test_sfpu_budget.py reproduces tt-llk's measured maximum error of every Wormhole
budget row of these functions, sfpu_accuracy_budget.yaml):
- `a * b + c` written in one expression is one SFPMAD (one rounding), and `a - c` is an SFPMAD adding -c;
- a comparison of a float with a constant (`x > c`) tests the sign of x - c computed by an SFPMAD;
- a float literal is loaded exactly (two SFPLOADIs); the hand-written TTI kernels load what their SFPLOADI
  immediates say (exp's bf16 path loads c0 = 1.0017248 as the FP16 immediate 0x3c02, i.e. 1.001953125).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import ttjax.native as native_lib
import ttjax.vector_unit as vu
from ttjax.vector_unit import f32_bits, mad, mul, add, sub, u32

def F(literal) -> np.uint32:
    """A C float literal's bits, as a uint32 (Python ints past int32 do not pass as JAX's weak scalars)."""
    return np.uint32(f32_bits(literal))

ONE, ZERO, HALF = F("1.0"), 0, F("0.5")
QUIET_NAN = 0x7FC00000
INF_BITS = 0x7F800000

# ---------------------------------------------------------------------------------------------------- exp
# _sfpu_exp_21f_bf16_tti_ (BF16 Dst, not approx): Moroz et al.'s exp_21f from hand-scheduled TTI instructions.
EXP21F_TTI = dict(one_ln2=F("1.4426950216293334961"), bias=F("127.0"), c2=F("4.791750143340323e-15"),
                  c1=np.uint32(0x33A85ADA), c0=F(1.0 + 2 / 1024))  # c1 from SFPLOADI UPPER/LOWER; c0 FP16 0x3c02
# _sfpu_exp_21f_bf16_ (sfpi, used inside sigmoid): the same algorithm with every constant a full FP32 literal.
EXP21F = dict(one_ln2=F("1.4426950216293334961"), bias=F("127.0"), c2=F("4.791750143340323e-15"),
              c1=F("7.839635491371155e-08"), c0=F("1.0017248"))
# _sfpu_exp_fp32_accurate_ (FP32 Dst, not approx): Juffa's Cody-Waite reduction and degree-6 polynomial.
EXP_ACCURATE = [F(c) for c in ("1.37805939e-3", "8.37312452e-3", "4.16695364e-2", "1.66664720e-1", "4.99999851e-1")]
# The approximate exp (Schraudolph): i = A * x + (B - C) to an integer, shifted into the exponent field.
SCHRAUDOLPH_A = np.float32(256.0) * np.float32(1.4426950408889634)  # 256 / ln 2 as the kernel's constexpr
SCHRAUDOLPH_B_MINUS_C = F("32500.818359375")
SCHRAUDOLPH_THRESHOLD = np.float32(-88.5)


def _float_to_int32_for_exp_21f(v):
    """The fixed-point form of v in [0, 256): its mantissa with the implicit one, shifted left by its exponent."""
    return vu.shft(vu.exman(v, implicit_one=True), vu.exexp(v))


def exp_21f(v, *, consts=EXP21F, clamp_negative: bool = True, round_to_bf16: bool = False):
    """exp_21f on LReg lanes: xlog2 = v / ln2 + 127, clamped to [0, 255] (the lower clamp is CLAMP_NEGATIVE's), its
    integer part becomes the exponent and a quadratic in its fraction the mantissa; rounded to BF16 when the kernel
    does (a 16-bit Dst)."""
    xlog2 = mad(v, consts["one_ln2"], consts["bias"])
    if clamp_negative:
        xlog2 = vu.vmax(xlog2, ZERO)
    xlog2 = vu.vmin(xlog2, F("255.0"))
    z = _float_to_int32_for_exp_21f(xlog2)
    frac = vu.cast_sm32(vu.exman(z, implicit_one=False))
    poly = mad(mad(frac, consts["c2"], consts["c1"]), frac, consts["c0"])
    y = vu.copyexp(poly, z)
    return vu.round_bf16(y) if round_to_bf16 else y


def exp_fp32_accurate(a):
    """_sfpu_exp_fp32_accurate_ on LReg lanes: j = round(a / ln2) as a 16-bit sign-magnitude integer, a two-part
    Cody-Waite reduction, a degree-6 polynomial, then 2^j folded into the exponent with its overflow (inf) and
    underflow (+0) handling."""
    j = mul(F("1.442695"), a)
    sm = vu.round_int(j, keep_sign=True, max_magnitude=32767)
    j = vu.cast_sm32(sm)
    f = mad(j, F("-6.93145752e-1"), a)
    f = mad(j, F("-1.42860677e-6"), f)
    r = u32(EXP_ACCURATE[0])
    for c in EXP_ACCURATE[1:]:
        r = mad(r, f, c)
    i = vu.copysgn(vu.abs_int(sm), j)  # sign-magnitude to two's complement
    y = mad(r, f, ONE)
    r = mad(y, f, ONE)
    y = mul(y - 1, ZERO)  # the underflow result: +0, or NaN from a NaN (the -1 turns the NaN pattern into inf)
    e = vu.exexp(r, biased=True) + i
    overflow = ~vu.lt_int(e, 1)
    y = jnp.where(overflow, add(y, INF_BITS), y)
    return jnp.where(overflow & vu.lt_int(e, 255), vu.setexp(r, e), y)


def exp_schraudolph(v, *, fp32: bool, scale: np.float32 = np.float32(1.0), clamp_negative: bool = True):
    """The approximate exp (exp_init / calculate_exponential with APPROXIMATION_MODE): i = round(A * scale * v +
    (B - C)); with CLAMP_NEGATIVE v is first raised to -88.5 / scale (and stored to Dst and read back) and i is an
    unsigned 16-bit integer shifted into place; without it i is a signed 16-bit one and the result takes its sign
    (negative below about -88; the SDPA kernels pack with ReLU)."""
    a = vu.f32_bits(SCHRAUDOLPH_A * np.float32(scale))
    if clamp_negative:
        threshold = vu.f32_bits(SCHRAUDOLPH_THRESHOLD / np.float32(scale))
        v = vu.load_dst(vu.store_dst(vu.vmax(v, threshold), fp32), fp32)
        i = vu.round_int(mad(a, v, SCHRAUDOLPH_B_MINUS_C), keep_sign=False, max_magnitude=65535)
        return vu.shft(i, 15)
    i = vu.round_int(mad(a, v, SCHRAUDOLPH_B_MINUS_C), keep_sign=True, max_magnitude=32767)
    return vu.copysgn(vu.shft(i, 15), i)


def exp_lanes(v, *, approx: bool, fp32: bool, scale_bf16: int | None = None, clamp_negative: bool = True):
    """calculate_exponential on LReg lanes (exp_tile): SCALE_EN multiplies by a BF16 immediate first (not in the
    approximate path, whose scale is folded into its constants: use exp_schraudolph)."""
    if approx:
        return exp_schraudolph(v, fp32=fp32, clamp_negative=clamp_negative)
    if scale_bf16 is not None:
        v = mul(scale_bf16 << 16, v)
    if fp32:
        return exp_fp32_accurate(v)
    return exp_21f(v, consts=EXP21F_TTI, clamp_negative=clamp_negative, round_to_bf16=True)


# ---------------------------------------------------------------------------------------------------- reciprocal
# sfpu_reciprocal_init: the quadratic seed k2 - k1 x + k0 x^2 on [1, 2). The BF16 one is fitted so one Newton step
# rounds every BF16 input correctly; the default minimax one serves one- and two-step reciprocals elsewhere.
RECIP_SEED = tuple(F(c) for c in ("0.3232325017452239990234375", "1.4545459747314453125", "2.121212482452392578125"))
RECIP_SEED_BF16 = tuple(F(c) for c in ("0.32133400440216064453125", "1.4514148235321044921875",
                                       "2.1200883388519287109375"))


def reciprocal_iter(x, *, iterations: int, round_to_bf16: bool = False, seed=RECIP_SEED):
    """sfpu_reciprocal_iter on LReg lanes: x's mantissa as -m in (-2, -1], the quadratic seed, one or two Newton
    steps, optionally rounded to BF16 before the power-of-two scale 2^(254 - exp) (built with SFPNOT), then x's sign.
    max_iter 0 computes what 1 does."""
    k0, k1, k2 = seed
    negative_x = vu.setman(F("-1.0"), x)
    y = mad(k0, negative_x, k1)
    scale_bits = ~u32(x)
    y = mad(y, negative_x, k2)
    scale = vu.setman(scale_bits, 0)
    t = mad(negative_x, y, ONE)
    scale = mul(scale, HALF)
    y = mad(y, t, y)
    if iterations > 1:
        t = mad(negative_x, y, ONE)
        y = mad(y, t, y)
    if round_to_bf16:
        y = vu.round_bf16(y)
    return vu.copysgn(mul(y, scale), x)


def reciprocal_lanes(v, *, approx: bool, fp32: bool):
    """calculate_reciprocal (recip_tile, whose init loads the BF16 seed for a precise 16-bit Dst)."""
    if approx:
        return reciprocal_iter(v, iterations=1)
    if fp32:
        return reciprocal_iter(v, iterations=2)
    return reciprocal_iter(v, iterations=1, round_to_bf16=True, seed=RECIP_SEED_BF16)


# ---------------------------------------------------------------------------------------------------- sqrt, rsqrt
# sqrt_init: the magic constant of the initial estimate and the refinement's coefficients (Kokosinski et al. 2024).
SQRT_CONSTS = {True: (0x5F0B3892, F("1.89099014875"), None), False: (0x5F1110A0, F("2.2825186"), F("2.2533049"))}


def sqrt_lanes(x, *, approx: bool, fp32: bool, reciprocal: bool, fast: bool = False):
    """_calculate_sqrt_internal_ (sqrt_tile / rsqrt_tile): a magic-constant estimate of 1/sqrt(x), one (approx) or
    two refinements; sqrt multiplies by x along the way. Edge cases as the kernel handles them unless FAST_APPROX:
    sqrt(+-0) = +-0, rsqrt(+-0) = +-inf, rsqrt(inf) = 0, negative x NaN (infinity once rounded to BF16)."""
    magic, c1, c2 = SQRT_CONSTS[approx]
    x = u32(x)
    y = u32(magic) - (x >> 1)
    nonzero = (x << 1) != 0
    inf_minus_x = u32(INF_BITS) - x
    finite_nonzero = (inf_minus_x != 0) & nonzero
    if approx:
        c = mul(x, y)
        t = mad(vu.negate(y), c, c1)
        if reciprocal:
            y1 = mul(y, t)
            if not fast:
                y1 = jnp.where(vu.is_negative(x), u32(QUIET_NAN), y1)
            y = jnp.where(finite_nonzero, y1, inf_minus_x)
        else:
            y = jnp.where(x != INF_BITS, mul(c, t), c)
    else:
        xy = mul(x, y)
        c = mul(vu.negate(y), xy)
        y = mul(y, mad(c, add(c2, c), c1))
        xy = mul(x, y)
        one_minus_xyy = mad(vu.negate(y), xy, ONE)
        if reciprocal:
            half_y = vu.addexp(y, -1)
            y1 = mad(one_minus_xyy, half_y, y)
            if not fast:
                y1 = jnp.where(vu.is_negative(x), u32(QUIET_NAN), y1)
            y = jnp.where(finite_nonzero, y1, inf_minus_x)
        else:
            half_xy = mul(HALF, xy)
            y = jnp.where(vu.lt_int(x, INF_BITS), mad(one_minus_xyy, half_xy, xy), y)
    if not fast and not reciprocal:
        y = jnp.where(~nonzero, x, jnp.where(vu.is_negative(x), u32(QUIET_NAN), y))
    return y if fp32 else vu.round_bf16(y)


# ---------------------------------------------------------------------------------------------------- sigmoid, silu
# sigmoid_appx_init: SFPLUT's three segments (|x| < 1, < 2, else) of sigmoid(x) - 1/2, in its 8-bit format.
SIGMOID_LUT = tuple((vu.lut8_to_fp32(vu.sfpi_lut_code(s, False)), vu.lut8_to_fp32(vu.sfpi_lut_code(i, False)))
                    for s, i in ((0.22656, 0.0), (0.26562, -0.04687), (0.0, 0.5)))


def sigmoid_exact_lanes(x, *, fp32: bool):
    """_sfpu_sigmoid_: 1 / (1 + exp(-x)) with the accurate exp (FP32 Dst) or the sfpi exp_21f unrounded (16-bit
    Dst), then a two- or one-step reciprocal with the default seed; not rounded here."""
    e = exp_fp32_accurate(vu.negate(x)) if fp32 else exp_21f(vu.negate(x), consts=EXP21F)
    return reciprocal_iter(add(ONE, e), iterations=2 if fp32 else 1)


def sigmoid_lanes(x, *, approx: bool, fp32: bool):
    """calculate_sigmoid: the exact path rounded to BF16 for a 16-bit Dst, or (approx) the SFPLUT line plus 1/2."""
    if approx:
        return add(vu.lut(x, SIGMOID_LUT, retain_sign=True), HALF)
    s = sigmoid_exact_lanes(x, fp32=fp32)
    return s if fp32 else vu.round_bf16(s)


def silu_lanes(x, *, fp32: bool):
    """calculate_silu: x * sigmoid(x) (the exact sigmoid whatever APPROX says), rounded to BF16 for a 16-bit Dst."""
    s = mul(x, sigmoid_exact_lanes(x, fp32=fp32))
    return s if fp32 else vu.round_bf16(s)


# ---------------------------------------------------------------------------------------------------- gelu
GELU_CDF_CORE = [F(c) for c in ("5.000000000e-01", "3.9894227818e-01", "-6.6361041488e-02", "9.7720050615e-03",
                                 "-1.0717806322e-03", "8.1812159812e-05", "-3.8082057209e-06", "7.9821413868e-08")]
GELU_HCORR = [F(c) for c in ("3.0369991064e-01", "9.5413386822e-02", "1.3809983619e-02", "7.5950479368e-04")]
GELU_ERF_NUM = {1: "1.1283791065e+00", 3: "2.1477432549e-01", 5: "6.2133435160e-02", 7: "5.6230435148e-03",
                9: "6.1307044234e-04", 11: "1.7678321456e-05", 13: "2.7384647439e-08", 15: "-2.8632063387e-10"}
GELU_ERF_DEN = {0: "1.0", 2: "5.2367275953e-01", 4: "1.2961706519e-01", 6: "1.9642570987e-02", 8: "1.9545555115e-03",
                10: "1.3179056987e-04", 12: "1.3156344494e-06", 14: "-3.5153888689e-09", 16: "-6.7350725691e-12"}
# gelu_init (APPROX): six segments of |x| (0.5, 1, 1.5, 2, 3) in SFPLUTFP32's FP16 format: gelu(x) - x / 2.
GELU_LUT_SLOPES = (0.1928, 0.4939, 0.6188, 0.6099, 0.5402, 0.5)
GELU_LUT_INTERCEPTS = (-0.00010443, -0.1604, -0.2796, -0.2635, -0.1194, 0.0)


def _poly(x, coeffs):
    """PolynomialEvaluator::eval(x, c0, c1, ...) = c0 + x * (c1 + x * (...)): one SFPMAD per coefficient."""
    acc = u32(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = mad(x, acc, c)
    return acc


def _greater(x, c):
    """sfpi's `x > c`: the sign of x - c (an SFPMAD, so a zero difference is +0)."""
    d = sub(x, c)
    return ~vu.is_negative(d) & (d != 0)


def _at_least(x, c):
    return ~vu.is_negative(sub(x, c))


def gelu_piecewise(x):
    """calculate_gelu_piecewise (16-bit Dst, not approx): x * Phi(x) from an odd degree-13 polynomial on
    [-3.125, 2.78125), x itself above, exp_21f times a cubic correction (snapped to a 2^-25 grid) down to -5.5426, 0
    below."""
    x2 = mul(x, x)
    xlog2 = mad(x2, F("-0.72134752044"), F("127.0"))
    z = _float_to_int32_for_exp_21f(xlog2)
    frac = vu.cast_sm32(vu.exman(z, implicit_one=False))
    frac = _poly(frac, [EXP21F["c0"], EXP21F["c1"], EXP21F["c2"]])
    exp_val = vu.setexp(frac, vu.exexp(z, biased=True))
    h = mul(exp_val, _poly(x, GELU_HCORR))
    hs = sub(add(h, F("0.375")), F("0.375"))
    tail = mul(x, hs)
    phi = mad(x, _poly(x2, GELU_CDF_CORE[1:]), GELU_CDF_CORE[0])
    core = mul(x, phi)
    result = jnp.where(_at_least(x, F("2.78125")), x, jnp.where(_at_least(x, F("-3.125")), core, tail))
    return jnp.where(_greater(x, F("-5.54259443")), result, u32(0))


def gelu_erf(x):
    """calculate_gelu, FP32 Dst, not approx: x * (1/2 + erf(x / sqrt 2) / 2) with erf a degree-15/16 rational (odd
    numerator, even denominator, Horner in x^2), clamped to [-1, 1]; 0 (or NaN) for x <= -5.5426; x * 2^-25 where
    erf rounded to -1."""
    result = sub(x, x)
    scaled = vu.vmin(mul(x, F("0.7071067811865475")), F("10.0"))
    x2 = mul(scaled, scaled)
    numer = u32(F(GELU_ERF_NUM[15]))
    denom = mad(u32(F(GELU_ERF_DEN[16])), x2, F(GELU_ERF_DEN[14]))
    for k in range(1, 8):
        numer = mad(numer, x2, F(GELU_ERF_NUM[15 - 2 * k]))
        denom = mad(denom, x2, F(GELU_ERF_DEN[14 - 2 * k]))
    numer = mul(numer, scaled)
    erf = vu.clamp(mul(numer, reciprocal_iter(denom, iterations=2)), F("-1.0"), F("1.0"))
    out = mul(x, mad(HALF, erf, HALF))
    out = jnp.where(erf == F("-1.0"), mul(x, F("2.9802322387695313e-08")), out)
    return jnp.where(_greater(x, F("-5.54259443")), out, result)


def gelu_lanes(x, *, approx: bool, fp32: bool):
    if approx:
        slopes = [vu.lut16_to_fp32(vu.sfpi_lut_code(s, True)) for s in GELU_LUT_SLOPES]
        intercepts = [vu.lut16_to_fp32(vu.sfpi_lut_code(i, True)) for i in GELU_LUT_INTERCEPTS]
        half_in = mul(x, HALF)
        return add(half_in, vu.lut6(x, slopes, intercepts, cut=3.0, retain_sign=False))
    if fp32:
        return gelu_erf(x)
    return vu.round_bf16(gelu_piecewise(x))


# ---------------------------------------------------------------------------------------------------- Dst in and out
def to_dst(x, fp32_dest_acc_en: bool):
    """x (bfloat16 or float32, as unpacked) as Dst holds it, float32 values. float32 into an FP32 Dst is unpacked
    straight to Dst, exactly. Otherwise it goes through SrcA: float32 truncated to BF16 (the unpacker's FP32 -> BF16
    conversion cuts the low 16 bits), denormals flushed, and -0 read as +0 (tt-llk's sweep records the unpack dropping
    the sign of -0.0: rsqrt(-0) answers +inf)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bfloat16 or not fp32_dest_acc_en:
        u = vu.bits(x) & vu.HIGH16
        return vu.value(jnp.where((u & 0x7F800000) == 0, vu.u32(0), u))
    return x.astype(jnp.float32)


def run_on_dst(dst, fn: str, *, fp32: bool, approx: bool = False, native: bool = True, isa: str = "auto", **params):
    """An SFPU function over Dst values (float32 arrays of what Dst holds): each loaded as SFPLOAD reads it, put
    through fn, stored as SFPSTORE writes it (truncated into a 16-bit Dst). fn: a public function's name (exp,
    reciprocal, rsqrt, sqrt, sigmoid, silu, gelu) or one of the kernels' own steps: mul_scalar (constant=),
    exp_schraudolph (scale=, clamp_negative=), exp_polynomial and exp_accurate_scaled (scale_bf16=, the BF16 scale's
    16 bits), reciprocal_iter (iterations=, round_to_bf16=). Through ttjax's native kernel where it is built (gelu and
    the approximate sigmoid stay in JAX), else the pure-JAX lanes, its reference."""
    dst = jnp.asarray(dst, jnp.float32)
    lanes_fn, native_args = _DST_FUNCTIONS[fn](fp32, approx, **params)
    if native and native_args is not None and native_lib.available():
        return native_lib.sfpu(dst, native_args[0], fp32=fp32, approx=approx, isa=isa, **native_args[1])
    return vu.store_dst(lanes_fn(vu.load_dst(dst, fp32)), fp32)


def _schraudolph_args(scale, clamp_negative):
    scale = np.float32(scale)
    a = vu.f32_bits(SCHRAUDOLPH_A * scale)
    threshold = vu.f32_bits(SCHRAUDOLPH_THRESHOLD / scale)
    return dict(p0=a, p1=threshold, flag=int(clamp_negative))


# name -> (fp32, approx, params) -> (lanes function, (native name, native params) or None)
_DST_FUNCTIONS = {
    "exp": lambda fp32, approx: (lambda v: exp_lanes(v, approx=approx, fp32=fp32), ("exp", {})),
    "reciprocal": lambda fp32, approx: (lambda v: reciprocal_lanes(v, approx=approx, fp32=fp32), ("reciprocal", {})),
    "rsqrt": lambda fp32, approx: (lambda v: sqrt_lanes(v, approx=approx, fp32=fp32, reciprocal=True), ("rsqrt", {})),
    "sqrt": lambda fp32, approx: (lambda v: sqrt_lanes(v, approx=approx, fp32=fp32, reciprocal=False), ("sqrt", {})),
    "sigmoid": lambda fp32, approx: (lambda v: sigmoid_lanes(v, approx=approx, fp32=fp32),
                                     None if approx else ("sigmoid", {})),
    "silu": lambda fp32, approx: (lambda v: silu_lanes(v, fp32=fp32), ("silu", {})),
    "gelu": lambda fp32, approx: (lambda v: gelu_lanes(v, approx=approx, fp32=fp32), None),
    "mul_scalar": lambda fp32, approx, constant: (
        lambda v: mul(v, np.asarray(constant, np.float32).view(np.uint32)),
        ("mul_scalar", dict(p0=int(np.asarray(constant, np.float32).view(np.uint32))))),
    "exp_schraudolph": lambda fp32, approx, scale=1.0, clamp_negative=True: (
        lambda v: exp_schraudolph(v, fp32=fp32, scale=np.float32(scale), clamp_negative=clamp_negative),
        ("exp_schraudolph", _schraudolph_args(scale, clamp_negative))),
    "exp_polynomial": lambda fp32, approx, scale_bf16: (
        lambda v: exp_polynomial(v, fp32=fp32, scale_bf16=scale_bf16), ("exp_polynomial", dict(p0=scale_bf16 << 16))),
    "exp_accurate_scaled": lambda fp32, approx, scale_bf16: (
        lambda v: exp_accurate_scaled(v, fp32=fp32, scale_bf16=scale_bf16),
        ("exp_accurate_scaled", dict(p0=scale_bf16 << 16))),
    "reciprocal_iter": lambda fp32, approx, iterations, round_to_bf16=False: (
        lambda v: reciprocal_iter(v, iterations=iterations, round_to_bf16=round_to_bf16),
        ("reciprocal_iter", dict(p0=int(round_to_bf16), flag=iterations))),
}


def _unary(name: str, x, approx: bool, fp32_dest_acc_en: bool, native: bool = True):
    out = run_on_dst(to_dst(x, fp32_dest_acc_en), name, fp32=fp32_dest_acc_en, approx=approx, native=native)
    return out if fp32_dest_acc_en else as_bfloat16(out)


def as_bfloat16(x):
    """float32 values whose low 16 bits are zero as bfloat16, bit for bit (a cast could canonicalise a NaN)."""
    return jax.lax.bitcast_convert_type((vu.bits(x) >> 16).astype(jnp.uint16), jnp.bfloat16)


def exp(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """exp_tile: e^x as the Wormhole's SFPU computes it; see the module docstring for x and the result."""
    return _unary("exp", x, approx, fp32_dest_acc_en, native)


def reciprocal(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """recip_tile: 1 / x."""
    return _unary("reciprocal", x, approx, fp32_dest_acc_en, native)


def rsqrt(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """rsqrt_tile (RsqrtMode::Default): 1 / sqrt(x)."""
    return _unary("rsqrt", x, approx, fp32_dest_acc_en, native)


def sqrt(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """sqrt_tile: sqrt(x)."""
    return _unary("sqrt", x, approx, fp32_dest_acc_en, native)


def sigmoid(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """sigmoid_tile: 1 / (1 + e^-x); approx is SFPLUT's three-segment line."""
    return _unary("sigmoid", x, approx, fp32_dest_acc_en, native)


def silu(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """silu_tile: x * sigmoid(x). The kernel has no approximate form: approx changes nothing."""
    return _unary("silu", x, False, fp32_dest_acc_en, native)


def gelu(x, *, approx: bool = False, fp32_dest_acc_en: bool = False, native: bool = True):
    """gelu_tile: x * Phi(x) (the erf form); approx is SFPLUTFP32's six-segment line plus x / 2."""
    return _unary("gelu", x, approx, fp32_dest_acc_en, native)


FUNCTIONS = {"exp": exp, "reciprocal": reciprocal, "rsqrt": rsqrt, "sqrt": sqrt, "sigmoid": sigmoid, "silu": silu,
             "gelu": gelu}


# ---------------------------------------------------------------------------------------------------- SDPA's own
# ckernel_sfpu_sdpa.h: the correction factor exp(scale * (m_old - m_new)) of flash attention's running sums.
EXP_POLY = {4: [F(c) for c in ("1.0000001510806179002040134468008959160576106495165", "0.99996228117047652035114096488703457970402030983204",
                               "0.49998365704615426417337683145647067790385638465486", "0.16792157982882225102649214918047336097544632172075",
                               "4.1959439860014343843000081999668024587178974865521e-2")],
            2: [F(c) for c in ("0.999848792924395313327307061545061386175496934006", "1.01508760098521056684783640695492761469306929535975",
                               "0.50628367056745568861842335616023694454759126020461")]}


def exp_polynomial(v, *, fp32: bool, scale_bf16: int | None):
    """calculate_exponential_polynomial: k = round(v / ln2) to an 8-bit integer, r = v - k ln2, a degree-4 (FP32 Dst)
    or degree-2 polynomial in r, times 2^k built by SFPSETEXP; 0 where k = -127; rounded to BF16 for a 16-bit Dst."""
    if scale_bf16 is not None:
        v = mul(v, np.uint32(scale_bf16 << 16))
    k = vu.round_int(mul(v, F("1.44269504088896340736")), keep_sign=True, max_magnitude=127)
    kf = vu.cast_sm32(k)
    r = mad(kf, F("-0.69314718055994530942"), v)
    coeffs = EXP_POLY[4 if fp32 else 2]
    p = u32(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = mad(r, p, c)
    biased = mad(F("127.0"), ONE, kf)  # SFPADDI 127.0
    two_k = vu.setexp(u32(0), vu.round_int(biased, keep_sign=False, max_magnitude=255))
    y = jnp.where((biased << 1) == 0, u32(0), mul(p, two_k))
    return y if fp32 else vu.round_bf16(y)


def exp_accurate_scaled(v, *, fp32: bool, scale_bf16: int):
    """_ckernel_sfpu_exp_accurate_<SCALE_EN>: v times a BF16 scale, then the accurate exp (FP32 Dst) or exp_21f
    rounded to BF16."""
    v = mul(v, np.uint32(scale_bf16 << 16))
    return exp_fp32_accurate(v) if fp32 else exp_21f(v, consts=EXP21F, round_to_bf16=True)

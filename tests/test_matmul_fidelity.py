"""The Tensix matmul emulation (ttjax.matrix_engine) against its plain numpy reference, bit for bit, and against
float math by the amounts the model predicts.

Every fidelity, both Dst modes, bfloat16 / bfloat8_b / bfloat4_b / float32 weights, and shapes with K
not a multiple of 32. Values span a few binades, with some tiny ones, so that truncated bits, Dst
rounding and denormal flushing all show.
"""

import functools

import jax
import numpy as np
import pytest

import ttjax
from tests.fpu_reference import matmul_reference
from ttjax import MathFidelity, WormholeComputeKernelConfig
from ttjax.blockfloat import quantize
from ttjax.matrix_engine import round_away, tensix_matmul, tensix_matmul_stored

FIDELITIES = [MathFidelity.LoFi, MathFidelity.HiFi2, MathFidelity.HiFi3, MathFidelity.HiFi4]
# Rows 3 and 7 take the pure-JAX grouped schedule, 32 and 19 the per-tile one; the native kernels take one row as a
# GEMV over wide strips (1 x 200: partial vectors and a tile of padding rows) and more rows in 64-column strips, so
# 19 x 70 has partial strips on both sides.
SHAPES = [(3, 40, 24), (32, 64, 32), (7, 96, 50), (19, 72, 70), (1, 96, 200), (1, 40, 24)]
ISA_LEVELS = ["portable", "avx2", "avx512", "avx512vbmi"]
PATHS = ["jax"] + [f"native-{isa}" for isa in ISA_LEVELS]


def native_path(path):
    """(native, isa) for a path name; fails where the kernels are not built, skips an ISA level this CPU lacks."""
    if path == "jax":
        return False, "auto"
    if not ttjax.native.available():
        pytest.fail("the native kernels are not built: run `make setup` (ttjax.native.build() prints the compiler's error)")
    isa = path.removeprefix("native-").removeprefix("native")
    if isa and isa not in ttjax.native.isa_levels():
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    return True, isa or "auto"


def operands(shape, weight_format, seed):
    m, k, n = shape
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * np.exp2(rng.integers(-4, 5, (m, k)))).astype(np.float32)
    x = np.asarray(jax.numpy.asarray(x, jax.numpy.bfloat16), np.float32)  # activations arrive in bfloat16
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    w[0, 0], w[1, 1] = 1e-39, -3e-39  # denormals: flushed
    if weight_format == "float32":
        return x, w
    if weight_format == "bfloat16":
        return x, np.asarray(jax.numpy.asarray(w, jax.numpy.bfloat16), np.float32)
    return x, np.asarray(ttjax.typecast(w, getattr(ttjax, weight_format)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("weight_format", ["bfloat16", "bfloat8_b", "bfloat4_b", "float32"])
@pytest.mark.parametrize("fp32_dest_acc_en", [False, True], ids=["bf16-dst", "fp32-dst"])
@pytest.mark.parametrize("fidelity", FIDELITIES, ids=lambda f: f.name)
def test_jitted_path_equals_the_reference_bit_for_bit(fidelity, fp32_dest_acc_en, weight_format, path):
    """The pure-JAX schedules and the native kernels (jax.ffi) at every ISA level equal the numpy reference."""
    config = WormholeComputeKernelConfig(math_fidelity=fidelity, fp32_dest_acc_en=fp32_dest_acc_en)
    f32 = weight_format == "float32"
    native, isa = native_path(path)
    if True:
        run = jax.jit(lambda x, w: tensix_matmul(x, w, config, weight_is_float32=f32, native=native, isa=isa))
        for i, shape in enumerate(SHAPES):
            x, w = operands(shape, weight_format, seed=i)
            ours = np.asarray(run(x, w))
            ref = reference(shape, weight_format, i, fidelity.name, fp32_dest_acc_en)
            np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32), err_msg=f"{path}, shape {shape}")


@functools.cache
def reference(shape, weight_format, seed, fidelity, fp32_dest_acc_en):
    x, w = operands(shape, weight_format, seed)
    return matmul_reference(x, w, fidelity, fp32_dest_acc_en, weight_is_float32=weight_format == "float32")


def test_lofi_is_float_math_on_the_truncated_operands():
    """LoFi multiplies 7 bits of each activation by 5 bits of each weight: with an FP32 Dst the result is the
    float64 product of the truncated operands up to float32 rounding, and differs from the exact product by
    what the dropped bits carry."""
    x, w = operands((16, 128, 64), "bfloat16", seed=7)
    lofi = np.asarray(tensix_matmul(x, w, WormholeComputeKernelConfig(MathFidelity.LoFi, fp32_dest_acc_en=True)))

    def truncate(a, bits):
        step = np.exp2(np.floor(np.log2(np.abs(np.where(a == 0, 1, a)))) - (bits - 1))
        return np.where(a == 0, 0, np.sign(a) * np.floor(np.abs(a) / step) * step)

    w = np.where(np.abs(w) < 2.0**-126, 0, w)
    predicted = truncate(x.astype(np.float64), 7) @ truncate(w.astype(np.float64), 5)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64)
    assert np.all(np.abs(lofi - predicted) <= 128 * 2.0**-24 * scale)  # float32 accumulation only
    dropped = np.abs(lofi - exact)
    assert np.all(dropped <= (2.0**-6 + 2.0**-4) * scale)  # bounded by the bits cut from both operands
    assert np.median(dropped / scale) > 2.0**-10  # and the truncation is really there


def test_hifi4_with_fp32_dst_is_float_math_on_bfloat16_operands():
    """All four phases consume every bit of a bfloat16 activation and weight: only float32 rounding remains."""
    x, w = operands((16, 160, 48), "bfloat16", seed=8)
    w = np.where(np.abs(w) < 2.0**-126, 0, w)
    hifi4 = np.asarray(tensix_matmul(x, w, WormholeComputeKernelConfig(MathFidelity.HiFi4, fp32_dest_acc_en=True)))
    exact = x.astype(np.float64) @ w.astype(np.float64)
    scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64)
    assert np.all(np.abs(hifi4 - exact) <= 160 * 2.0**-24 * scale)
    assert np.max(np.abs(hifi4 - exact) / scale) < 2.0**-19


def test_bf16_dst_reproduces_reported_hardware_results():
    """Products the hardware was measured on (tt-metal #12923 and #16448): Dst BF16, rounding at every phase."""
    cases = [
        (7.96875, 1.3125, MathFidelity.HiFi2, 10.4375),  # in0 (SrcB, 7 bits a phase) = 7.96875
        (7.96875, 1.3125, MathFidelity.HiFi4, 10.5),
        (-3.640625, 0.298828125, MathFidelity.HiFi4, -1.09375),
        (-3.640625, 0.30078125, MathFidelity.HiFi4, -1.1015625),
    ]
    for a, b, fidelity, expected in cases:
        x, w = np.full((1, 1), a, np.float32), np.full((1, 1), b, np.float32)
        out = tensix_matmul(x, w, WormholeComputeKernelConfig(fidelity, fp32_dest_acc_en=False))
        assert float(out[0, 0]) == expected, (a, b, fidelity)


def test_config_errors():
    with pytest.raises(ttjax.TTJaxError, match="math_fidelity 'HiFi2' is not a ttjax.MathFidelity"):
        WormholeComputeKernelConfig(math_fidelity="HiFi2")


def test_linear_takes_ttnn_arguments():
    """ttjax.linear(x, w, compute_kernel_config=, dtype=) as ttnn.linear: the emulation for a config, packed to dtype;
    batch dims kept; a block-float weight decoded in the program."""
    x, w = operands((6, 64, 32), "bfloat8_b", seed=9)
    config = WormholeComputeKernelConfig(MathFidelity.HiFi2, fp32_dest_acc_en=True)
    x3 = jax.numpy.asarray(x.reshape(2, 3, 64), jax.numpy.bfloat16)
    packed = ttjax.as_tensor(w, ttjax.bfloat8_b)
    out = ttjax.linear(x3, packed, compute_kernel_config=config)
    ref = matmul_reference(x, w, "HiFi2", True)
    assert out.dtype == jax.numpy.bfloat16 and out.shape == (2, 3, 32)
    # fp32 Dst packed to bfloat16: round to nearest, ties away
    expected = np.asarray(jax.numpy.asarray(round_away(jax.numpy.asarray(ref), 16)), np.float32)
    np.testing.assert_array_equal(np.asarray(out, np.float32).reshape(6, 32), expected)
    as_bfp8 = ttjax.linear(x3, packed, compute_kernel_config=config, dtype=ttjax.bfloat8_b)
    device_bfp8 = np.asarray(quantize(ref, ttjax.bfloat8_b, device=True))  # the device packer's rounding
    np.testing.assert_array_equal(np.asarray(as_bfp8, np.float32).reshape(6, 32), device_bfp8)
    exact = ttjax.linear(jax.numpy.asarray(x), jax.numpy.asarray(w))  # no config: float math
    np.testing.assert_allclose(np.asarray(exact), x @ w, rtol=1e-5, atol=1e-6)


def test_device_packer_rounds_ties_away_and_twice():
    """An op's bfloat8_b output on the device: each value first to 7 mantissa bits, then to the block's shared
    exponent, ties away both times (tt-metal #17237, PR #14822); the host packer rounds once, ties to even."""
    block = np.ones(16, np.float32)  # shared exponent 0: bfloat8_b keeps 6 fraction bits, a step of 2^-6
    block[1] = 1 + 2.0**-7  # a tie at the second rounding: away -> 1 + 2^-6 (host: even -> 1)
    block[2] = 1 + 2.0**-7 - 2.0**-9  # below the tie, but the first rounding (to 2^-7) makes it one: 1 + 2^-6 (host: 1)
    block[3] = 1 + 2.0**-8 - 2.0**-10  # below a tie at both roundings: 1 on both
    block[4] = -(1 + 2.0**-7)  # ties away from zero keeps the sign
    host, device = np.asarray(quantize(block, ttjax.bfloat8_b)), np.asarray(quantize(block, ttjax.bfloat8_b, device=True))
    np.testing.assert_array_equal(host[:5], [1, 1, 1, 1, -1])
    np.testing.assert_array_equal(device[:5], [1, 1 + 2.0**-6, 1 + 2.0**-6, 1, -(1 + 2.0**-6)])
    np.testing.assert_array_equal(np.asarray(quantize(jax.numpy.asarray(block), ttjax.bfloat8_b, device=True)), device)


def operands_like(w, weight_format):
    """w rounded to weight_format's values (as operands() rounds)."""
    if weight_format == "float32":
        return w
    if weight_format == "bfloat16":
        return np.asarray(jax.numpy.asarray(w, jax.numpy.bfloat16), np.float32)
    return np.asarray(ttjax.typecast(w, getattr(ttjax, weight_format)))


@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("weight_format", ["bfloat16", "bfloat8_b", "bfloat4_b", "float32"])
def test_native_kernel_reads_weights_as_stored(weight_format, isa):
    """The native kernels decode bfloat16 and block-float storage (codes and exponents, tile-padded) themselves; the
    result equals the reference on the decoded values, for K and N not multiples of 32, a mesh's leading dim, one
    row (the GEMV) and several."""
    native_path(f"native-{isa}")
    x, w = operands((5, 72, 70), weight_format, seed=11)
    w[2, :16] = np.float32(1e-38) * np.arange(16)  # a block whose shared exponent sits near the bottom of the range
    w[40, 16:32] = np.float32(2.0**127) * np.linspace(-1, 1, 16)  # one near the top of it
    w = np.asarray(operands_like(w, weight_format))
    if weight_format in ("bfloat8_b", "bfloat4_b"):
        stored = ttjax.as_tensor(w, getattr(ttjax, weight_format))
        lead = ttjax.BlockFloatTensor(stored.codes[None], stored.exps[None], stored.shape, stored.fmt)
    else:
        stored = jax.numpy.asarray(w, jax.numpy.dtype(weight_format))
        lead = None
    for fidelity, fp32 in ((MathFidelity.HiFi2, False), (MathFidelity.HiFi4, True), (MathFidelity.LoFi, False)):
        config = WormholeComputeKernelConfig(fidelity, fp32_dest_acc_en=fp32)
        ref = matmul_reference(x, w, fidelity.name, fp32, weight_is_float32=weight_format == "float32")
        for weight in (stored, lead) if lead is not None else (stored,):
            run = jax.jit(lambda x, w: tensix_matmul_stored(x, w, config, isa=isa))
            for rows in (slice(None), slice(2, 3)):
                ours = np.asarray(run(x[rows], weight))
                np.testing.assert_array_equal(ours.view(np.uint32), ref[rows].view(np.uint32), err_msg=f"{fidelity.name}")


@pytest.mark.parametrize("isa", ["avx512", "avx512vbmi"])
@pytest.mark.parametrize("weight_format", ["bfloat8_b", "bfloat4_b"])
def test_block_gemv_is_bit_exact(weight_format, isa):
    """Batch-1 decode's block-float GEMV (ttjax/csrc/tensix_gemv_block.inc: the block scales moved onto the
    activations, fused multiply-adds where a tile's exponents keep every product normal, bfloat4_b's odd phases as
    the signed zeros they add) equals the reference bit for bit: whole tiles of wide strips, and activations and
    blocks that send tiles back to the general kernel or test its zero rules (tiny and huge activations, zeros,
    negative zeros, half-tiles all negative, a block near the top of the range); and for a few rows at once (a short
    prompt's prefill), plain ones and those among them."""
    native_path(f"native-{isa}")
    rng = np.random.default_rng(7)
    k, n = 192, 1024 + 64 + 32  # one strip of 1024 columns in a single row's GEMV, and narrower ones
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    w[130, 64:80] = np.float32(2.0**100) * np.linspace(-1, 1, 16)  # a product past float32's range: not that path
    w = np.asarray(operands_like(w, weight_format))
    stored = ttjax.as_tensor(w, getattr(ttjax, weight_format))
    x = np.asarray(jax.numpy.asarray(rng.standard_normal((6, k)).astype(np.float32), jax.numpy.bfloat16), np.float32)
    x[1, :32] *= np.float32(2.0**-115)  # products below 2^-126: rounded one by one, so the general kernel
    x[1, 32:64] *= np.float32(2.0**60)
    x[2, :16], x[2, 16:32] = 0.0, -0.0  # a half-tile of zeros, one of negative zeros
    x[2, 32:48] = -np.abs(x[2, 32:48])  # a half-tile all negative: bfloat4_b's odd phases add -0
    x[3] = -0.0
    x[4, 64:96] = -np.abs(x[4, 64:96]) * np.float32(2.0**-100)
    x[5, 128:160] *= np.float32(2.0**30)
    plain = np.asarray(jax.numpy.asarray(rng.standard_normal((8, k)).astype(np.float32), jax.numpy.bfloat16), np.float32)
    for fidelity in FIDELITIES:
        for fp32 in (False, True):
            config = WormholeComputeKernelConfig(fidelity, fp32_dest_acc_en=fp32)
            ref = matmul_reference(x, w, fidelity.name, fp32)
            run = jax.jit(lambda x, w: tensix_matmul_stored(x, w, config, isa=isa))
            for r in range(len(x)):
                ours = np.asarray(run(x[r : r + 1], stored))
                np.testing.assert_array_equal(ours.view(np.uint32), ref[r : r + 1].view(np.uint32),
                                              err_msg=f"{fidelity.name} fp32_dest={fp32} row {r}")
            # A short prompt's few rows (FewRows: each weight vector decoded once for all of them): plain rows, whose
            # tiles take the fast path together, and the odd rows above among them, which send tiles back. The
            # reference is row by row, so theirs are the rows of the two references.
            both, ref_both = np.concatenate([x, plain]), np.concatenate([ref, matmul_reference(plain, w, fidelity.name, fp32)])
            p0 = len(x)  # where plain's rows start in both
            for picked in (np.arange(p0, p0 + 2), np.arange(p0, p0 + 5), np.arange(p0, p0 + 8), np.arange(3),
                           np.arange(p0), np.r_[p0 : p0 + 4, 2:4]):
                ours = np.asarray(run(both[picked], stored))
                np.testing.assert_array_equal(ours.view(np.uint32), ref_both[picked].view(np.uint32),
                                              err_msg=f"{fidelity.name} fp32_dest={fp32} {len(picked)} rows")


@pytest.mark.parametrize("weight_format", ["bfloat16", "bfloat8_b", "bfloat4_b", "float32"])
def test_many_row_strips_hold_several_pieces(weight_format):
    """The AVX-512 many-row kernel takes strips of up to 256 columns in 64-column pieces, each K tile's activation
    phases made once for all of them: 12 rows x 600 columns (strips of two pieces, the last 24 columns wide; each
    piece's Dst judged tame on its own, one of them not: a huge weight) against the reference bit for bit."""
    native_path("native-avx512")
    x, w = operands((12, 96, 600), weight_format, seed=5)
    w[40, 150:166] = np.float32(2.0**120) * np.linspace(-1, 1, 16)  # products past the tame bound in one piece
    w = np.asarray(operands_like(w, weight_format))
    if weight_format in ("bfloat8_b", "bfloat4_b"):
        stored = ttjax.as_tensor(w, getattr(ttjax, weight_format))
    else:
        stored = jax.numpy.asarray(w, jax.numpy.dtype(weight_format))
    for fidelity, fp32 in ((MathFidelity.HiFi2, False), (MathFidelity.HiFi4, True), (MathFidelity.LoFi, False)):
        config = WormholeComputeKernelConfig(fidelity, fp32_dest_acc_en=fp32)
        ref = matmul_reference(x, w, fidelity.name, fp32, weight_is_float32=weight_format == "float32")
        ours = np.asarray(jax.jit(lambda x, w: tensix_matmul_stored(x, w, config, isa="avx512"))(x, stored))
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32), err_msg=f"{fidelity.name}")


def tame_boundary_case(weight_format):
    """x [3 rows, 64], w [64, 16] at the edge of the kernels' two-op BF16 Dst write (TameProducts in
    ttjax/csrc/tensix_matmul.h: every product a multiple of 2^-126, every 16-deep sum finite), where a write that
    skipped the exact rule's flush would leave a denormal. Weight row k holds 2^(e - 127) in column 0 (setting the
    block's exponent e) and the code 1 in column 1; x field + e is 130 + W in tile 0 (products normal, so the fused
    path, but not tame) and 136 + W in tile 1 (tame). Column 1 of row 0: tile 0 leaves Dst 2^-123 (1 + 2^-4), tile 1
    adds -2^-123, and the Dst write must flush the 2^-127 left. Row 1: tile 0's 16-deep sum cancels to 2^-129. Row 2:
    ordinary values. (XLA runs custom calls with denormals flushed, which already zeroes those two sums; the rule
    keeps the kernels exact without relying on it.)"""
    w_bits = 7 if weight_format == "bfloat8_b" else 3
    e0, e1 = 60, 60
    x0, x1 = 70 + w_bits, 76 + w_bits  # exponent fields: x0 + e0 = 130 + W, x1 + e1 = 136 + W
    w = np.zeros((64, 16), np.float32)
    for k in range(64):
        e = e0 if k < 32 else e1
        w[k, 0], w[k, 1] = np.exp2(e - 127.0), np.exp2(e - 127.0 - (w_bits - 1))
    x = np.zeros((3, 64), np.float32)
    x[0, 0] = 1.0625 * np.exp2(x0 - 127.0)
    x[0, 32], x[0, 33] = -(1 + 2.0**-6) * np.exp2(x1 - 127.0), np.exp2(x1 - 127.0)
    x[1, 0], x[1, 1] = (1 + 2.0**-6) * np.exp2(x0 - 127.0), -np.exp2(x0 - 127.0)
    x[2] = np.asarray(jax.numpy.asarray(np.random.default_rng(3).standard_normal(64), jax.numpy.bfloat16), np.float32)
    return x, np.asarray(ttjax.typecast(w, getattr(ttjax, weight_format)))


@pytest.mark.parametrize("isa", ["avx512", "avx512vbmi"])
@pytest.mark.parametrize("weight_format", ["bfloat8_b", "bfloat4_b"])
def test_tame_dst_writes_keep_the_flush(weight_format, isa):
    """The two-op BF16 Dst write is taken only while every add so far is tame: at the boundary (tame_boundary_case)
    the GEMV (one row), a short prompt's few rows and the many-row kernel equal the reference bit for bit."""
    native_path(f"native-{isa}")
    x, w = tame_boundary_case(weight_format)
    stored = ttjax.as_tensor(w, getattr(ttjax, weight_format))
    for fidelity in (MathFidelity.LoFi, MathFidelity.HiFi2, MathFidelity.HiFi4):
        config = WormholeComputeKernelConfig(fidelity, fp32_dest_acc_en=False)
        run = jax.jit(lambda x, w: tensix_matmul_stored(x, w, config, isa=isa))
        whole = matmul_reference(x, w, fidelity.name, False)
        assert whole[0, 1] == 0.0 and whole[1, 1] == 0.0  # the case flushes where it should
        for rows in (x[:1], x[1:2], x, np.repeat(x, 4, axis=0)):  # GEMV, GEMV, few rows, many rows
            expected = matmul_reference(rows, w, fidelity.name, False)
            ours = np.asarray(run(rows, stored))
            np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32),
                                          err_msg=f"{fidelity.name} {len(rows)} rows")


@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("weight_format", ["bfloat16", "bfloat8_b", "bfloat4_b"])
def test_exact_kernel_equals_float_math(weight_format, isa):
    """Without a compute-kernel config (or with --fidelity off) a compact weight is read as stored by the native
    kernel and multiplied in float32: equal to XLA's dot on the decoded values up to float32 summation order, for
    one row and many, shapes that are not whole tiles, and blocks at both ends of the exponent range."""
    native_path(f"native-{isa}")
    from ttjax.linear import exact_matmul

    for i, (m, k, n) in enumerate([(1, 576, 200), (1, 40, 24), (3, 72, 70), (33, 96, 130), (1, 1536, 65)]):
        x, w = operands((m, k, n), weight_format, seed=20 + i)
        w[min(2, k - 1), :16] = np.float32(1e-38) * np.arange(16)
        w = np.asarray(operands_like(w, weight_format))
        stored = (ttjax.as_tensor(w, getattr(ttjax, weight_format)) if weight_format != "bfloat16"
                  else jax.numpy.asarray(w, jax.numpy.bfloat16))
        ours = np.asarray(jax.jit(lambda x, w: exact_matmul(x, w, isa=isa))(x, stored))
        xla = np.asarray(jax.jit(lambda x, w: exact_matmul(x, w, native=False))(x, stored))
        scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64)
        assert ours.shape == xla.shape == (m, n)
        assert np.all(np.abs(ours - xla) <= k * 2.0**-23 * scale + 1e-30), (m, k, n)
        assert np.all(np.abs(ours - x.astype(np.float64) @ w.astype(np.float64)) <= k * 2.0**-24 * scale + 1e-30)


def test_mismatched_k_is_refused():
    """A weight with fewer rows than x has columns is an error, not a product padded with zeros."""
    config = WormholeComputeKernelConfig(MathFidelity.HiFi2)
    x = np.ones((2, 64), np.float32)
    for w in (jax.numpy.ones((40, 32), jax.numpy.bfloat16), ttjax.as_tensor(np.ones((40, 32), np.float32), ttjax.bfloat8_b)):
        with pytest.raises(ttjax.TTJaxError, match="x has K = 64 but the weight .* has 40 rows"):
            ttjax.linear(x, w, compute_kernel_config=config)

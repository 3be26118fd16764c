"""ttjax.sfpu against a plain numpy transcription of the same Wormhole kernels (tests/sfpu_reference.py), bit for
bit: every bfloat16 input and a stride over float32, both Dst modes, both approx modes; and the multiply-add model
on its edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import sfpu_reference as ref
from tests.sfpu_budget import bf16_stimuli, fp32_stimuli
from ttjax import sfpu
from ttjax import vector_unit as vu


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("name", sorted(sfpu.FUNCTIONS))
def test_every_bfloat16_and_a_float32_stride_equal_the_numpy_transcription(name):
    inputs = {"bfloat16": bf16_stimuli(), "float32": fp32_stimuli()}
    inputs["bfloat16"] = np.concatenate([inputs["bfloat16"], [np.inf, -np.inf]]).astype(np.float32)
    for src, x in inputs.items():
        xj = jnp.asarray(x, jnp.bfloat16 if src == "bfloat16" else jnp.float32)
        for approx in (False, True):
            for fp32 in (False, True):
                got = jax.jit(lambda v: sfpu.FUNCTIONS[name](v, approx=approx, fp32_dest_acc_en=fp32, native=False))(xj)
                assert got.dtype == (jnp.float32 if fp32 else jnp.bfloat16)
                want = ref.run(name, x, approx, fp32, src_is_bf16=src == "bfloat16")
                diff = np.nonzero(_bits(np.asarray(got, np.float32)) != _bits(want))[0]
                assert not diff.size, (f"{name} {src} approx={approx} fp32={fp32}: {diff.size} lanes differ, e.g. "
                                       f"x={x[diff[0]]!r}: {np.asarray(got, np.float32)[diff[0]]!r} vs {want[diff[0]]!r}")


def _edge_operands():
    """Operands that reach every branch of the model: zeros, denormals, infinities, NaN, the extremes, exact
    cancellation, products that overflow or underflow on their own, sums that round to the next binade."""
    rng = np.random.default_rng(7)
    specials = np.array([0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x80800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000,
                         0xFF800000, 0x7FC00000, 0xFFC00001, 0x3F800000, 0xBF800000, 0x3F7FFFFF, 0x00FFFFFF,
                         0x1F800000, 0x5F800000, 0x3FFFFFFF, 0x33800000], np.uint64)
    a, b, c = (x.ravel() for x in np.meshgrid(specials, specials, specials))
    n = 200_000
    ra = rng.integers(0, 2**32, n, dtype=np.uint64)
    rb = rng.integers(0, 2**32, n, dtype=np.uint64)
    near = rng.random(n) < 0.8  # exponents that interact instead of overflowing
    ra = np.where(near, (ra & 0x807FFFFF) | (rng.integers(90, 165, n).astype(np.uint64) << 23), ra)
    rb = np.where(near, (rb & 0x807FFFFF) | (rng.integers(90, 165, n).astype(np.uint64) << 23), rb)
    with np.errstate(all="ignore"):
        p = (ra.astype(np.uint32).view(np.float32).astype(np.float64) * rb.astype(np.uint32).view(np.float32))
        cancel = (p.astype(np.float32).view(np.uint32) ^ np.uint32(0x80000000)).astype(np.int64)
    rc = np.where(rng.random(n) < 0.5, (cancel + rng.integers(-4, 5, n)) & 0xFFFFFFFF,
                  rng.integers(0, 2**32, n)).astype(np.uint64)
    return np.concatenate([a, ra]), np.concatenate([b, rb]), np.concatenate([c, rc])


def test_the_multiply_add_equals_the_published_wormhole_model():
    a, b, c = _edge_operands()
    got = np.asarray(jax.jit(vu.mad)(a.astype(np.uint32), b.astype(np.uint32), c.astype(np.uint32)))
    want = ref.fma_wh(a, b, c)
    diff = np.nonzero(got.astype(np.uint64) != want)[0]
    assert not diff.size, [tuple(hex(int(v[i])) for v in (a, b, c, want)) + (hex(int(got[i])),) for i in diff[:5]]


def test_the_multiply_add_is_only_partially_fused():
    """A product kept to 27 bits with a sticky bit: it can round where a fused FMA would not, and never as an unfused
    multiply-then-add would (each case one the published model decides)."""
    x, y, z = 0x4BA5C272, 0xBA820C3A, 0x41B056AE  # -21534.616114... exactly
    got = int(jax.jit(vu.mad)(np.uint32(x), np.uint32(y), np.uint32(z)))
    assert got == 0xC6A83D3C  # -21534.6171875: the far neighbour; IEEE's fma gives -21534.615234375
    assert vu.value(np.uint32(got)) == np.float32(-21534.6171875)


def test_constants_are_the_c_compilers_float_literals():
    assert vu.f32_bits("1.4426950216293334961f") == 0x3FB8AA3B
    assert vu.f32_bits("0.1") == np.float32(0.1).view(np.uint32)
    assert vu.f32_bits("-5.54259443") == 0xC0B15CEF
    assert vu.f32_bits("1e-45") == 1  # the smallest denormal
    assert vu.sfpi_lut_code(0.22656, False) == 0x3D  # 1.8125 * 2^-3, mantissa rounded half up
    assert vu.lut16_to_fp32(vu.sfpi_lut_code(0.0, True)) == 0  # FP16 exponent 31 reads as zero


def test_dst_modes_differ_where_the_hardware_does():
    """A 16-bit Dst leaves bfloat16 values and loses the low bits of a float32 input."""
    x = jnp.asarray([1.0, -1.0, 0.5, 3.0], jnp.float32)
    lo = sfpu.exp(x, fp32_dest_acc_en=False)
    hi = sfpu.exp(x, fp32_dest_acc_en=True)
    assert lo.dtype == jnp.bfloat16 and hi.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(hi), np.exp(np.asarray(x)), rtol=2e-7)
    np.testing.assert_allclose(np.asarray(lo, np.float32), np.exp(np.asarray(x)), rtol=2**-8)
    # float32 into a 16-bit Dst is truncated: 1 + 2^-9 reads as 1
    assert float(sfpu.reciprocal(jnp.float32(1 + 2**-9))) == 1.0
    assert float(sfpu.reciprocal(jnp.float32(1 + 2**-9), fp32_dest_acc_en=True)) != 1.0


def test_silu_is_not_jax_silu():
    """The SFPU's SiLU differs from float math rounded to bfloat16 on a share of bfloat16 inputs (issue: 5.5%)."""
    x = jnp.asarray(bf16_stimuli(), jnp.bfloat16)
    x = x[jnp.abs(x.astype(jnp.float32)) < 20]
    ours = np.asarray(sfpu.silu(x), np.float32)
    exact = np.asarray(jax.nn.silu(x.astype(jnp.float32)).astype(jnp.bfloat16), np.float32)
    share = float(np.mean(ours != exact))
    assert 0.005 < share < 0.2, share


NATIVE_FUNCTIONS = ("exp", "reciprocal", "rsqrt", "sqrt", "sigmoid", "silu")


@pytest.mark.skipif(not __import__("ttjax.native", fromlist=["x"]).available(), reason="native kernels not built")
@pytest.mark.parametrize("name", NATIVE_FUNCTIONS)
def test_native_kernel_equals_the_jax_lanes_at_every_isa_level(name):
    """ttjax/csrc's SFPU (one custom call per function) against the pure-JAX lanes, bit for bit."""
    from ttjax import native

    x = np.concatenate([bf16_stimuli(), fp32_stimuli(), [np.inf, -np.inf, 0.0, -0.0]]).astype(np.float32)
    for fp32 in (False, True):
        dst = sfpu.to_dst(jnp.asarray(x), fp32)
        for approx in (False, True):
            if name == "sigmoid" and approx:
                continue  # the LUT form stays in JAX
            want = _bits(jax.jit(lambda d: sfpu.run_on_dst(d, name, fp32=fp32, approx=approx, native=False))(dst))
            for isa in native.isa_levels():
                got = _bits(jax.jit(lambda d: sfpu.run_on_dst(d, name, fp32=fp32, approx=approx, isa=isa))(dst))
                diff = np.nonzero(got != want)[0]
                assert not diff.size, f"{name} fp32={fp32} approx={approx} {isa}: {diff.size} lanes, e.g. x={x[diff[0]]}"


@pytest.mark.skipif(not __import__("ttjax.native", fromlist=["x"]).available(), reason="native kernels not built")
def test_native_kernel_equals_the_jax_lanes_on_the_kernels_own_steps():
    """The SDPA and norm kernels' steps: a scaled Schraudolph exp, the polynomial exp, the scaled accurate exp, the
    reciprocal's iterations, the FP32 product."""
    from ttjax import native

    x = np.concatenate([bf16_stimuli(), fp32_stimuli()]).astype(np.float32)
    cases = [("exp_schraudolph", dict(scale=0.125, clamp_negative=False)), ("exp_schraudolph", dict(scale=0.088, clamp_negative=True)),
             ("exp_polynomial", dict(scale_bf16=0x3E00)), ("exp_accurate_scaled", dict(scale_bf16=0x3DB5)),
             ("reciprocal_iter", dict(iterations=1)), ("reciprocal_iter", dict(iterations=2)),
             ("reciprocal_iter", dict(iterations=1, round_to_bf16=True)), ("mul_scalar", dict(constant=1 / 576))]
    for fp32 in (False, True):
        dst = sfpu.to_dst(jnp.asarray(x), fp32)
        for name, params in cases:
            want = _bits(jax.jit(lambda d: sfpu.run_on_dst(d, name, fp32=fp32, native=False, **params))(dst))
            for isa in native.isa_levels():
                got = _bits(jax.jit(lambda d: sfpu.run_on_dst(d, name, fp32=fp32, isa=isa, **params))(dst))
                assert (got == want).all(), f"{name} {params} fp32={fp32} {isa}"

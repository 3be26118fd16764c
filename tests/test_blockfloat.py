"""bfloat8_b / bfloat4_b: bit patterns checked by hand against tt-metal's host packer rules
(ttjax/blockfloat.py's docstring), the tile byte layout, and properties over generated data."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ttjax import BlockFloatTensor, bfloat4_b, bfloat8_b, pack_as_bfp_tiles, typecast
from ttjax.blockfloat import decode_blocks, encode_blocks, to_block_float


def f32(*bits):
    return np.array(bits, np.uint32).view(np.float32)


def sign_magnitude(codes, fmt):
    """Signed codes -> the bytes / nibbles tt-metal stores: sign bit above the magnitude."""
    w = fmt.mantissa_bits
    return [abs(int(c)) | ((1 << w) if c < 0 else 0) for c in codes]


def block(fmt, values):
    shared, codes = encode_blocks(np.asarray(values, np.float32), fmt)
    return int(shared[0]), sign_magnitude(codes, fmt), decode_blocks(shared, codes, fmt)


# Each row: block values, then (shared exponent, codes, decoded) for bfp8 and bfp4, worked out by hand.
POWERS = [2.0**-i for i in range(16)]


def test_powers_of_two():
    """Shared exponent 0x7F (1.0). 2^-6 is bfp8's smallest step; 2^-7 is exactly half a step and rounds
    to even (0). bfp4's step is 2^-2; 2^-3 ties to 0."""
    e, codes, dec = block(bfloat8_b, POWERS)
    assert e == 0x7F
    assert codes == [0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01] + [0] * 9
    np.testing.assert_array_equal(dec, POWERS[:7] + [0.0] * 9)
    e, codes, dec = block(bfloat4_b, POWERS)
    assert codes == [4, 2, 1] + [0] * 13


def test_one_large_value_and_many_small():
    """7.9999 (0x40FFFF2E) sets the shared exponent to 0x81; its mantissa rounds up past 127 and saturates at
    0x7F (7.9375: the exponent is never bumped). -3.3: shift 1, q = 0x34 remainder > half -> 0x35, sign -> 0xB5."""
    values = [f32(0x40FFFF2E)[0], 0.1, 0.01, 1.0, -3.3, 2.5, 0.0625, 6.0, 0.5, 1.5, 4.25, -7.0, 0.03125, 3.0, 7.5, -0.2]
    e, codes, dec = block(bfloat8_b, values)
    assert e == 0x81
    assert codes == [0x7F, 0x02, 0x00, 0x10, 0xB5, 0x28, 0x01, 0x60, 0x08, 0x18, 0x44, 0xF0, 0x00, 0x30, 0x78, 0x83]
    np.testing.assert_array_equal(
        dec, [7.9375, 0.125, 0, 1, -3.3125, 2.5, 0.0625, 6, 0.5, 1.5, 4.25, -7, 0, 3, 7.5, -0.1875]
    )
    _, codes, dec = block(bfloat4_b, values)
    assert codes == [0x7, 0, 0, 0x1, 0xB, 0x2, 0, 0x6, 0, 0x2, 0x4, 0xF, 0, 0x3, 0x7, 0]
    np.testing.assert_array_equal(dec, [7, 0, 0, 1, -3, 2, 0, 6, 0, 2, 4, -7, 0, 3, 7, 0])


def test_zeros_negatives_and_subnormals():
    """-0, a subnormal (0x000116C2) and negatives that round to zero all give code 0 with the sign cleared.
    3 * 2^-7 (shift 7, remainder 0x18000 > half) rounds up to code 1 = 2^-5."""
    values = [-1.5, 0.0, -0.0, 0.75, f32(0x000116C2)[0], -(2.0**-10), -0.001, 3.0, -2.0, 0.375, -0.625, 1.0, 0.1,
              -(2.0**-7), 3 * 2.0**-7, -0.001]
    e, codes, dec = block(bfloat8_b, values)
    assert e == 0x80
    assert codes == [0xB0, 0, 0, 0x18, 0, 0, 0, 0x60, 0xC0, 0x0C, 0x94, 0x20, 0x03, 0, 0x01, 0]
    assert dec[14] == 0.03125 and dec[12] == 0.09375
    assert not np.signbit(dec[[1, 2, 5, 6, 13, 15]]).any()  # no negative zeros come out
    _, codes, _ = block(bfloat4_b, values)
    assert codes == [0xB, 0, 0, 0x2, 0, 0, 0, 0x6, 0xC, 0x1, 0x9, 0x2, 0, 0, 0, 0]


def test_inf_and_nan():
    """inf / NaN carry exponent 255 into the block: +inf -> 0x40, -inf -> 0xC0, quiet NaN -> 0x60; a NaN
    whose payload sits only in the low bits rounds to the inf code; finite values in the block become 0."""
    values = f32(0x7F800000, 0x3F800000, 0x7FC00000, 0xFF800000, 0x7F800001, 0xFFC00000, *[0] * 10)  # bits: no float64 trip
    e, codes, dec = block(bfloat8_b, values)
    assert e == 0xFF
    assert codes[:6] == [0x40, 0x00, 0x60, 0xC0, 0x40, 0xE0]
    assert [hex(b) for b in dec.view(np.uint32)[:6]] == ["0x7f800000", "0x0", "0x7fc00000", "0xff800000", "0x7f800000", "0xffc00000"]
    _, codes, _ = block(bfloat4_b, values)
    assert codes[:6] == [0x4, 0x0, 0x6, 0xC, 0x4, 0xE]


@pytest.mark.parametrize("value, code, decoded", [(64.5, 0x40, 64.0), (65.5, 0x42, 66.0)])
def test_ties_round_to_even(value, code, decoded):
    """Shared exponent 0x85: 64.5 is q = 0x40 plus exactly half -> stays even; 65.5 is 0x41 plus half -> 0x42."""
    e, codes, dec = block(bfloat8_b, [value] + [0.0] * 15)
    assert (e, codes[0], dec[0]) == (0x85, code, decoded)


# Block [2.0, x, -x, 0 x 13]: shared exponent 0x80 (2.0); x is in [1, 2) (exponent 0x7F), so its 24-bit mantissa
# shifts right by 1 and its last bit, a 1, is dropped. The step is 2^(0x80 - 127 - (W - 1)).
# bfp8 (W = 7, rounds on the low 17 bits, half = 0x10000, step 2^-5): x = 0x3F820001 = 1 + 2^-6 + 2^-23.
#   0x820001 >> 1 = 0x410000 = q 0x20 (<< 17) | remainder 0x10000: exactly half, q even -> 0x20 = 1.0.
#   x is 32.5 steps + 2^-23: the nearest grid point, and what a sticky bit gives, is 0x21 = 1.03125.
# bfp4 (W = 3, rounds on the low 21 bits, half = 0x100000, step 2^-1): x = 0x3FA00001 = 1.25 + 2^-23.
#   0xA00001 >> 1 = 0x500000 = q 2 (<< 21) | remainder 0x100000: exactly half, q even -> 2 = 1.0 (sticky: 3 = 1.5).
@pytest.mark.parametrize(
    "fmt, bits, code, decoded", [(bfloat8_b, 0x3F820001, 0x20, 1.0), (bfloat4_b, 0x3FA00001, 2, 1.0)], ids=["bfp8", "bfp4"]
)
def test_bits_shifted_out_do_not_round(fmt, bits, code, decoded):
    """tt-metal has no sticky bit: the bits the exponent alignment shifts out are dropped before rounding, so a value
    just above a tie rounds to even (down), more than half a step away, where an encoder with a sticky bit rounds up."""
    w = fmt.mantissa_bits
    mant = (bits & 0x7FFFFF) | 0x800000  # the arithmetic above, on the float32 bits, without the encoder
    kept, dropped = mant >> 1, mant & 1
    q, rem = kept >> (24 - w), kept & ((1 << (24 - w)) - 1)
    assert dropped == 1 and rem == 1 << (23 - w) and q % 2 == 0  # a tie only once the dropped bit is gone
    step = 2.0 ** (0x80 - 127 - (w - 1))
    assert q == code and q * step == decoded and f32(bits)[0] - decoded > step / 2  # nearest would be q + 1
    x = f32(0x40000000, bits, bits | 1 << 31, *[0] * 13)
    e, codes, dec = block(fmt, x)
    assert e == 0x80 and codes[1:3] == [code, code | 1 << w]
    np.testing.assert_array_equal(dec[1:3], [decoded, -decoded])
    np.testing.assert_array_equal(typecast(x, fmt)[1:3], [decoded, -decoded])
    np.testing.assert_array_equal(np.asarray(typecast(jnp.asarray(x), fmt))[1:3], [decoded, -decoded])


def test_tile_byte_layout():
    """pack_as_bfp_tiles: 64 exponents (faces TL, TR, BL, BR; 16 rows each), then the codes in the same order.
    Block (face f, row r) holds 2^(k - 30) * (1 + j / 64) with k = 16 f + r, j = column in face, so its shared
    exponent is 97 + k and its codes are 0x40 + j."""
    x = np.zeros((32, 32), np.float32)
    for f, (r0, c0) in enumerate([(0, 0), (0, 16), (16, 0), (16, 16)]):
        for r in range(16):
            for j in range(16):
                x[r0 + r, c0 + j] = 2.0 ** (16 * f + r - 30) * (1 + j / 64)
    raw = pack_as_bfp_tiles(x, bfloat8_b)
    assert raw.dtype == np.uint8 and raw.size == 1088
    assert list(raw[:64]) == [97 + k for k in range(64)]
    assert list(raw[64:]) == [0x40 + j for _ in range(64) for j in range(16)]
    # bfp4 of -x: magnitude round(4 + j / 16) = 4 up to the tie at j = 8 (even), 5 after; with the sign
    # 0xC and 0xD. Two codes a byte, the first in the low nibble: (j=8, j=9) is 0xDC.
    raw4 = pack_as_bfp_tiles(-x, bfloat4_b)
    assert raw4.size == 576 and list(raw4[:64]) == [97 + k for k in range(64)]
    assert list(raw4[64:]) == [0xCC, 0xCC, 0xCC, 0xCC, 0xDC, 0xDD, 0xDD, 0xDD] * 64


def test_non_tile_multiple_shapes_pad_like_tile_layout():
    x = np.random.default_rng(0).standard_normal((40, 70)).astype(np.float32)
    t = to_block_float(x, bfloat8_b)
    assert t.codes.shape == (64, 96) and t.exps.shape == (64, 6)
    assert not np.asarray(t.codes)[40:].any() and not np.asarray(t.codes)[:, 70:].any()
    assert pack_as_bfp_tiles(x, bfloat8_b).size == 6 * 1088
    np.testing.assert_array_equal(t.decode(), typecast(x, bfloat8_b))


def test_compact_storage_sizes():
    x = np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)
    assert to_block_float(x, bfloat8_b).nbytes / x.size == 1.0625
    assert to_block_float(x, bfloat4_b).nbytes / x.size == 0.5625


BIG = float(np.float32(1e30))
normal_floats = st.floats(-BIG, BIG, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)


@st.composite
def rows(draw):
    n = draw(st.integers(1, 4)) * 16
    return draw(hnp.arrays(np.float32, (draw(st.integers(1, 3)), n), elements=normal_floats))


@pytest.mark.parametrize("fmt", [bfloat8_b, bfloat4_b], ids=["bfp8", "bfp4"])
@settings(max_examples=150, deadline=None)
@given(x=rows())
def test_properties(fmt, x):
    q = typecast(x, fmt)
    np.testing.assert_array_equal(typecast(q, fmt), q)  # idempotent: decoded values encode to themselves
    shared, _ = encode_blocks(x, fmt)
    w = fmt.mantissa_bits
    step = np.repeat(np.exp2(shared.astype(np.float64) - 127 - (w - 1)), 16, axis=-1)
    # After the alignment shift |x| = k u + d: k the kept mantissa bits, u = step / 2^(24 - W) the weight of the last
    # one, d < u the dropped bits. Rounding k to a multiple of 2^(24 - W) moves it at most half a step, and d only
    # adds, so -step/2 <= |x| - |q| < step/2 + u (test_bits_shifted_out_do_not_round: step/2 + 2^-23, u = 2^-22).
    # Truncation is off by nearly a full step and fails. Past the top code (2^W - 1) step the clamp holds q there: the
    # error reaches nearly a full step, bounded only by |x| < 2^W step. float64 holds x, q and the bounds exactly.
    over = np.abs(x.astype(np.float64)) - np.abs(q)
    top = ((1 << w) - 1) * step
    ok = (over >= -step / 2) & (over < np.where(np.abs(x) > top, step, step / 2 + step / 2 ** (24 - w)))
    assert ok.all(), f"{x[~ok][:3]} -> {q[~ok][:3]}, step {step[~ok][:3]}"
    assert ((q == 0) | (np.sign(q) == np.sign(x))).all()  # sign kept (or the value flushed to +0)
    np.testing.assert_array_equal(np.asarray(typecast(jnp.asarray(x), fmt)), q)  # jax == numpy, bit for bit


def test_subnormals_flush_to_zero():
    x = f32(*range(1, 17))  # the 16 smallest positive subnormals
    assert not typecast(x, bfloat8_b).any()


def test_linear_and_embedding_decode_in_the_program():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    t = to_block_float(w, bfloat8_b)
    assert isinstance(t, BlockFloatTensor)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    import ttjax

    np.testing.assert_allclose(np.asarray(ttjax.linear(jnp.asarray(x), t)), x @ typecast(w, bfloat8_b), rtol=1e-5, atol=1e-5)
    rows_ = np.asarray(ttjax.embedding(jnp.array([[5, 0, 63]]), t))
    np.testing.assert_array_equal(rows_[0], typecast(w, bfloat8_b)[[5, 0, 63]])

"""bfloat8_b and bfloat4_b: TT's block floats, encoded exactly as tt-metal's host packer does.

Rules (tt_metal/impl/data_format/blockfloat_common.cpp: get_max_exp, convert_u32_to_bfp,
convert_bfp_to_u32, after PR 16997 made rounding ties-to-even):

- Layout. A tensor in TILE_LAYOUT has its last two dims zero-padded to multiples of 32. A
  32x32 tile is four 16x16 faces (top-left, top-right, bottom-left, bottom-right), each
  row-major. A block is one face row: 16 consecutive values along the last dim. A tile is
  64 exponent bytes (one per block, faces in order, rows in order) then the codes in the
  same order: 1088 bytes for bfp8 (a byte per code), 576 for bfp4 (two codes per byte,
  the first in the low nibble).
- Shared exponent: the max over the block of the raw biased float32 exponent field (sign
  ignored). Zeros and subnormals contribute 0; inf and NaN contribute 255.
- A code is sign + W magnitude bits (W = 7 for bfp8, 3 for bfp4), with no hidden bit.
  A value whose exponent field is 0 (zero, subnormal) encodes to 0. Otherwise its 24-bit
  mantissa (leading 1 included) is shifted right by (shared - own exponent), dropping
  bits (they do not count toward rounding), then rounded half-to-even on its low 24 - W
  bits, and clamped to 2^W - 1: the exponent is never bumped, so 7.9999 becomes 7.9375
  in bfp8. A code of magnitude 0 has its sign cleared.
- Decode: sign * q * 2^(shared - 127 - (W - 1)). With shared = 255 a magnitude of
  2^(W-1) decodes to inf and a larger one to NaN (the bits say so; there is no special
  case). inf and NaN go through the same arithmetic: +inf is 0x40 in bfp8, a quiet NaN
  0x60, and every finite value in their block becomes 0.

In memory ttjax keeps the same information in logical order: codes [..., R, C] (int8
±magnitude for bfp8; packed sign-magnitude nibbles, uint8 [..., R, C/2], for bfp4) and
exponents [..., R, C/16] as ml_dtypes.float8_e8m0fnu (whose bits mean exactly 2^(e-127)),
with R, C padded to multiples of 32: 1.0625 bytes a value for bfp8, 0.5625 for bfp4.
`pack_as_bfp_tiles` turns that into tt-metal's byte stream.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from mesh.errors import TTJaxError

TILE = 32
FACE = 16
E8M0 = ml_dtypes.float8_e8m0fnu


@dataclass(frozen=True)
class BlockFormat:
    name: str
    mantissa_bits: int

    def __repr__(self):
        return f"ttjax.{self.name}"


bfloat8_b = BlockFormat("bfloat8_b", 7)
bfloat4_b = BlockFormat("bfloat4_b", 3)
FORMATS = {f.name: f for f in (bfloat8_b, bfloat4_b)}


def block_format(dtype) -> BlockFormat | None:
    """The BlockFormat for bfloat8_b / bfloat4_b (object or name), None for ordinary dtypes."""
    if isinstance(dtype, BlockFormat):
        return dtype
    return FORMATS.get(dtype) if isinstance(dtype, str) else None


def _xp(x):
    return np if isinstance(x, np.ndarray) else jnp


def _bitcast(xp, x, dtype):
    return x.view(dtype) if xp is np else jax.lax.bitcast_convert_type(x, dtype)


def encode_blocks(x, fmt: BlockFormat, device: bool = False):
    """Float values [..., n * 16] -> (shared exponents uint8 [..., n], signed codes int8 [..., n * 16]).

    numpy in, numpy out (the host packer); jax in, jax out (quantizing inside a program). device: as the Tensix
    packer writes an op's output (see DEVICE_PACKER below) instead of the host packer."""
    xp, w = _xp(x), fmt.mantissa_bits
    bits = _bitcast(xp, xp.asarray(x, dtype=xp.float32), xp.uint32)
    if device:  # the packer's gasket first rounds each value to 7 mantissa bits, ties away; exponent 255 kept
        special = (bits & 0x7F800000) == 0x7F800000
        bits = xp.where(special, bits, (bits + xp.uint32(0x8000)) & xp.uint32(0xFFFF0000))
    bits = bits.reshape(*bits.shape[:-1], -1, FACE)
    exp = (bits >> 23) & 0xFF
    shared = exp.max(axis=-1)
    mant = (bits & 0x7FFFFF) | 0x800000
    mant = mant >> xp.minimum(shared[..., None] - exp, 31).astype(xp.uint32)
    low_bits = 24 - w
    rem, q = mant & ((1 << low_bits) - 1), mant >> low_bits
    half = 1 << (low_bits - 1)
    up = (rem >= half) if device else (rem > half) | ((rem == half) & ((q & 1) == 1))  # ties away on the device
    q = q + up.astype(xp.uint32)
    q = xp.where(exp == 0, 0, xp.minimum(q, (1 << w) - 1)).astype(xp.int32)
    codes = xp.where((bits >> 31) == 1, -q, q).astype(xp.int8)
    return shared.astype(xp.uint8), codes.reshape(*codes.shape[:-2], -1)


def decode_blocks(shared, codes, fmt: BlockFormat, dtype=jnp.float32):
    """(shared exponents [..., n] (uint8 or e8m0), signed codes [..., n * 16]) -> values, bit for bit as tt-metal."""
    xp, w = _xp(codes), fmt.mantissa_bits
    if shared.dtype == E8M0:
        shared = _bitcast(xp, shared, xp.uint8)
    q = xp.abs(codes.astype(xp.int32))
    qbits = _bitcast(xp, q.astype(xp.float32), xp.int32)  # exact: q < 2^W
    adjust = xp.repeat(shared.astype(xp.int32) - 127 - (w - 1), FACE, axis=-1)
    exp_field = ((qbits >> 23) & 0xFF) + adjust  # = shared - (leading zeros of q): tt-metal's normalize
    value = _bitcast(xp, qbits + (adjust << 23), xp.float32)  # an exponent field of 255 reads as inf / NaN
    value = xp.where((q == 0) | (exp_field < 1), 0, value)
    return xp.where(codes < 0, -value, value).astype(dtype)


def _pad_tiles(x, xp):
    """Zero-pad the last two dims to multiples of 32, as TILE_LAYOUT does (a vector is one row)."""
    if x.ndim == 1:
        x = x[None]
    pads = [(0, 0)] * (x.ndim - 2) + [(0, -x.shape[-2] % TILE), (0, -x.shape[-1] % TILE)]
    return xp.pad(x, pads)


DEVICE_PACKER = """How the Tensix packer writes bfloat8_b / bfloat4_b on the device, as far as it is published:
- ties round away from zero: "WH and BH both DO NOT support rounding to even, only rounding up in case of
  ties" (Tenstorrent's hardware team, tt-metal #17237), where the host packer rounds ties to even;
- with a block-float pack source (the default; bfp8_pack_precise off), each value is first rounded to 7
  mantissa bits by the packer's gasket, then again when mantissas shift to the shared exponent (tt-metal
  PR #14822; #52155 measures it for matmul, add, multiply with a bfloat8_b output, while typecast rounds
  once). For a bfloat16 source the first rounding changes nothing.
Not published, and taken from the host packer: that bits shifted out below the rounding position do not count
(no sticky bit), and that a round-up past the largest code clamps instead of raising the exponent. Whether
bfloat4_b on the device goes through 7 bits first (tt-metal #57410 suggests it does) is not settled either;
ttjax applies the same two steps."""


def quantize(x, dtype, device: bool = False):
    """x rounded to the values bfloat8_b / bfloat4_b can hold (ttnn.typecast there and back), same shape and dtype.

    device=False: tt-metal's host packer (ttnn.from_torch). device=True: the Tensix packer writing an op's output
    on the device (DEVICE_PACKER)."""
    fmt = block_format(dtype)
    xp = _xp(x)
    cols = x.shape[-1]
    padded = xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, -cols % TILE)])  # rows are independent of each other
    shared, codes = encode_blocks(padded, fmt, device)
    return decode_blocks(shared, codes, fmt, dtype=x.dtype)[..., :cols]


def _pack_nibbles(xp, codes):
    """Signed bfp4 codes -> sign-magnitude nibbles, two a byte, the first in the low nibble."""
    nib = (xp.abs(codes.astype(xp.int32)) | xp.where(codes < 0, 8, 0)).astype(xp.uint8)
    return nib[..., 0::2] | (nib[..., 1::2] << 4)


def _unpack_nibbles(xp, packed):
    nib = xp.stack([packed & 0xF, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1).astype(xp.int8)
    return xp.where(nib >= 8, -(nib & 7), nib)


@jax.tree_util.register_dataclass
@dataclass
class BlockFloatTensor:
    """A tensor stored as bfloat8_b / bfloat4_b: codes and shared exponents, padded to whole tiles."""

    codes: jax.Array  # int8 [..., R, C] (bfp8) or uint8 [..., R, C / 2] (bfp4), R and C tile-padded
    exps: jax.Array  # float8_e8m0fnu [..., R, C / 16]
    shape: tuple = field(metadata=dict(static=True))  # logical shape, without the leading mesh dims
    fmt: BlockFormat = field(metadata=dict(static=True))

    @property
    def dtype(self) -> BlockFormat:
        return self.fmt

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.exps.nbytes

    def signed_codes(self):
        xp = _xp(self.codes)
        return self.codes if self.fmt is bfloat8_b else _unpack_nibbles(xp, self.codes)

    def decode(self, dtype=jnp.float32):
        """The values, in `dtype`, at the logical shape (the leading dims of the storage are kept)."""
        values = decode_blocks(self.exps, self.signed_codes(), self.fmt, dtype)
        rows, cols = (1, self.shape[0]) if len(self.shape) == 1 else self.shape[-2:]
        values = values[..., :rows, :cols]
        return values[..., 0, :] if len(self.shape) == 1 else values

    def take_rows(self, idx) -> jax.Array:
        """Rows idx of a 2-D tensor, decoded (an embedding lookup reads only the rows it needs)."""
        codes = jnp.take(self.codes, idx, axis=-2)
        exps = jnp.take(self.exps, idx, axis=-2)
        part = BlockFloatTensor(codes, exps, (int(np.prod(idx.shape)), self.shape[-1]), self.fmt)
        return decode_blocks(exps, part.signed_codes(), self.fmt)[..., : self.shape[-1]]


def to_block_float(x, dtype) -> BlockFloatTensor:
    """Encode a host (numpy) or device array as bfloat8_b / bfloat4_b."""
    fmt = block_format(dtype)
    if fmt is None:
        raise TTJaxError(f"{dtype!r} is not a block-float dtype; use ttjax.bfloat8_b or ttjax.bfloat4_b.")
    xp = _xp(x)
    x = xp.asarray(x, dtype=xp.float32)
    shared, codes = encode_blocks(_pad_tiles(x, xp), fmt)
    if fmt is bfloat4_b:
        codes = _pack_nibbles(xp, codes)
    return BlockFloatTensor(codes, _bitcast(xp, shared, E8M0), tuple(x.shape), fmt)


# tt-metal's byte stream (for checking against the packer bit for bit, and for interchange).


def tile_order(a: np.ndarray) -> np.ndarray:
    """[..., R, C] (tile-padded) -> [..., tiles, 4 faces, 16 rows, 16 cols] in tile order (rows of tiles outer)."""
    r, c = a.shape[-2:]
    t = a.reshape(*a.shape[:-2], r // TILE, 2, FACE, c // TILE, 2, FACE)
    n = t.ndim
    t = np.moveaxis(t, [n - 6, n - 3, n - 5, n - 2, n - 4, n - 1], list(range(n - 6, n)))
    return t.reshape(*a.shape[:-2], -1, 4, FACE, FACE)


def pack_as_bfp_tiles(x: np.ndarray, dtype) -> np.ndarray:
    """x -> the bytes tt-metal's host packer writes for it in TILE_LAYOUT: per tile, 64 exponents then codes."""
    return bfp_tile_bytes(to_block_float(np.asarray(x, np.float32), block_format(dtype)))


def bfp_tile_bytes(t: BlockFloatTensor) -> np.ndarray:
    """A block-float tensor's exponents and codes as tt-metal's TILE_LAYOUT byte stream (uint8, flat)."""
    fmt = t.fmt
    exps = tile_order(np.repeat(np.asarray(t.exps).view(np.uint8), FACE, axis=-1))[..., 0]  # one per face row
    codes = tile_order(np.asarray(t.signed_codes()))
    sign = np.where(codes < 0, 1 << fmt.mantissa_bits, 0)
    raw = (np.abs(codes.astype(np.int32)) | sign).astype(np.uint8).reshape(*codes.shape[:-3], -1)
    if fmt is bfloat4_b:
        raw = raw[..., 0::2] | (raw[..., 1::2] << 4)
    return np.concatenate([exps.reshape(*exps.shape[:-2], -1), raw], axis=-1).reshape(-1)


def bfp_from_tile_bytes(data: np.ndarray, fmt: BlockFormat, shape: tuple[int, ...]) -> BlockFloatTensor:
    """The inverse of bfp_tile_bytes: tt-metal's byte stream for a tensor of logical `shape` -> its BlockFloatTensor,
    the same exponents and codes."""
    rows = (1, shape[0]) if len(shape) == 1 else tuple(shape)
    *outer, r, c = rows
    padded = (*outer, -(-r // TILE) * TILE, -(-c // TILE) * TILE)
    tiles = np.asarray(data, np.uint8).reshape(-1, 64 + TILE * TILE * (fmt.mantissa_bits + 1) // 8)
    raw = tiles[:, 64:]
    if fmt is bfloat4_b:
        raw = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(raw.shape[0], -1)
    sign_bit = 1 << fmt.mantissa_bits
    magnitude = (raw & (sign_bit - 1)).astype(np.int8)
    codes = logical_order(np.where(raw & sign_bit, -magnitude, magnitude).astype(np.int8), padded)
    exps = logical_order(np.repeat(tiles[:, :64, None], FACE, axis=-1), padded)[..., ::FACE]
    stored = codes if fmt is bfloat8_b else _pack_nibbles(np, codes)
    return BlockFloatTensor(stored, exps.view(E8M0), tuple(shape), fmt)


def logical_order(flat: np.ndarray, padded: tuple[int, ...]) -> np.ndarray:
    """The inverse of tile_order: values in tile order (rows of tiles outer, faces, face rows) -> [..., R, C]."""
    *outer, r, c = padded
    t = flat.reshape(*outer, r // TILE, c // TILE, 2, 2, FACE, FACE)
    n = t.ndim
    t = np.moveaxis(t, [n - 6, n - 4, n - 2, n - 5, n - 3, n - 1], list(range(n - 6, n)))
    return t.reshape(padded)


# Encoding a large tensor without holding it in float32: row chunks encoded on the device (one compiled encoder per
# chunk shape) and written in place into the tensor's codes and exponents. Rows are independent of each other and
# chunks start on whole tiles, so the result is bit for bit to_block_float of the whole.

_encode = jax.jit(to_block_float, static_argnums=1)


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _write_tiles(codes, exps, new_codes, new_exps, r0):
    return jax.lax.dynamic_update_slice(codes, new_codes, (r0, 0)), jax.lax.dynamic_update_slice(exps, new_exps, (r0, 0))


class BlockFloatRows:
    """A 2-D bfloat8_b / bfloat4_b tensor of logical `shape` assembled on the default device from its rows:
    write(r0, x) encodes float32 rows r0..r0 + len(x) (r0 a multiple of 32, the chunks in any order, together
    covering every row) and result() is the BlockFloatTensor, equal bit for bit to to_block_float of the whole."""

    def __init__(self, shape: tuple[int, int], dtype):
        fmt = block_format(dtype)
        if fmt is None or len(shape) != 2:
            raise TTJaxError(f"BlockFloatRows builds a 2-D bfloat8_b / bfloat4_b tensor, not {dtype!r} of shape {tuple(shape)}.")
        self.shape, self.fmt = tuple(int(n) for n in shape), fmt
        rows, cols = (-(-n // TILE) * TILE for n in self.shape)
        self.codes = jnp.zeros((rows, cols if fmt is bfloat8_b else cols // 2), jnp.int8 if fmt is bfloat8_b else jnp.uint8)
        self.exps = jax.lax.bitcast_convert_type(jnp.zeros((rows, cols // FACE), jnp.uint8), E8M0)

    def write(self, r0: int, x):
        n, cols = x.shape
        if r0 < 0 or r0 % TILE or r0 + n > self.shape[0] or cols != self.shape[1]:
            raise TTJaxError(f"rows {r0}..{r0 + n} of width {cols} do not fit a {self.shape} block-float tensor in whole tiles "
                             "(a chunk starts on a multiple of 32 rows).")
        part = _encode(x, self.fmt)
        self.codes, self.exps = _write_tiles(self.codes, self.exps, part.codes, part.exps, np.int32(r0))

    def result(self) -> BlockFloatTensor:
        return BlockFloatTensor(self.codes, self.exps, self.shape, self.fmt)

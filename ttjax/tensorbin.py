"""ttnn's tensor files (.tensorbin), read and written: `ttjax.dump_tensor(path, tensor)`, `ttjax.load_tensor(path)`.

What ttnn.dump_tensor writes (ttnn 0.81.1, ttnn/core/tensor/flatbuffer/): a little-endian uint64 header size, a
flatbuffer header (tensor.fbs: the TensorSpec, the mesh shape, one entry per shard with its byte offset and size,
the tensor topology) zero-padded so the data starts on 64 bytes, then each shard's bytes, each on 64 bytes. A host
tensor is one shard at mesh coordinate [0, 0] of a 1x1 mesh. Its bytes are what the host holds:
- ROW_MAJOR: the logical shape's elements in row-major order (bfloat16 or float32);
- TILE: the last two dims padded to whole 32x32 tiles, tile by tile (rows of tiles outer), each tile as its four
  16x16 faces (top-left, top-right, bottom-left, bottom-right), each face row-major; bfloat8_b / bfloat4_b tiles as
  tt-metal's packer writes them (ttjax.blockfloat.pack_as_bfp_tiles: 64 shared exponents, then the codes).
Loaded, a bfloat8_b / bfloat4_b tensor is a BlockFloatTensor with exactly the file's exponents and codes; bfloat16
and float32 tensors are jax arrays. `read_tensor` also gives the file's TensorSpec (layout included), so that a
tensor written back is the file it came from. tt_transformers' weight cache (ttnn.as_tensor(cache_file_name=...))
is such files.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import flatbuffers
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flatbuffers.table import Table

from mesh.errors import TTJaxError
from ttjax.blockfloat import TILE, BlockFloatTensor, bfloat8_b, bfp_from_tile_bytes, bfp_tile_bytes, block_format, logical_order, tile_order
from ttjax.memory_config import DRAM_MEMORY_CONFIG, Layout, TensorSpec

ALIGNMENT = 64  # tensor_file_layout.hpp's kTensorDataAlignment
# tensor_spec.fbs's DataType and the formats ttjax holds.
DTYPE_CODES = {"bfloat16": 0, "float32": 1, "uint32": 2, "bfloat8_b": 3, "bfloat4_b": 4, "uint8": 5, "uint16": 6,
               "int32": 7}
SUPPORTED = ("bfloat16", "float32", "bfloat8_b", "bfloat4_b")
PAGE_ROW_MAJOR, PAGE_TILE = 1, 2  # the PageConfig union's types
INLINE_FILE_STORAGE = 1
REPLICATE = 0


def _fail(path, why: str):
    raise TTJaxError(f"{path}: {why}")


# ---------------------------------------------------------------------------------------------------- bytes
def _as_2d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A vector is one row of a tile."""
    return (1, shape[0]) if len(shape) == 1 else shape


def _padded(shape: tuple[int, ...], dtype: str) -> tuple[int, ...]:
    return TensorSpec(shape, dtype, DRAM_MEMORY_CONFIG, Layout.TILE).padded_shape


def tensor_bytes(value, layout: Layout) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype, logical shape, the bytes a host ttnn tensor holds) for an array or a BlockFloatTensor."""
    if isinstance(value, BlockFloatTensor):
        if layout is not Layout.TILE:
            raise TTJaxError(f"{value.fmt.name} is stored in TILE layout only (got {layout.name}).")
        return value.fmt.name, tuple(value.shape), bfp_tile_bytes(value).tobytes()
    a = np.asarray(value)
    names = {np.dtype(np.float32): "float32", np.dtype(ml_dtypes.bfloat16): "bfloat16"}
    if a.dtype not in names:
        raise TTJaxError(f"dump_tensor takes bfloat16, float32 or a block-float tensor (bfloat8_b, bfloat4_b); got {a.dtype}.")
    if a.ndim == 0:
        raise TTJaxError("dump_tensor: a tensor needs at least one dimension (got a scalar).")
    if layout is Layout.ROW_MAJOR:
        return names[a.dtype], a.shape, np.ascontiguousarray(a).tobytes()
    padded = _padded(a.shape, names[a.dtype])
    pad = [(0, 0)] * (len(padded) - 2) + [(0, padded[-2] - _as_2d(a.shape)[-2]), (0, padded[-1] - a.shape[-1])]
    return names[a.dtype], a.shape, tile_order(np.pad(a.reshape(_as_2d(a.shape)), pad)).tobytes()


def tensor_from_bytes(data: bytes, dtype: str, shape: tuple[int, ...], layout: Layout, path="tensorbin"):
    """The inverse of tensor_bytes."""
    rows = _as_2d(shape)
    if layout is Layout.ROW_MAJOR:
        if dtype in ("bfloat8_b", "bfloat4_b"):
            _fail(path, f"{dtype} in ROW_MAJOR layout is not a host format ttnn writes.")
        np_dtype = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
        want = math.prod(shape) * np.dtype(np_dtype).itemsize
        if len(data) != want:
            _fail(path, f"holds {len(data)} bytes of tensor data where {dtype} {list(shape)} needs {want}.")
        return jnp.asarray(np.frombuffer(data, np_dtype).reshape(shape))
    padded = _padded(shape, dtype)
    n_tiles = math.prod(padded) // (TILE * TILE)
    fmt = block_format(dtype) if dtype in ("bfloat8_b", "bfloat4_b") else None
    if fmt is not None:
        per_tile = 64 + (1024 if fmt is bfloat8_b else 512)
        if len(data) != n_tiles * per_tile:
            _fail(path, f"holds {len(data)} bytes of tensor data where {dtype} {list(shape)} ({n_tiles} tiles) needs {n_tiles * per_tile}.")
        return bfp_from_tile_bytes(np.frombuffer(data, np.uint8), fmt, tuple(shape))
    np_dtype = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
    want = math.prod(padded) * np.dtype(np_dtype).itemsize
    if len(data) != want:
        _fail(path, f"holds {len(data)} bytes of tensor data where {dtype} {list(shape)} in TILE layout needs {want}.")
    full = logical_order(np.frombuffer(data, np_dtype), padded)
    return jnp.asarray(full[..., : rows[-2], : rows[-1]].reshape(shape))


# ---------------------------------------------------------------------------------------------------- header
def tensor_header(spec: TensorSpec, size: int) -> bytes:
    b = flatbuffers.Builder(256)

    def u32_vector(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependUint32(v)
        return b.EndVector()

    prepend = {"u8": b.PrependUint8Slot, "u16": b.PrependUint16Slot, "u32": b.PrependUint32Slot, "i32": b.PrependInt32Slot}

    def table(fields):
        """A table from (slot, kind, value): kind a scalar type, or "off" for a table or vector built before it."""
        b.StartObject(max((f[0] for f in fields), default=-1) + 1)
        for slot, kind, value in fields:
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                prepend[kind](slot, value, 0)  # left out where it is the schema's default, as ttnn's writer does
        return b.EndObject()

    def mesh_coordinate(values):
        return table([(0, "off", u32_vector(values))])

    shape = u32_vector(list(spec.shape))
    if spec.layout is Layout.TILE:
        tile = table([(0, "u32", TILE), (1, "u32", TILE)])
        page, page_type, alignment = table([(0, "off", tile)]), PAGE_TILE, [TILE, TILE]
    else:
        page, page_type, alignment = table([]), PAGE_ROW_MAJOR, [1]
    memory_config = table([])  # INTERLEAVED in DRAM: every field its default
    alignment = u32_vector(alignment)
    layout = table([(0, "u8", DTYPE_CODES[spec.dtype]), (1, "u8", page_type), (2, "off", page), (3, "off", memory_config),
                    (4, "off", alignment)])
    tensor_spec = table([(0, "off", shape), (1, "off", layout)])
    mesh_shape = table([(0, "off", u32_vector([1, 1]))])
    coord = mesh_coordinate([0, 0])
    b.Prep(8, 16)
    b.PrependUint64(size)
    b.PrependUint64(0)
    storage = b.Offset()
    shard = table([(0, "u8", INLINE_FILE_STORAGE), (1, "off", storage), (2, "off", coord)])
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(shard)
    shards = b.EndVector()
    distribution = table([(0, "off", u32_vector([1]))])
    placement = table([(0, "u8", REPLICATE), (1, "i32", -1)])
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(placement)
    placements = b.EndVector()
    topo_coord = mesh_coordinate([0, 0])
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(topo_coord)
    coords = b.EndVector()
    topology = table([(0, "off", distribution), (1, "off", placements), (2, "off", coords)])
    root = table([(0, "off", tensor_spec), (1, "off", mesh_shape), (2, "off", shards), (3, "off", topology)])
    b.Finish(root)
    return bytes(b.Output())


class _Reader:
    """Fields of one flatbuffer table, by slot, with bounds checked (a damaged file is a message, not a crash)."""

    def __init__(self, buf: bytearray, pos: int, path):
        self.buf, self.path = buf, path  # one bytearray for every table of a header (flatbuffers' Table wants one)
        try:
            self.t = Table(buf, pos)
            self.t.Offset(4)  # reads the vtable
        except (struct.error, IndexError):
            _fail(path, "its header is not a ttnn tensor header (a damaged or truncated file).")

    def _at(self, slot: int) -> int:
        try:
            return self.t.Offset(4 + 2 * slot)
        except (struct.error, IndexError):
            _fail(self.path, "its header is not a ttnn tensor header (a damaged or truncated file).")

    def scalar(self, slot: int, fmt: str, default=0):
        o = self._at(slot)
        return default if o == 0 else struct.unpack_from("<" + fmt, self.buf, self.t.Pos + o)[0]

    def table(self, slot: int) -> _Reader | None:
        o = self._at(slot)
        return None if o == 0 else _Reader(self.buf, self.t.Indirect(self.t.Pos + o), self.path)

    def vector_pos(self, slot: int) -> tuple[int, int]:
        o = self._at(slot)
        if o == 0:
            return 0, 0
        return self.t.Vector(o), self.t.VectorLen(o)

    def u32s(self, slot: int) -> list[int]:
        pos, n = self.vector_pos(slot)
        return list(struct.unpack_from(f"<{n}I", self.buf, pos)) if n else []

    def tables(self, slot: int) -> list[_Reader]:
        pos, n = self.vector_pos(slot)
        return [_Reader(self.buf, self.t.Indirect(pos + 4 * i), self.path) for i in range(n)]


def read_tensor(path) -> tuple[object, TensorSpec]:
    """(the tensor, its TensorSpec) from a .tensorbin file ttnn.dump_tensor (or ttjax.dump_tensor) wrote."""
    path = Path(path)
    if not path.is_file():
        raise TTJaxError(f"{path}: no such file." if not path.exists() else f"{path}: not a file.")
    blob = path.read_bytes()
    if len(blob) < 8:
        _fail(path, f"is {len(blob)} bytes, too short for a ttnn tensor file (8-byte header size, header, data).")
    (header_size,) = struct.unpack_from("<Q", blob, 0)
    if header_size < 8 or 8 + header_size > len(blob):
        _fail(path, f"is not a ttnn tensor file: its header size {header_size} does not fit its {len(blob)} bytes.")
    header = bytearray(blob[8 : 8 + header_size])
    root = _Reader(header, struct.unpack_from("<I", header, 0)[0], path)
    spec_t = root.table(0)
    layout_t = spec_t.table(1) if spec_t is not None else None
    if layout_t is None:
        _fail(path, "is not a ttnn tensor file: its header has no tensor spec.")
    shape = tuple(spec_t.u32s(0))
    code = layout_t.scalar(0, "B")
    dtype = {v: k for k, v in DTYPE_CODES.items()}.get(code)
    if dtype not in SUPPORTED:
        _fail(path, f"holds a tensor of data type {dtype or code} ({code}); ttjax reads {', '.join(SUPPORTED)}.")
    page_type = layout_t.scalar(1, "B")
    if page_type not in (PAGE_ROW_MAJOR, PAGE_TILE):
        _fail(path, f"has page config type {page_type}; ttnn writes 1 (row major) or 2 (tile).")
    layout = Layout.TILE if page_type == PAGE_TILE else Layout.ROW_MAJOR
    if layout is Layout.TILE:
        tile = layout_t.table(2).table(0) if layout_t.table(2) is not None else None
        hw = (tile.scalar(0, "I"), tile.scalar(1, "I")) if tile is not None else (TILE, TILE)
        if hw != (TILE, TILE) or (tile is not None and tile.scalar(2, "?", False)):
            _fail(path, f"uses {hw[0]}x{hw[1]} tiles; ttjax reads 32x32 tiles (not transposed).")
    shards = root.tables(2)
    mesh = root.table(1).u32s(0) if root.table(1) is not None else []
    if not shards:
        _fail(path, "holds no tensor data (its header lists no shards).")
    storages = set()
    for shard in shards:
        if shard.scalar(0, "B") != INLINE_FILE_STORAGE:
            _fail(path, "keeps its data outside the file; ttjax reads inline storage only.")
        storages.add(struct.unpack_from("<QQ", header, shard.t.Indirect(shard.t.Pos + shard._at(1))))
    if len(storages) != 1:  # a replicated tensor's shards all point at one buffer (ttnn writes it once)
        _fail(path, f"holds a tensor sharded over a {'x'.join(map(str, mesh))} mesh ({len(storages)} different shards); "
                    "ttjax reads host and replicated tensors (gather a sharded one before dumping it).")
    offset, size = storages.pop()
    data_start = 8 + header_size
    if data_start + offset + size > len(blob):
        _fail(path, f"is truncated: its data ends at byte {data_start + offset + size} but the file has {len(blob)}.")
    value = tensor_from_bytes(blob[data_start + offset : data_start + offset + size], dtype, shape, layout, path)
    return value, TensorSpec(shape, dtype, DRAM_MEMORY_CONFIG, layout)


def load_tensor(path):
    """ttnn.load_tensor for host tensors: a BlockFloatTensor (bfloat8_b, bfloat4_b) or a jax array."""
    return read_tensor(path)[0]


def dump_tensor(path, tensor, *, layout: Layout | None = None) -> None:
    """ttnn.dump_tensor: tensor (an array in bfloat16 or float32, or a BlockFloatTensor) written as a host tensor in
    layout (default: TILE for block floats, ROW_MAJOR otherwise, as ttnn.from_torch's default)."""
    path = Path(path)
    if path.suffix != ".tensorbin":
        raise TTJaxError(f"File {path} must have .tensorbin extension (as ttnn requires).")
    layout = layout or (Layout.TILE if isinstance(tensor, BlockFloatTensor) else Layout.ROW_MAJOR)
    dtype, shape, data = tensor_bytes(tensor, layout)
    header = tensor_header(TensorSpec(shape, dtype, DRAM_MEMORY_CONFIG, layout), len(data))
    padded = -(-(8 + len(header)) // ALIGNMENT) * ALIGNMENT - 8
    path.write_bytes(struct.pack("<Q", padded) + header + bytes(padded - len(header)) + data)

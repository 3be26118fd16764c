"""GGUF checkpoints (llama.cpp): metadata -> ModelArgs, tensors dequantized -> Meta-named state dict.

GGUF stores wq/wk in Meta's interleaved rotary layout already (llama.cpp permutes HF weights
on conversion), so no rotary permutation happens here.

The header (metadata and tensor table) is parsed here with struct, in a few tens of milliseconds: the gguf
package's GGUFReader makes a numpy view per array element and takes seconds over a tokenizer's 100,000 strings.
Tensor data stays in the file (np.memmap) until a tensor is read. F32, F16, BF16, Q4_0, Q4_1 and Q8_0 are
dequantized here (vectorised over the whole tensor, the same float32 arithmetic as the gguf package, so the same
bits); the other types go through gguf.quants.dequantize.
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
import sys
from dataclasses import dataclass

import numpy as np
from model.progress import progress as progress_of

from model.checkpoint.state_dict import LazyTensor, materialize
from model.config import ModelArgs, RopeScaling, require
from model.errors import CheckpointError, ConfigError

_LAYER_NAMES = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_GLOBAL_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}

# GGUF value types (gguf.GGUFValueType) and their little-endian layouts.
_STRING, _ARRAY = 8, 9
_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRUCT = {k: struct.Struct("<" + c) for k, c in zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd")}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

# ggml types read here: (values a block, bytes a block). The rest: gguf.constants.GGML_QUANT_SIZES.
F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30
_SIZES = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q8_0: (32, 34), BF16: (1, 2)}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: its ggml type, numpy-order shape and where its bytes are."""

    name: str
    tensor_type: int  # a gguf.GGMLQuantizationType value
    shape: tuple[int, ...]  # numpy order (GGUF lists dims innermost first)
    data_offset: int  # from the start of the file
    n_bytes: int


class GGUFFile:
    """A GGUF file's metadata (as gguf's ReaderField.contents gives it) and tensor table; data read on demand."""

    def __init__(self, path: str, metadata: dict, tensors: list[GGUFTensor]):
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self.by_name = {t.name: t for t in tensors}

    def raw(self, t: GGUFTensor) -> np.ndarray:
        """The tensor's bytes, read from the file into memory of its own. Not a view of a mapped file: the pages of a
        mapping stay in the process's resident memory until it ends, so loading a model through one would hold the
        whole file besides the converted weights (1.3 GB more at Llama-3.2-1B in Q8_0, 8.5 GB at Llama-3.1-8B)."""
        buf = np.empty(t.n_bytes, np.uint8)
        with open(self.path, "rb") as f:
            f.seek(t.data_offset)
            got = f.readinto(buf)
        if got != t.n_bytes:
            raise CheckpointError(f"tensor {t.name!r} of {self.path} ends past the end of the file, so it is truncated or corrupt.")
        return buf

    def read(self, t: GGUFTensor) -> np.ndarray:
        """The tensor dequantized to float32 (a view of the file for F32 tensors)."""
        try:
            return dequantize(self.raw(t), t.tensor_type, t.shape)
        except NotImplementedError as e:
            raise CheckpointError(
                f"tensor {t.name!r} of {self.path} is stored as {_type_name(t.tensor_type)}, which the gguf package cannot "
                "dequantize; ttjax reads F32, F16, BF16 and the quantizations gguf implements (Q4_0, Q4_1, Q8_0, the K and IQ types)."
            ) from e
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"tensor {t.name!r} of {self.path} ({_type_name(t.tensor_type)}) cannot be decoded, so the file is corrupt: {e}."
            ) from e


class TensorSlices:
    """One tensor's bytes read into memory once, dequantized a range of rows or of columns at a time (whole
    quantization blocks), so that a weight converts chunk by chunk with its quantized bytes and one float32
    chunk in memory instead of the whole weight in float32 (1 GB for Llama 3's embedding)."""

    def __init__(self, reader: GGUFFile, t: GGUFTensor):
        self.reader, self.t = reader, t
        self.block, self.nbytes = _block_sizes(t.tensor_type)  # values and bytes a block along the last dim
        self.raw = reader.raw(t).reshape(t.shape[0], -1) if len(t.shape) == 2 else None

    def rows(self, r0: int, r1: int) -> np.ndarray:
        return self._decode(self.raw[r0:r1], (r1 - r0, self.t.shape[1]))

    def columns(self, c0: int, c1: int) -> np.ndarray:
        """Columns [c0, c1) of every row; c0 and c1 on block boundaries (or c1 the last column)."""
        b0, b1 = c0 // self.block, -(-c1 // self.block)
        return self._decode(np.ascontiguousarray(self.raw[:, b0 * self.nbytes : b1 * self.nbytes]), (self.t.shape[0], c1 - c0))

    def _decode(self, raw, shape):
        try:
            return dequantize(raw.reshape(-1), self.t.tensor_type, shape)
        except Exception as e:
            raise CheckpointError(f"tensor {self.t.name!r} of {self.reader.path} ({_type_name(self.t.tensor_type)}) cannot be "
                                  f"decoded, so the file is corrupt: {e}.") from e


def _type_name(kind: int) -> str:
    import gguf

    try:
        return gguf.GGMLQuantizationType(kind).name
    except ValueError:
        return f"type {kind}"


def _block_sizes(kind: int) -> tuple[int, int]:
    if kind in _SIZES:
        return _SIZES[kind]
    import gguf

    return gguf.constants.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]


class _Header:
    """Little-endian GGUF header fields read from a buffer, each read checked against its end."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def unpack(self, s: struct.Struct):
        (value,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return value

    def string(self) -> str:
        n = self.unpack(_U64)
        end = self.pos + n
        if end > len(self.buf):
            raise CheckpointError(f"a string of {n} bytes runs past the end of the file")
        text = bytes(self.buf[self.pos : end]).decode("utf-8")
        self.pos = end
        return text

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind in _STRUCT:
            return self.unpack(_STRUCT[kind])
        if kind == _ARRAY:
            item, n = self.unpack(_U32), self.unpack(_U64)
            if item in _SCALARS:
                dtype = np.dtype(_SCALARS[item])
                if self.pos + n * dtype.itemsize > len(self.buf):
                    raise CheckpointError(f"an array of {n} values runs past the end of the file")
                out = np.frombuffer(self.buf, dtype, n, self.pos).tolist()
                self.pos += n * dtype.itemsize
                return out
            return [self.value(item) for _ in range(n)]
        raise CheckpointError(f"unknown GGUF value type {kind}")


def _parse(path: str) -> GGUFFile:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    try:
        h = _Header(buf)
        if bytes(buf[:4]) != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF file: it starts with {bytes(buf[:4])!r}, not b'GGUF'.")
        h.pos = 4
        version = h.unpack(_U32)
        if version & 0xFFFF == 0 or sys.byteorder != "little":
            return None  # a big-endian file (or host): the gguf package reads those
        if version not in (2, 3):
            raise CheckpointError(f"GGUF file {path} is version {version}; ttjax reads versions 2 and 3.")
        n_tensors, n_kv = h.unpack(_U64), h.unpack(_U64)
        meta = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
        for _ in range(n_kv):
            key = h.string()
            if key in meta:
                raise CheckpointError(f"key {key!r} appears twice")
            meta[key] = h.value(h.unpack(_U32))
        infos = []
        for _ in range(n_tensors):
            name = h.string()
            dims = [h.unpack(_U64) for _ in range(h.unpack(_U32))]
            infos.append((name, h.unpack(_U32), tuple(reversed(dims)), h.unpack(_U64)))
        alignment = meta.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"general.alignment {alignment!r} is not a power of two")
        start = -(-h.pos // alignment) * alignment
        tensors, seen = [], set()
        for name, kind, shape, offset in infos:
            if name in seen:
                raise CheckpointError(f"tensor {name!r} appears twice")
            seen.add(name)
            block, nbytes = _block_sizes(kind)
            n = int(np.prod(shape, dtype=np.int64))
            if shape and shape[-1] % block:
                raise CheckpointError(f"tensor {name!r} has rows of {shape[-1]} values, not a multiple of its block of {block}")
            t = GGUFTensor(name, kind, shape, start + offset, n // block * nbytes)
            if t.data_offset + t.n_bytes > size:
                raise CheckpointError(f"tensor {name!r} ends at byte {t.data_offset + t.n_bytes}, past the end of the file")
            tensors.append(t)
        return GGUFFile(path, meta, tensors)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _from_gguf_package(path: str) -> GGUFFile:
    """A big-endian file through gguf.GGUFReader (its fields and tensors as GGUFFile holds them)."""
    import gguf

    reader = gguf.GGUFReader(path)
    meta = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = field.contents()
        except Exception:  # fields the gguf package cannot decode are not ones we read
            continue
    tensors = [GGUFTensor(t.name, int(t.tensor_type), tuple(int(n) for n in reversed(t.shape)), int(t.data_offset), int(t.n_bytes))
               for t in reader.tensors]
    out = GGUFFile(path, meta, tensors)
    data = {t.name: t.data for t in reader.tensors}
    out.raw = lambda t: np.asarray(data[t.name]).reshape(-1).view(np.uint8)
    return out


def open_gguf(path: str) -> GGUFFile:
    """The file's header, parsed once per process for a file unchanged since (the command reads the config, then
    the weights)."""
    try:
        st = os.stat(path)
        return _open(os.path.abspath(path), path, st.st_size, st.st_mtime_ns)
    except CheckpointError:
        raise
    except OSError as e:
        raise CheckpointError(f"GGUF file {path} cannot be read: {e}.") from e


@functools.lru_cache(maxsize=4)
def _open(abspath: str, path: str, size: int, mtime_ns: int) -> GGUFFile:
    try:
        parsed = _parse(path)
        return parsed if parsed is not None else _from_gguf_package(path)
    except Exception as e:
        if isinstance(e, CheckpointError) and "is not a GGUF file" in str(e):
            raise
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF file: it starts with {magic!r}, not b'GGUF'.") from e
        size = os.path.getsize(path)
        raise CheckpointError(f"GGUF file {path} ({size} bytes) is truncated or corrupt: {e}.") from e


def metadata(reader: GGUFFile) -> dict:
    return dict(reader.metadata)


# Dequantization: whole tensors, a slab of blocks at a time, written into one float32 array. The arithmetic is the
# gguf package's (gguf/quants.py), operation for operation, so the values are the same bits.
_SLAB = 1 << 16  # blocks a step


def _f16(cols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cols).view(np.float16).astype(np.float32)


def _q8_0(b, out):
    np.multiply(b[:, 2:].view(np.int8).astype(np.float32), _f16(b[:, 0:2]), out=out)


def _q4_0(b, out):
    out[:, :16], out[:, 16:] = b[:, 2:] & 0x0F, b[:, 2:] >> 4
    out -= 8
    np.multiply(_f16(b[:, 0:2]), out, out=out)


def _q4_1(b, out):
    out[:, :16], out[:, 16:] = b[:, 4:] & 0x0F, b[:, 4:] >> 4
    np.multiply(_f16(b[:, 0:2]), out, out=out)
    out += _f16(b[:, 2:4])


_BLOCKWISE = {Q8_0: _q8_0, Q4_0: _q4_0, Q4_1: _q4_1}


def dequantize(raw: np.ndarray, kind: int, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor's bytes (uint8) -> float32 values of `shape` (numpy order)."""
    if kind == F32:
        return raw.view(np.float32).reshape(shape)
    if kind == F16:
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    if kind == BF16:
        return (raw.view(np.int16).astype(np.int32) << 16).view(np.float32).reshape(shape)
    if kind in _BLOCKWISE:
        block, nbytes = _SIZES[kind]
        blocks = raw.reshape(-1, nbytes)
        out = np.empty((blocks.shape[0], block), np.float32)
        for s in range(0, blocks.shape[0], _SLAB):
            _BLOCKWISE[kind](np.asarray(blocks[s : s + _SLAB]), out[s : s + _SLAB])
        return out.reshape(shape)
    import gguf

    qtype = gguf.GGMLQuantizationType(kind)
    rows = raw.reshape(*shape[:-1], -1) if shape else raw
    return gguf.quants.dequantize(np.asarray(rows), qtype).reshape(shape)


def args_from_metadata(meta: dict, path: str, *, tensor_names: set[str], max_seq_len=None, max_batch_size=1) -> ModelArgs:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"GGUF file {path} holds a {arch!r} model; ttjax runs 'llama' models.")
    src = f"GGUF metadata of {path}"

    def get(key, default=None):
        full = f"llama.{key}"
        return require(meta, full, src) if default is None else meta.get(full, default)

    dim = int(get("embedding_length"))
    n_heads = int(get("attention.head_count"))
    head_dim = int(meta.get("llama.attention.key_length", dim // n_heads))
    context = int(get("context_length"))
    scaling = None
    kind = meta.get("llama.rope.scaling.type", "none")
    if kind == "linear":
        scaling = RopeScaling(rope_type="linear", factor=float(require(meta, "llama.rope.scaling.factor", src)))
    elif kind != "none":  # llama3 scaling arrives as the rope_freqs tensor, with no scaling type
        raise ConfigError(f"{src} asks for rope scaling {kind!r}; supported: 'none', 'linear' (and llama3's rope_freqs).")
    vocab = meta.get("llama.vocab_size", len(meta.get("tokenizer.ggml.tokens", ())))
    if not vocab:
        raise CheckpointError(f"{src} has neither llama.vocab_size nor a tokenizer vocabulary.")
    return ModelArgs(
        dim=dim,
        n_layers=int(get("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        hidden_dim=int(get("feed_forward_length")),
        vocab_size=int(vocab),
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_context_len=context,
        max_seq_len=int(context if max_seq_len is None else max_seq_len),
        max_batch_size=max_batch_size,
        tie_word_embeddings="output.weight" not in tensor_names,
        model_name=str(meta.get("general.name", os.path.basename(path))),
    )


def _meta_name(gguf_name: str) -> str | None:
    base, _, suffix = gguf_name.rpartition(".")
    if base.startswith("blk."):
        _, layer, kind = base.split(".", 2)
        return f"layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}" if kind in _LAYER_NAMES else None
    return f"{_GLOBAL_NAMES[base]}.{suffix}" if base in _GLOBAL_NAMES else None


def gguf_args(reader: GGUFFile, *, max_seq_len=None, max_batch_size=1) -> ModelArgs:
    """ModelArgs from the metadata, with llama3 rope scaling from the rope_freqs tensor (a few hundred bytes)."""
    args = args_from_metadata(reader.metadata, reader.path, tensor_names=set(reader.by_name), max_seq_len=max_seq_len,
                              max_batch_size=max_batch_size)
    if "rope_freqs.weight" in reader.by_name:
        freqs = reader.read(reader.by_name["rope_freqs.weight"])
        args = args.replace(rope_freq_factors=tuple(float(v) for v in np.asarray(freqs, np.float32).reshape(-1)))
    return args


def _slices_ok(t: GGUFTensor) -> bool:
    """A 2-D tensor whose rows are whole blocks of a type dequantize reads."""
    try:
        block, _ = _block_sizes(t.tensor_type)
    except (ValueError, KeyError):
        return False
    return t.shape[1] % block == 0


def lazy_gguf(path: str, *, max_seq_len=None, max_batch_size=1):
    """(ModelArgs, state dict of LazyTensors, metadata, GGUFFile): nothing but the header and rope_freqs read."""
    reader = open_gguf(path)
    args = gguf_args(reader, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    state = {}
    for t in reader.tensors:
        name = _meta_name(t.name)
        if name is not None:
            slices = (lambda t=t: TensorSlices(reader, t)) if len(t.shape) == 2 and _slices_ok(t) else None
            state[name] = LazyTensor(t.shape, lambda t=t: reader.read(t), slices=slices,
                                     block=_block_sizes(t.tensor_type)[0] if slices else 1)
    return args, state, reader.metadata, reader


def read_gguf(path: str, *, max_seq_len=None, max_batch_size=1, progress=True):
    """(ModelArgs, state dict, metadata) from a GGUF file; quantized tensors are dequantized to float32."""
    args, state, meta, _ = lazy_gguf(path, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    names = progress_of(list(state), f"loading {os.path.basename(path)}", enabled=progress, unit="tensor")
    return args, materialize({k: state[k] for k in names}), meta

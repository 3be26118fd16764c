"""Parameters: the pytrees, and one spec that declares every weight once.

`param_specs(args)` is a TransformerParams whose leaves are WeightSpecs: each weight's logical
shape (TT's [K, N] for matmuls), its tensor group (so its precision, per layer), how it splits on
a mesh (column- or row-parallel, replicated, or the embedding's split of the model dim), the
per-device layout it is rearranged into before the split, and the Meta state-dict tensors it is
made from. Everything that builds a params tree derives from it with jax.tree.map:

- `convert_params`   every weight in its group's dtype (bfloat8_b / bfloat4_b compact), one device;
- `convert_weight`   the same for one weight, made from its rows chunk by chunk (loading straight into compact storage);
- `model.sharding.shard_params` / `abstract_params`   the per-device weights on a mesh, or their shapes;
- `model.checkpoint.state_dict.params_from_state_dict`   a Meta-named state dict -> params;
- `model.checkpoint.dummy.dummy_weights`   random weights of the right shapes.

So a new weight, or a new precision rule, changes one place. The LM head is a weight of its own
([dim, vocab], a copy of the embedding's transpose when the checkpoint ties them, as tt-metal
stores it apart) and, placed, a list of column chunks of at most max_columns_per_device_lm_head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from model.config import TILE_SIZE as TILE, ModelArgs
from model.errors import ConfigError
from model.precision import TensorGroup, storage_dtype

# How a weight splits on a mesh (model.sharding holds the mappers; model.model_config the two schemes).
REPLICATED = "replicated"  # every device holds all of it (norms)
COLUMN = "column"  # N over the head axis; on 2D meshes K over the columns (wqkv, w1, w3, LM head)
ROW = "row"  # K over the head axis; on 2D meshes N over the columns (wo, w2)
EMBEDDING = "embedding"  # the model dim over the axis the residual stream is fractured on (or replicated)


@jax.tree_util.register_dataclass
@dataclass
class AttentionParams:
    wqkv: jax.Array  # [dim, (n_heads + 2 * n_kv_heads) * head_dim]
    wo: jax.Array  # [n_heads * head_dim, dim]


@jax.tree_util.register_dataclass
@dataclass
class MLPParams:
    w1: jax.Array  # [dim, hidden_dim]  gate
    w2: jax.Array  # [hidden_dim, dim]  down
    w3: jax.Array  # [dim, hidden_dim]  up


@jax.tree_util.register_dataclass
@dataclass
class DecoderParams:
    attention_norm: jax.Array  # [dim]
    attention: AttentionParams
    ffn_norm: jax.Array  # [dim]
    feed_forward: MLPParams


@jax.tree_util.register_dataclass
@dataclass
class TransformerParams:
    tok_embeddings: jax.Array  # [vocab, dim]
    layers: list[DecoderParams]
    norm: jax.Array  # [dim]
    output: jax.Array | list[jax.Array]  # [dim, vocab]; placed, its column chunks (model.lm_head)


@dataclass(frozen=True)
class WeightSpec:
    """One weight, declared once. A leaf of the spec tree (not a pytree node)."""

    shape: tuple[int, ...]  # logical, unsharded
    group: TensorGroup | None  # precision group; None: the activation dtype (norms)
    layer: int | None  # decoder layer, for per-layer precision overrides
    split: str  # REPLICATED | COLUMN | ROW | EMBEDDING
    layout: str | None = None  # per-device rearrangement before the split (model.sharding.LAYOUTS)
    # Meta state-dict tensors ([out, in] for matmuls) whose rows stack into this weight, with their shapes.
    source: tuple[tuple[str, tuple[int, ...]], ...] = field(default=(), compare=False)
    transpose: bool = False  # [out, in] -> TT's [K, N]
    init: str = "normal"  # dummy weights: "normal" or "ones"

    def dtype(self, args: ModelArgs):
        """The storage dtype: a jnp dtype, or ttjax.bfloat8_b / bfloat4_b."""
        if self.group is None:
            return args.activation_dtype
        return storage_dtype(args.optimizations.get_tensor_dtype(self.group, self.layer))


def param_specs(args: ModelArgs) -> TransformerParams:
    """The spec tree: a TransformerParams whose leaves are WeightSpecs."""
    d, hd, h = args.dim, args.head_dim, args.hidden_dim
    q, kv = args.n_heads * hd, args.n_kv_heads * hd

    def norm(name: str, layer=None):
        return WeightSpec((d,), None, layer, REPLICATED, source=((name, (d,)),), init="ones")

    def matmul(k, n, group, split, layout, layer, *source):
        return WeightSpec((k, n), group, layer, split, layout, source, transpose=True)

    def decoder(i: int) -> DecoderParams:
        p = f"layers.{i}."
        return DecoderParams(
            attention_norm=norm(p + "attention_norm.weight", i),
            attention=AttentionParams(
                wqkv=matmul(d, q + 2 * kv, TensorGroup.WQKV, COLUMN, "wqkv", i,
                            (p + "attention.wq.weight", (q, d)), (p + "attention.wk.weight", (kv, d)), (p + "attention.wv.weight", (kv, d))),
                wo=matmul(q, d, TensorGroup.WO, ROW, "wo", i, (p + "attention.wo.weight", (d, q))),
            ),
            ffn_norm=norm(p + "ffn_norm.weight", i),
            feed_forward=MLPParams(
                w1=matmul(d, h, TensorGroup.FF1_FF3, COLUMN, "hidden", i, (p + "feed_forward.w1.weight", (h, d))),
                w2=matmul(h, d, TensorGroup.FF2, ROW, "hidden", i, (p + "feed_forward.w2.weight", (d, h))),
                w3=matmul(d, h, TensorGroup.FF1_FF3, COLUMN, "hidden", i, (p + "feed_forward.w3.weight", (h, d))),
            ),
        )

    head = "tok_embeddings.weight" if args.tie_word_embeddings else "output.weight"
    return TransformerParams(
        tok_embeddings=WeightSpec((args.vocab_size, d), TensorGroup.EMBEDDING, None, EMBEDDING,
                                  source=(("tok_embeddings.weight", (args.vocab_size, d)),)),
        layers=[decoder(i) for i in range(args.n_layers)],
        norm=norm("norm.weight"),
        output=matmul(d, args.vocab_size, TensorGroup.LM_HEAD, COLUMN, "vocab", None, (head, (args.vocab_size, d))),
    )


def map_specs(fn, args: ModelArgs, *trees):
    """jax.tree.map of fn(spec, *leaves) over the spec tree of args and params trees of the same structure."""
    return jax.tree.map(fn, param_specs(args), *trees)


def to_dtype(a, dtype):
    """An array (host or device) in a storage dtype: a jnp array, or a BlockFloatTensor. A weight already stored in
    that dtype is returned as it is; one stored in another block format is refused (converting it would round twice)."""
    from ttjax.blockfloat import BlockFloatTensor, block_format, to_block_float

    fmt = block_format(dtype)
    if isinstance(a, BlockFloatTensor):
        if a.fmt is not fmt:
            raise ConfigError(f"a weight stored as {a.fmt.name} cannot be converted to {getattr(dtype, 'name', dtype)}; "
                              "load the checkpoint again in that precision.")
        return a
    if fmt is not None:  # encoded on the host, then placed: a numpy leaf would be copied in at every call of a program
        return jax.tree.map(jax.device_put, to_block_float(np.asarray(a, np.float32), dtype))
    if isinstance(a, jax.Array):
        return a.astype(dtype)
    return jax.device_put(np.asarray(a, dtype=dtype))  # cast on the host; faster than jnp.asarray, the same values


def lm_head_chunks(output, args: ModelArgs) -> list:
    """The LM head's column chunks of args.layout.lm_head_splits (one device's vocab, tt-metal's split_sizes)."""
    starts = np.cumsum([0, *args.layout.lm_head_splits])
    return [output[:, a:b] for a, b in zip(starts[:-1], starts[1:])]


def convert_params(params: TransformerParams, args: ModelArgs) -> TransformerParams:
    """Unsharded params with every weight in its group's dtype (per layer), the LM head in its chunks."""

    def convert(spec: WeightSpec, a):
        if spec.layout == "vocab":
            if isinstance(a, list):  # already in its chunks (convert_weight, or a params cache)
                widths = [c.shape[-1] for c in a]
                if widths != list(args.layout.lm_head_splits):
                    raise ConfigError(f"the LM head arrives in chunks of {widths} columns; this layout needs "
                                      f"{list(args.layout.lm_head_splits)}.")
                return [to_dtype(c, spec.dtype(args)) for c in a]
            return [to_dtype(c, spec.dtype(args)) for c in lm_head_chunks(np.asarray(a), args)]
        return to_dtype(a, spec.dtype(args))

    return map_specs(convert, args, params)


# Weight by weight: a weight is made, read and converted in chunks of whole tiles of rows, so that converting a
# model holds its storage plus one chunk of float32 (model.checkpoint.placed builds params this way).
CHUNK_BYTES = 32 << 20  # float32 bytes of one chunk of rows


def row_chunks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """The row ranges [r0, r1) a weight is made and converted in: multiples of 32 rows (a tile), about CHUNK_BYTES of
    float32 each; a vector is one chunk. A function of the shape alone, so dummy weights come out the same whichever
    path makes them."""
    if len(shape) != 2:
        return [(0, shape[0] if shape else 1)]
    rows, cols = shape
    step = max(TILE, CHUNK_BYTES // (4 * cols) // TILE * TILE)
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def _rows_of(values):
    """values: a float32 array [K, N] (numpy or jax), or already a function rows(r0, r1)."""
    return values if callable(values) else (lambda r0, r1: values[r0:r1])


class _ArrayRows:
    """A weight in a plain dtype assembled from its rows, chunk by chunk: host chunks (a checkpoint's) into a host
    array placed at the end, device chunks (dummy values) into a device buffer written in place."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.buf = tuple(shape), jnp.dtype(dtype), None

    def write(self, r0: int, x):
        if r0 < 0 or x.shape[0] + r0 > self.shape[0] or tuple(x.shape[1:]) != self.shape[1:]:
            raise ConfigError(f"rows {r0}..{r0 + x.shape[0]} of shape {tuple(x.shape)} do not fit a weight of shape {self.shape}.")
        if isinstance(x, jax.Array):
            if self.buf is None and x.shape == self.shape:
                self.buf = x.astype(self.dtype)
                return
            if self.buf is None:
                self.buf = jnp.zeros(self.shape, self.dtype)
            self.buf = _write_rows(self.buf, x.astype(self.dtype), r0)
            return
        if self.buf is None:
            self.buf = np.empty(self.shape, self.dtype)
        self.buf[r0 : r0 + x.shape[0]] = np.asarray(x, np.float32)  # cast on the host, as jnp.asarray(x, dtype) does

    def result(self):
        return jax.device_put(self.buf) if isinstance(self.buf, np.ndarray) else self.buf


@partial(jax.jit, donate_argnums=0)
def _write_rows(buf, x, r0):
    return jax.lax.dynamic_update_slice(buf, x, (r0, 0))


def convert_weight(spec: WeightSpec, values, args: ModelArgs):
    """One weight in its group's dtype on the default device, as convert_params stores it (the LM head as its column
    chunks, block floats encoded exactly alike), made from float32 values chunk by chunk: values is the [K, N]
    array (numpy or jax), or a function rows(r0, r1) called once for each range of row_chunks(spec.shape)."""
    from ttjax.blockfloat import BlockFloatRows, block_format

    dtype, rows = spec.dtype(args), _rows_of(values)
    if len(spec.shape) != 2:
        return to_dtype(rows(0, spec.shape[0]), dtype)
    k, n = spec.shape
    if spec.layout == "vocab":
        starts = np.cumsum([0, *args.layout.lm_head_splits]).tolist()
        cols = list(zip(starts[:-1], starts[1:]))
    else:
        cols = [(0, n)]
    builders = [BlockFloatRows((k, b - a), dtype) if block_format(dtype) is not None else _ArrayRows((k, b - a), dtype)
                for a, b in cols]
    for r0, r1 in row_chunks(spec.shape):
        x = rows(r0, r1)
        for builder, (a, b) in zip(builders, cols):
            builder.write(r0, x if (a, b) == (0, n) else x[:, a:b])
        del x
    out = [b.result() for b in builders]
    return out if spec.layout == "vocab" else out[0]


def weight_nbytes(params) -> int:
    """Bytes the params occupy (summed over every device of a mesh)."""
    return sum(leaf.nbytes for leaf in jax.tree.leaves(params))


def held_nbytes(params) -> int:
    """Bytes of the params this process holds: its own devices' shards (all of them in a process alone)."""
    return sum(shard.data.nbytes for leaf in jax.tree.leaves(params) for shard in leaf.addressable_shards)

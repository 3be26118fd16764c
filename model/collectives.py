"""The collectives the placement rules (model.model_config) put in a decoder layer, with the bytes each moves: what
comm-report checks a compiled program against and what the device model prices.

Bytes are what one device sends (= receives) in a bandwidth-optimal ring, per step: all-gather (n-1)/n of its
output, reduce-scatter (n-1)/n of its input, all-reduce twice (n-1)/n of its buffer. A block-float payload counts at
its format's size: bfloat8_b 1088 bytes per 1024 values, bfloat4_b 576.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from model.ccl import ccl_format, scatter_ff1_ff3
from model.config import ModelArgs
from model.model_config import all_reduce_kind
from model.norm import uses_distributed_norm
from ttjax.blockfloat import FORMATS


def bytes_per_value(fmt: str) -> float:
    """Bytes a value takes in a format: a block float's sign + magnitude bits plus its share of the 16-value block's
    exponent byte (bfloat8_b: 1 + 1/16 = 1088 / 1024), or a float's item size."""
    if fmt in FORMATS:
        return (FORMATS[fmt].mantissa_bits + 1) / 8 + 1 / 16
    return np.dtype(jnp.dtype(fmt)).itemsize


@dataclass
class Collective:
    kind: str
    layer: int | None  # None: outside the decoder layers (embedding, final norm, LM head)
    group: int  # devices taking part
    payload_bytes: float  # output bytes (all operands of a merged op)
    fmt: str | None = None  # the format the payload is counted in (model.ccl's scope); None: the HLO's dtypes
    axis: int | None = None  # the mesh axis it runs on (the analytic list knows it; a compiled program's do not say)

    @property
    def moved_bytes(self) -> float:
        """Bytes one device sends per step."""
        n, b = self.group, self.payload_bytes
        if self.kind == "all-gather":
            return b * (n - 1) / n
        if self.kind == "reduce-scatter":
            return b * (n - 1)  # its input is n times its output
        return 2 * b * (n - 1) / n


def analytic_layer_collectives(args: ModelArgs, mode: str, tokens: int, itemsize: float | None = None) -> list[Collective]:
    """What the placement rules (model/model_config.py) put in one decoder layer, for `tokens` rows (the decode batch,
    or the prefill length). itemsize: bytes per activation value (None: the activation dtype's)."""
    lay, cfg = args.layout, args.model_config
    size = lay.axis_size
    item = np.dtype(jnp.dtype(args.activation_dtype)).itemsize if itemsize is None else itemsize
    out: list[Collective] = []

    def add(kind, axis, width, per_value=None):
        if size(axis) > 1:
            out.append(Collective(kind, 0, size(axis), tokens * width * (item if per_value is None else per_value), axis=axis))

    def norm():
        axis = lay.residual_axis
        if size(axis) == 1:
            return
        if uses_distributed_norm(args, mode):
            add("all-gather", axis, size(axis), 4)  # the statistics: one float32 sum of squares per device
            if not cfg.is_2d:
                add("all-gather", axis, args.dim)
        else:
            add("all-gather", axis, args.dim)

    def all_reduce(axis, width, site):
        """model.ccl.tt_all_reduce: 1D one all-reduce; 2D as all_reduce_kind says, in ccl_dtype at its sites."""
        n = size(axis)
        if n == 1:
            return
        if not cfg.is_2d:
            add("all-reduce", axis, width)
            return
        fmt = ccl_format(args, site)
        per = bytes_per_value(fmt) if fmt else None
        kind = all_reduce_kind(cfg, args.dim, site, mode)
        if kind == "all_reduce":
            add("all-reduce", axis, width, per)
        elif kind == "composite":
            add("reduce-scatter", axis, width // n, per)
            add("all-gather", axis, width, per)
        else:  # all-gather on a new leading dim, then a local sum
            add("all-gather", axis, n * width, per)

    def row_parallel(site):
        axis = lay.heads_axis
        if cfg.is_2d:
            all_reduce(axis, args.dim // size(lay.dim_axis), site)
        elif lay.residual_axis is None:
            all_reduce(axis, args.dim, site)
        else:
            add("reduce-scatter", axis, args.dim // size(axis))

    heads = lay.n_local_heads * args.head_dim
    norm()
    all_reduce(lay.dim_axis, (lay.n_local_heads + 2 * lay.n_local_kv_heads) * args.head_dim, "qkv")
    if mode == "decode" and lay.user_groups(tokens) > 1:
        add("all-gather", 1, heads)  # each column's users, gathered before wo
    if lay.wo_gathered:
        add("all-gather", lay.heads_axis, lay.n_shards * heads)  # all_gather_matmul: wo column-parallel, no reduction
    else:
        row_parallel("wo")
    norm()
    if scatter_ff1_ff3(args, mode):
        cols = size(lay.dim_axis)
        add("reduce-scatter", lay.dim_axis, lay.hidden_local // cols)
        add("reduce-scatter", lay.dim_axis, lay.hidden_local // cols)
        add("all-gather", lay.dim_axis, lay.hidden_local)
    else:
        all_reduce(lay.dim_axis, lay.hidden_local, "ff1_ff3")
        all_reduce(lay.dim_axis, lay.hidden_local, "ff1_ff3")
    row_parallel("ff2")
    return out

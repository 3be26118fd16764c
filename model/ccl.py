"""Where the collectives go: the placement-aware steps between the modules' matmuls (tt-metal's ccl.py).

Each helper reads the mesh layout from args and is the identity when the mesh axis it uses
has one device, so the same module code runs unsharded and on any mesh (see model_config
for the two schemes and all_reduce_kind for the choice of all-reduce on a 2D mesh).

On a 2D mesh (a Galaxy) tt_all_reduce first casts its input to the dtype its caller passes, ccl_dtype
(bfloat8_b in tt's presets) at the wqkv, wo, w2 and LM head reductions: those inputs are rounded to
output_dtype(args, OutputSite.CCL) and carried as bfloat16 (XLA's collectives cannot carry a block
float). Every collective here runs under the named scope CCL_SCOPE + the format its payload is in (the
CCL format, else the tensor's dtype), so that comm-report counts payloads at that size: XLA:CPU itself
carries bfloat16 collectives as float32 and may move casts across them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import ttjax
from model.config import ModelArgs
from model.model_config import CCL_DTYPE_SITES, all_reduce_kind
from model.precision import OutputSite, output_dtype, to_output
from ttjax.blockfloat import block_format
from ttjax.ccl import Topology

CCL_SCOPE = "ccl_"  # + "bfloat8_b", "bfloat4_b", "bfloat16", "float32": the format a collective's payload is in


def _ccl_kwargs(args: ModelArgs) -> dict:
    cfg = args.model_config
    return dict(num_links=cfg.num_links, topology=Topology.Ring if cfg.topology == "ring" else Topology.Linear)


def ccl_format(args: ModelArgs, site: str) -> str | None:
    """The format a reduction's input is rounded to and counted in (2D meshes, sites tt runs in ccl_dtype), or None."""
    if not args.model_config.is_2d or site not in CCL_DTYPE_SITES:
        return None
    dtype = output_dtype(args, OutputSite.CCL)
    if dtype is None:
        return None
    fmt = block_format(dtype)
    return fmt.name if fmt is not None else jnp.dtype(dtype).name


def _scope(x, fmt: str | None = None):
    """The named scope a collective runs under: the format its payload is counted in."""
    return jax.named_scope(CCL_SCOPE + (fmt or jnp.dtype(x.dtype).name))


def _carried(x, args: ModelArgs, fmt: str):
    """x rounded to the CCL format, as the collective carries it: block floats and bfloat16 as bfloat16."""
    x = to_output(x, args, OutputSite.CCL)
    return x.astype(jnp.float32 if fmt == "float32" else jnp.bfloat16)


def tt_all_reduce(x, args: ModelArgs, cluster_axis: int | None, *, site: str = "qkv", mode: str = "decode"):
    """The sum of x over the devices of cluster_axis, done the way tt_transformers' tt_all_reduce does it on a 2D
    mesh for this call site (model_config.all_reduce_kind): all-gather + local sum, reduce-scatter + all-gather
    along the last dim, or one all-reduce. On a 1D mesh: one all-reduce (ttjax's ccl="all_reduce")."""
    n = args.layout.axis_size(cluster_axis)
    if n == 1:
        return x
    kw = _ccl_kwargs(args)
    if not args.model_config.is_2d:
        with _scope(x):
            return ttjax.all_reduce(x, cluster_axis=cluster_axis, **kw)
    kind = all_reduce_kind(args.model_config, args.dim, site, mode)
    fmt = ccl_format(args, site)
    dtype = x.dtype
    if fmt is not None:
        x = _carried(x, args, fmt)
    with _scope(x, fmt):
        if kind == "all_reduce":
            out = ttjax.all_reduce(x, cluster_axis=cluster_axis, **kw)
        elif kind == "composite":
            scattered = ttjax.reduce_scatter(x, x.ndim - 1, cluster_axis=cluster_axis, **kw)
            out = ttjax.all_gather(scattered, scattered.ndim - 1, cluster_axis=cluster_axis, **kw)
        else:  # all_gather_async on a new leading dim, then fast_reduce_nc over it
            out = ttjax.all_gather(x[None], 0, cluster_axis=cluster_axis, **kw)
    if kind == "gather":
        return out.astype(dtype).sum(0).astype(dtype)
    return out.astype(dtype)


def tt_all_gather(x, args: ModelArgs, dim: int, cluster_axis: int | None):
    if args.layout.axis_size(cluster_axis) == 1:
        return x
    with _scope(x):
        return ttjax.all_gather(x, dim, cluster_axis=cluster_axis, **_ccl_kwargs(args))


def tt_reduce_scatter(x, args: ModelArgs, dim: int, cluster_axis: int | None):
    if args.layout.axis_size(cluster_axis) == 1:
        return x
    with _scope(x):
        return ttjax.reduce_scatter(x, dim, cluster_axis=cluster_axis, **_ccl_kwargs(args))


def reduce_qkv(x, args: ModelArgs, mode: str):
    """After wqkv (K, the model dim, split over the mesh columns on 2D meshes): tt's all-reduce over axis 1."""
    return tt_all_reduce(x, args, args.layout.dim_axis, site="qkv", mode=mode)


def scatter_ff1_ff3(args: ModelArgs, mode: str) -> bool:
    """Whether w1 / w3 are reduce-scattered over the columns (and their product all-gathered before w2) rather than
    all-reduced: tt's mlp.py on TG in prefill or when dim == 8192."""
    lay = args.layout
    return lay.axis_size(lay.dim_axis) > 1 and all_reduce_kind(args.model_config, args.dim, "ff1_ff3", mode) == "scatter"


def reduce_ff1_ff3(x, args: ModelArgs, mode: str):
    """After w1 or w3: all-reduced over the columns, or reduce-scattered when scatter_ff1_ff3."""
    axis = args.layout.dim_axis
    if scatter_ff1_ff3(args, mode):
        return tt_reduce_scatter(x, args, x.ndim - 1, axis)
    return tt_all_reduce(x, args, axis, site="ff1_ff3", mode=mode)


def gather_ff2_input(x, args: ModelArgs, mode: str):
    """Before w2: the SiLU product all-gathered over the columns when w1 / w3 were reduce-scattered."""
    return tt_all_gather(x, args, x.ndim - 1, args.layout.dim_axis) if scatter_ff1_ff3(args, mode) else x


def reduce_k_split(x, args: ModelArgs):
    """After the LM head (K, the model dim, split over the mesh columns on 2D meshes): sum the partials (tt's lm_head:
    tt_all_reduce over axis 1 with use_composite=True, in ccl_dtype)."""
    return tt_all_reduce(x, args, args.layout.dim_axis, site="lm_head")


def reduce_row_parallel(x, args: ModelArgs, site: str = "ff2", mode: str = "decode"):
    """After wo / w2 (K split over the head axis): partial sums -> the residual stream's layout. 1D: reduce-scatter
    (tt's N300/T3K tt_all_reduce) or, with ccl="all_reduce", an all-reduce; 2D: tt_all_reduce over axis 0."""
    lay = args.layout
    axis = lay.heads_axis
    if args.model_config.is_2d or lay.residual_axis is None:
        return tt_all_reduce(x, args, axis, site=site, mode=mode)
    return tt_reduce_scatter(x, args, x.ndim - 1, axis)


def gather_heads(x, args: ModelArgs):
    """Before a column-parallel wo (layout.wo_gathered, tt's all_gather_matmul on T3K): every device's heads of the
    attention output, all-gathered along the last dim over the head axis."""
    return tt_all_gather(x, args, x.ndim - 1, args.layout.heads_axis)


def gather_users(x, args: ModelArgs):
    """Decode on a 2D mesh with grouped users: each column's group of users, all-gathered along the batch over the
    columns (tt's tt_all_gather(dim=2, cluster_axis=1) before wo), so every device has the whole batch again."""
    return tt_all_gather(x, args, 0, 1)


def gather_vocab(logits, args: ModelArgs):
    """Per-device vocab slices -> the full vocabulary on every device, padding removed."""
    full = tt_all_gather(logits, args, logits.ndim - 1, args.layout.heads_axis)
    return full[..., : args.vocab_size]

"""RMSNorm of the residual stream: replicated, or distributed as in tt-metal's distributed_norm.

Distributed (on a fractured stream): each device's sum of squares over its slice, an
all-gather of those statistics, and a local normalize. Replicated on a fractured stream:
all-gather the stream, then normalize it whole. tt-metal's rule picks distributed on 2D
meshes and in prefill when dim > 4096 (model_config norm="auto").
"""

from __future__ import annotations

import jax

import ttjax
from model.ccl import tt_all_gather
from model.config import ModelArgs
from model.precision import OpGroup, emulation_kwargs


def uses_distributed_norm(args: ModelArgs, mode: str) -> bool:
    cfg = args.model_config
    if cfg.norm == "auto":
        return cfg.is_2d or (args.dim > 4096 and mode == "prefill")
    return cfg.norm == "distributed"


def _local_slice(w: jax.Array, args: ModelArgs, axis: int) -> jax.Array:
    """This device's part of a replicated vector, for a stream fractured over `axis`."""
    n = args.layout.dim_local
    return jax.lax.dynamic_slice_in_dim(w, jax.lax.axis_index(ttjax.ccl.axis_names(axis)) * n, n)


def norm_for_matmul(x, weight, args: ModelArgs, mode: str):
    """RMSNorm of the residual stream, returned in the layout the next matmul reads: replicated on 1D
    meshes (K whole), fractured over the columns on 2D meshes (K split)."""
    lay = args.layout
    axis = lay.residual_axis
    kernel = emulation_kwargs(args, OpGroup.NORM)  # the norm kernel's config: fidelity, Dst, rsqrt's approx mode
    if lay.axis_size(axis) == 1:
        return ttjax.rms_norm(x, weight, epsilon=args.norm_eps, **kernel)
    if not uses_distributed_norm(args, mode):
        return ttjax.rms_norm(tt_all_gather(x, args, x.ndim - 1, axis), weight, epsilon=args.norm_eps, **kernel)
    partial = ttjax.rms_norm_pre_all_gather(x, **kernel)  # bfloat16 sums with a config, as tt all-gathers them
    stats = tt_all_gather(partial, args, partial.ndim - 1, axis)
    y = ttjax.rms_norm_post_all_gather(x, stats, _local_slice(weight, args, axis), epsilon=args.norm_eps, dim=args.dim,
                                       **kernel)
    return y if args.model_config.is_2d else tt_all_gather(y, args, y.ndim - 1, axis)

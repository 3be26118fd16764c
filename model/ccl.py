"""Where the collectives go: the placement-aware steps between the modules' matmuls (tt-metal's ccl.py).

Each helper reads the mesh layout from args and is the identity when the mesh axis it uses
has one device, so the same module code runs unsharded and on any mesh (see model_config
for the two schemes).
"""

from __future__ import annotations


import ttjax
from model.config import ModelArgs
from ttjax.ccl import Topology


def _ccl_kwargs(args: ModelArgs) -> dict:
    cfg = args.model_config
    return dict(num_links=cfg.num_links, topology=Topology.Ring if cfg.topology == "ring" else Topology.Linear)


def tt_all_reduce(x, args: ModelArgs, cluster_axis: int | None):
    if args.layout.axis_size(cluster_axis) == 1:
        return x
    return ttjax.all_reduce(x, cluster_axis=cluster_axis, **_ccl_kwargs(args))


def tt_all_gather(x, args: ModelArgs, dim: int, cluster_axis: int | None):
    if args.layout.axis_size(cluster_axis) == 1:
        return x
    return ttjax.all_gather(x, dim, cluster_axis=cluster_axis, **_ccl_kwargs(args))


def tt_reduce_scatter(x, args: ModelArgs, dim: int, cluster_axis: int | None):
    if args.layout.axis_size(cluster_axis) == 1:
        return x
    return ttjax.reduce_scatter(x, dim, cluster_axis=cluster_axis, **_ccl_kwargs(args))


def reduce_k_split(x, args: ModelArgs):
    """After a matmul whose K (the model dim) is split over the mesh columns (2D meshes): sum the partials."""
    return tt_all_reduce(x, args, args.layout.dim_axis)


def reduce_row_parallel(x, args: ModelArgs):
    """After wo / w2 (K split over the head axis): partial sums -> the residual stream's layout."""
    lay = args.layout
    axis = lay.heads_axis
    if args.model_config.is_2d:
        if args.model_config.ccl == "reduce_scatter":  # tt-metal's composite all-reduce
            return tt_all_gather(tt_reduce_scatter(x, args, -1, axis), args, -1, axis)
        return tt_all_reduce(x, args, axis)
    if lay.residual_axis is None:
        return tt_all_reduce(x, args, axis)
    return tt_reduce_scatter(x, args, -1, axis)


def gather_vocab(logits, args: ModelArgs):
    """Per-device vocab slices -> the full vocabulary on every device, padding removed."""
    full = tt_all_gather(logits, args, -1, args.layout.heads_axis)
    return full[..., : args.vocab_size]

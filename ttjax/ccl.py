"""Collectives (CCL ops) with ttnn's names and arguments: all_gather, reduce_scatter, all_reduce.

Each is a jax.lax collective over mesh axes, so the compiled program really contains an
all-gather / reduce-scatter / all-reduce. cluster_axis picks the mesh axis (0: among the
devices of a column, 1: among the devices of a row); None means every device of the mesh.

Two ways to call them:
- on a mesh tensor ([rows, cols, *local]): the op runs as its own mesh program;
- inside a mesh program (MeshDevice.shard_map, as the model runs), on per-device tensors.
`dim` always indexes the per-device tensor and, as in ttnn, is counted from 0: a negative dim is
refused with the dimension to pass instead. topology and num_links do not change the result; they are
checked and feed the communication cost model.
"""

from __future__ import annotations

import enum

import jax

from mesh import AXIS_NAMES
from mesh.errors import TTJaxError
from ttjax.tensor import mesh_of


class Topology(enum.Enum):
    Linear = "linear"
    Ring = "ring"


class ReduceType(enum.Enum):
    Sum = "sum"


def axis_names(cluster_axis):
    if cluster_axis is None:
        return AXIS_NAMES
    if cluster_axis not in (0, 1):
        raise TTJaxError(f"cluster_axis {cluster_axis} is not a mesh axis; use 0 (rows), 1 (cols) or None (all).")
    return AXIS_NAMES[cluster_axis]


def _axis_size(name) -> int:
    try:
        return jax.lax.axis_size(name)
    except NameError as e:
        raise TTJaxError(
            "a collective on a per-device tensor must run inside a mesh program (MeshDevice.shard_map); "
            "outside one, pass a mesh tensor placed with ttjax.as_tensor."
        ) from e


def _check(op: str, x, dim: int, num_links: int, topology) -> int:
    if dim < 0:  # ttnn's collectives refuse a negative dim (the report's pitfall 4.10.1); refused here so a port finds it
        raise TTJaxError(f"{op} dim {dim} is negative; ttnn's collectives take a dimension counted from 0 "
                         f"(the last of this rank-{x.ndim} tensor is {x.ndim - 1}).")
    if dim >= x.ndim:
        raise TTJaxError(f"{op} dim {dim} is out of range for a per-device tensor of rank {x.ndim}.")
    if num_links < 1:
        raise TTJaxError(f"{op} num_links = {num_links} must be at least 1.")
    if not isinstance(topology, Topology):
        raise TTJaxError(f"{op} topology {topology!r} is not a ttjax.Topology (Linear or Ring).")
    return dim


def _on_mesh(op, x, *args):
    """Run op as a mesh program when x is a mesh tensor (not a per-device tensor inside one)."""
    if isinstance(x, jax.core.Tracer):
        return None
    mesh = mesh_of(x)
    if mesh is None:
        raise TTJaxError(f"{op.__name__} needs a mesh tensor (placed with ttjax.as_tensor and a mesh mapper), got a plain array.")
    return jax.jit(mesh.shard_map(lambda t: op(t, *args)))(x)


def all_gather(x, dim: int, cluster_axis=None, num_links: int = 1, topology=Topology.Linear):
    """Every device gets the concatenation, along dim, of the tensors of the devices on cluster_axis."""
    done = _on_mesh(all_gather, x, dim, cluster_axis, num_links, topology)
    if done is not None:
        return done
    d = _check("all_gather", x, dim, num_links, topology)
    names = axis_names(cluster_axis)
    _axis_size(names)
    return jax.lax.all_gather(x, names, axis=d, tiled=True)


def reduce_scatter(x, dim: int, math_op=ReduceType.Sum, cluster_axis=None, num_links: int = 1, topology=Topology.Linear):
    """Sum the devices' tensors on cluster_axis and give device i the i-th slice of the sum along dim."""
    done = _on_mesh(reduce_scatter, x, dim, math_op, cluster_axis, num_links, topology)
    if done is not None:
        return done
    d = _check("reduce_scatter", x, dim, num_links, topology)
    if math_op is not ReduceType.Sum:
        raise TTJaxError(f"reduce_scatter math_op {math_op!r} is not supported; only ReduceType.Sum.")
    names = axis_names(cluster_axis)
    n = _axis_size(names)
    if x.shape[d] % n:
        raise TTJaxError(f"reduce_scatter dim {dim} has size {x.shape[d]}, which does not divide over the {n} devices of the cluster axis.")
    return jax.lax.psum_scatter(x, names, scatter_dimension=d, tiled=True)


def all_reduce(x, math_op=ReduceType.Sum, cluster_axis=None, num_links: int = 1, topology=Topology.Linear):
    """Every device gets the sum of the devices' tensors on cluster_axis."""
    done = _on_mesh(all_reduce, x, math_op, cluster_axis, num_links, topology)
    if done is not None:
        return done
    _check("all_reduce", x, 0, num_links, topology)
    if math_op is not ReduceType.Sum:
        raise TTJaxError(f"all_reduce math_op {math_op!r} is not supported; only ReduceType.Sum.")
    names = axis_names(cluster_axis)
    _axis_size(names)
    return jax.lax.psum(x, names)

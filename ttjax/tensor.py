"""Moving tensors between host and mesh through ttnn's mappers and composers.

    t = ttjax.from_numpy(x, mesh_mapper=ShardTensorToMesh(mesh, dim=-1))
    x = ttjax.to_numpy(t, mesh_composer=ConcatMeshToTensor(mesh, dim=-1))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from mesh import AXIS_NAMES, MeshDevice, ReplicateTensorToMesh
from mesh.errors import TTJaxError
from ttjax.blockfloat import BlockFloatTensor, block_format, to_block_float


def as_tensor(x, dtype=None, *, mesh_mapper=None, device: MeshDevice | None = None):
    """Place x: with a mesh_mapper, one block per device; with only a device, replicated; else on the default device.

    dtype may be a jnp dtype or ttjax.bfloat8_b / bfloat4_b (a BlockFloatTensor, each device's block
    tile-padded and encoded on its own, as each TT device holds its own tiles)."""
    fmt = block_format(dtype)
    host = np.asarray(x, dtype=None if dtype is None or fmt is not None else jnp.dtype(dtype))
    if mesh_mapper is None and device is None:
        return to_block_float(host, fmt) if fmt is not None else jnp.asarray(host)
    if mesh_mapper is None:
        mesh_mapper = ReplicateTensorToMesh(device)
    if device is not None and device is not mesh_mapper.mesh_device:
        raise TTJaxError(f"as_tensor got device {device} but a mapper for {mesh_mapper.mesh_device}.")
    return place_blocks(mesh_mapper.mesh_device, mesh_mapper.map(host), fmt)


def place_blocks(mesh_device: MeshDevice, blocks, fmt=None):
    """Per-device host blocks -> a mesh tensor, or with a block format a BlockFloatTensor whose codes and
    exponents are mesh tensors."""
    if fmt is None:
        return mesh_device.place(blocks)
    encoded = mesh_device.local_blocks(blocks, lambda b: to_block_float(np.asarray(b, np.float32), fmt))
    first = next(e for row in encoded for e in row if e is not None)
    return BlockFloatTensor(
        codes=mesh_device.place([[e and e.codes for e in row] for row in encoded]),
        exps=mesh_device.place([[e and e.exps for e in row] for row in encoded]),
        shape=first.shape,
        fmt=fmt,
    )


def from_numpy(x: np.ndarray, dtype=None, *, mesh_mapper=None, device=None) -> jax.Array:
    return as_tensor(x, dtype, mesh_mapper=mesh_mapper, device=device)


def mesh_of(t) -> MeshDevice | None:
    """The MeshDevice a mesh tensor lives on (None for a plain array)."""
    sharding = getattr(t, "sharding", None)
    if isinstance(sharding, NamedSharding) and tuple(sharding.mesh.axis_names) == AXIS_NAMES:
        m = sharding.mesh
        if t.ndim >= 2 and t.shape[:2] == tuple(m.devices.shape):
            return MeshDevice(m.devices.shape, devices=list(m.devices.flat))
    return None


def to_numpy(t, *, mesh_composer=None) -> np.ndarray:
    """A mesh tensor back on the host, its device blocks combined by mesh_composer (block floats decoded)."""
    if isinstance(t, BlockFloatTensor):
        t = t.decode(jnp.float32)
    mesh = mesh_of(t)
    if mesh_composer is not None:
        device = mesh_composer.mesh_device
        if mesh is not None and mesh.shape != device.shape:
            raise TTJaxError(f"the tensor lives on a {mesh.shape} mesh but the composer is for {device.shape}.")
        return mesh_composer.compose(device.blocks(t))
    if mesh is None:
        return np.asarray(t)
    if mesh.get_num_devices() == 1:
        return np.asarray(t)[0, 0]
    rows, cols = mesh.shape
    raise TTJaxError(
        f"this tensor lives on a {rows}x{cols} mesh; pass mesh_composer (ConcatMeshToTensor or ConcatMesh2dToTensor) "
        f"to say how its {rows * cols} device tensors combine."
    )

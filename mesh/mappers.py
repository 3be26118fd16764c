"""ttnn's mesh mappers (host tensor -> per-device blocks) and composers (blocks -> host tensor).

Composers concatenate every device's block, as ttnn's do: ConcatMeshToTensor of a
replicated tensor returns the N device copies stacked along `dim`, not one copy.
"""

from __future__ import annotations

import numpy as np

from mesh.errors import TTJaxError


def _norm_dim(dim: int, ndim: int, what: str) -> int:
    if not -ndim <= dim < ndim:
        raise TTJaxError(f"{what} dim {dim} is out of range for a tensor of rank {ndim}.")
    return dim % ndim


def _split(x: np.ndarray, dim: int, parts: int, what: str) -> list[np.ndarray]:
    if x.shape[dim] % parts:
        raise TTJaxError(f"{what}: dim {dim} has size {x.shape[dim]}, which does not divide over {parts} devices.")
    return np.split(x, parts, axis=dim)


class ShardTensorToMesh:
    """Split dim into num_devices pieces, device i (row-major over the mesh) taking piece i."""

    def __init__(self, mesh_device, dim: int):
        self.mesh_device, self.dim = mesh_device, dim

    def map(self, x: np.ndarray):
        rows, cols = self.mesh_device.shape
        d = _norm_dim(self.dim, x.ndim, "ShardTensorToMesh")
        pieces = _split(x, d, rows * cols, "ShardTensorToMesh")
        return [[pieces[r * cols + c] for c in range(cols)] for r in range(rows)]


class ReplicateTensorToMesh:
    """The whole tensor on every device."""

    def __init__(self, mesh_device):
        self.mesh_device = mesh_device

    def map(self, x: np.ndarray):
        rows, cols = self.mesh_device.shape
        return [[x for _ in range(cols)] for _ in range(rows)]


class ShardTensor2dMesh:
    """dims[0] split across mesh rows and dims[1] across mesh columns; None replicates along that axis."""

    def __init__(self, mesh_device, dims, mesh_shape):
        if tuple(mesh_shape) != tuple(mesh_device.shape):
            raise TTJaxError(f"ShardTensor2dMesh mesh_shape {tuple(mesh_shape)} differs from the mesh's {mesh_device.shape}.")
        self.mesh_device, self.dims, self.mesh_shape = mesh_device, tuple(dims), tuple(mesh_shape)

    def map(self, x: np.ndarray):
        rows, cols = self.mesh_shape
        row_dim, col_dim = (None if d is None else _norm_dim(d, x.ndim, "ShardTensor2dMesh") for d in self.dims)
        if row_dim is not None and row_dim == col_dim:
            raise TTJaxError(f"ShardTensor2dMesh dims {self.dims} name the same tensor dim twice.")
        row_parts = _split(x, row_dim, rows, "ShardTensor2dMesh rows") if row_dim is not None else [x] * rows
        return [
            _split(rp, col_dim, cols, "ShardTensor2dMesh cols") if col_dim is not None else [rp] * cols for rp in row_parts
        ]


class ConcatMeshToTensor:
    """All device blocks concatenated along dim, in row-major device order."""

    def __init__(self, mesh_device, dim: int):
        self.mesh_device, self.dim = mesh_device, dim

    def compose(self, blocks) -> np.ndarray:
        flat = [b for row in blocks for b in row]
        return np.concatenate(flat, axis=_norm_dim(self.dim, flat[0].ndim, "ConcatMeshToTensor"))


class ConcatMesh2dToTensor:
    """Blocks of each row concatenated along dims[1], then the rows along dims[0]."""

    def __init__(self, mesh_device, dims, mesh_shape):
        if tuple(mesh_shape) != tuple(mesh_device.shape):
            raise TTJaxError(f"ConcatMesh2dToTensor mesh_shape {tuple(mesh_shape)} differs from the mesh's {mesh_device.shape}.")
        self.mesh_device, self.dims, self.mesh_shape = mesh_device, tuple(dims), tuple(mesh_shape)

    def compose(self, blocks) -> np.ndarray:
        ndim = blocks[0][0].ndim
        row_dim, col_dim = (_norm_dim(d, ndim, "ConcatMesh2dToTensor") for d in self.dims)
        if row_dim == col_dim:
            raise TTJaxError(f"ConcatMesh2dToTensor dims {self.dims} name the same tensor dim twice.")
        return np.concatenate([np.concatenate(row, axis=col_dim) for row in blocks], axis=row_dim)

"""mesh: the device mesh (MeshDevice) and ttnn-style placement: mappers split a host tensor into
per-device blocks, composers put device blocks back together."""

from mesh.device import AXIS_NAMES, MeshDevice, ensure_host_devices, parse_mesh_shape
from mesh.mappers import (
    ConcatMesh2dToTensor,
    ConcatMeshToTensor,
    ReplicateTensorToMesh,
    ShardTensor2dMesh,
    ShardTensorToMesh,
)

__all__ = [
    "AXIS_NAMES",
    "ConcatMesh2dToTensor",
    "ConcatMeshToTensor",
    "MeshDevice",
    "ReplicateTensorToMesh",
    "ShardTensor2dMesh",
    "ShardTensorToMesh",
    "ensure_host_devices",
    "parse_mesh_shape",
]

"""mesh: the device mesh and ttnn-style tensor placement (MeshDevice, ShardTensorToMesh, ...).

The foundation runs on one device; the mesh abstraction lands with tensor parallelism.
"""

# An MLP's matmuls on a 1x8 mesh as TT-NN places them: w1 column-parallel (no communication), w2 row-parallel
# (each device holds partial sums), then one reduce-scatter leaves each device a slice of the summed output.
from mesh import ensure_host_devices

ensure_host_devices(8)  # host CPU devices stand in for the chips; set before jax starts

import jax  # noqa: E402
import numpy as np  # noqa: E402

import ttjax  # noqa: E402
from mesh import ConcatMeshToTensor, MeshDevice, ReplicateTensorToMesh, ShardTensorToMesh  # noqa: E402

mesh = MeshDevice((1, 8))
rng = np.random.default_rng(0)
x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in [(32, 256), (256, 1024), (1024, 256)])

x_t = ttjax.from_numpy(x, mesh_mapper=ReplicateTensorToMesh(mesh))
w1_t = ttjax.from_numpy(w1, mesh_mapper=ShardTensorToMesh(mesh, dim=1))  # columns split: [256, 128] a device
w2_t = ttjax.from_numpy(w2, mesh_mapper=ShardTensorToMesh(mesh, dim=0))  # rows split: [128, 256] a device


def mlp(x, w1, w2):  # written per device, as a TT-NN module is
    partial = jax.nn.silu(x @ w1) @ w2  # [32, 256] partial sums on every device
    return ttjax.reduce_scatter(partial, dim=1, cluster_axis=1)  # summed, each device keeps 32 of the 256 columns


out = jax.jit(mesh.shard_map(mlp))(x_t, w1_t, w2_t)
y = ttjax.to_numpy(out, mesh_composer=ConcatMeshToTensor(mesh, dim=1))
reference = (jax.nn.silu(x @ w1) @ w2)
print(f"per-device output {mesh.blocks(out)[0][0].shape}, gathered {y.shape}, "
      f"max |difference| from one device: {np.abs(y - reference).max():.2e}")

"""Mesh placement (ttnn mappers and composers), host <-> mesh movement, and the collectives."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ttjax
from mesh import (
    ConcatMesh2dToTensor,
    ConcatMeshToTensor,
    MeshDevice,
    ReplicateTensorToMesh,
    ShardTensor2dMesh,
    ShardTensorToMesh,
)
from ttjax import TTJaxError

MESH_SHAPES = [(1, 1), (1, 2), (1, 8), (2, 4), (8, 4)]
MESHES = {shape: MeshDevice(shape) for shape in MESH_SHAPES}


@st.composite
def sharded_case(draw, two_d: bool):
    """A mesh, a tensor whose sharded dims divide it, and the dims (negative or not)."""
    shape = draw(st.sampled_from(MESH_SHAPES))
    rows, cols = shape
    rank = draw(st.integers(2 if two_d else 1, 4))
    dims = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    if two_d:
        d0, d1 = draw(st.permutations(range(rank)))[:2]
        dims[d0] *= rows
        dims[d1] *= cols
        sharded = (d0 - rank if draw(st.booleans()) else d0, d1 - rank if draw(st.booleans()) else d1)
    else:
        d = draw(st.integers(0, rank - 1))
        dims[d] *= rows * cols
        sharded = d - rank if draw(st.booleans()) else d
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(dims).astype(np.float32)
    return MESHES[shape], x, sharded


@settings(max_examples=40, deadline=None)
@given(sharded_case(two_d=False))
def test_shard_then_concat_is_exact_1d(case):
    mesh, x, dim = case
    t = ttjax.from_numpy(x, mesh_mapper=ShardTensorToMesh(mesh, dim=dim))
    n = mesh.get_num_devices()
    assert t.shape[:2] == mesh.shape and t.shape[2:][dim] == x.shape[dim] // n
    np.testing.assert_array_equal(ttjax.to_numpy(t, mesh_composer=ConcatMeshToTensor(mesh, dim=dim)), x)


@settings(max_examples=40, deadline=None)
@given(sharded_case(two_d=True))
def test_shard_then_concat_is_exact_2d(case):
    mesh, x, dims = case
    t = ttjax.as_tensor(x, mesh_mapper=ShardTensor2dMesh(mesh, dims=dims, mesh_shape=mesh.shape))
    back = ttjax.to_numpy(t, mesh_composer=ConcatMesh2dToTensor(mesh, dims=dims, mesh_shape=mesh.shape))
    np.testing.assert_array_equal(back, x)


def test_device_blocks_follow_row_major_order():
    mesh = MESHES[(2, 4)]
    x = np.arange(8 * 3).reshape(8, 3).astype(np.float32)
    t = ttjax.from_numpy(x, mesh_mapper=ShardTensorToMesh(mesh, dim=0))
    blocks = mesh.blocks(t)
    assert [b[0, 0] for row in blocks for b in row] == [float(3 * i) for i in range(8)]
    assert t.addressable_shards[0].device == mesh.devices[0, 0]


def test_2d_mapper_replicates_along_none():
    mesh = MESHES[(2, 4)]
    x = np.arange(4 * 8, dtype=np.float32).reshape(4, 8)
    t = ttjax.from_numpy(x, mesh_mapper=ShardTensor2dMesh(mesh, dims=(None, 1), mesh_shape=(2, 4)))
    blocks = mesh.blocks(t)
    for c in range(4):
        np.testing.assert_array_equal(blocks[0][c], x[:, 2 * c : 2 * c + 2])
        np.testing.assert_array_equal(blocks[1][c], x[:, 2 * c : 2 * c + 2])


def test_replicated_concat_returns_every_copy_like_ttnn():
    mesh = MESHES[(1, 8)]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = ttjax.as_tensor(x, mesh_mapper=ReplicateTensorToMesh(mesh))
    stacked = ttjax.to_numpy(t, mesh_composer=ConcatMeshToTensor(mesh, dim=0))
    np.testing.assert_array_equal(stacked, np.concatenate([x] * 8))


def _global(mesh, t, dim):
    return ttjax.to_numpy(t, mesh_composer=ConcatMeshToTensor(mesh, dim=dim))


@pytest.mark.parametrize("dim", [0, 1])
def test_all_gather(dim):
    mesh = MESHES[(1, 8)]
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    t = ttjax.from_numpy(x, mesh_mapper=ShardTensorToMesh(mesh, dim=dim))
    g = ttjax.all_gather(t, dim=dim, num_links=1, topology=ttjax.Topology.Ring)
    for row in mesh.blocks(g):
        for block in row:
            np.testing.assert_array_equal(block, x)


def test_cluster_axis_collectives_on_2d_mesh():
    mesh = MESHES[(2, 4)]
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 8)).astype(np.float32)  # one block per device
    t = mesh.place([[x[r, c] for c in range(4)] for r in range(2)])
    blocks = lambda a: np.array([[b for b in row] for row in mesh.blocks(a)])  # noqa: E731

    g = blocks(ttjax.all_gather(t, dim=1, cluster_axis=1))
    for r in range(2):
        for c in range(4):
            np.testing.assert_array_equal(g[r, c], np.concatenate(list(x[r]), axis=-1))
    s = blocks(ttjax.all_reduce(t, cluster_axis=0))
    np.testing.assert_allclose(s[1, 2], x[0, 2] + x[1, 2], rtol=1e-6)
    rs = blocks(ttjax.reduce_scatter(t, dim=1, cluster_axis=1))
    total = x.sum(axis=1)  # [rows, 3, 8], summed over each row's devices
    for c in range(4):
        np.testing.assert_allclose(rs[0, c], total[0][:, 2 * c : 2 * c + 2], rtol=1e-5)
    everything = blocks(ttjax.all_reduce(t))
    np.testing.assert_allclose(everything[1, 3], x.sum(axis=(0, 1)), rtol=1e-5)


def test_reduce_scatter_of_all_gather_sums_copies():
    mesh = MESHES[(1, 8)]
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    t = ttjax.from_numpy(x, mesh_mapper=ShardTensorToMesh(mesh, dim=-1))
    rs = ttjax.reduce_scatter(ttjax.all_gather(t, dim=1), dim=1)
    np.testing.assert_allclose(_global(mesh, rs, -1), 8 * x, rtol=1e-6)


def test_collective_errors():
    mesh = MESHES[(2, 4)]
    t = ttjax.from_numpy(np.zeros((2, 3, 8), np.float32), mesh_mapper=ShardTensor2dMesh(mesh, dims=(0, 2), mesh_shape=(2, 4)))
    with pytest.raises(TTJaxError, match="reduce_scatter dim 1 has size 3, which does not divide over the 4 devices"):
        ttjax.reduce_scatter(t, dim=1, cluster_axis=1)
    with pytest.raises(TTJaxError, match="all_gather dim 3 is out of range for a per-device tensor of rank 3"):
        ttjax.all_gather(t, dim=3)
    with pytest.raises(TTJaxError, match=r"all_gather dim -1 is negative; ttnn's collectives take a dimension counted from 0 \(the last of this rank-3 tensor is 2\)"):
        ttjax.all_gather(t, dim=-1)
    with pytest.raises(TTJaxError, match="reduce_scatter dim -3 is negative"):
        ttjax.reduce_scatter(t, dim=-3, cluster_axis=1)
    with pytest.raises(TTJaxError, match="cluster_axis 2 is not a mesh axis"):
        ttjax.all_reduce(t, cluster_axis=2)
    with pytest.raises(TTJaxError, match="num_links = 0 must be at least 1"):
        ttjax.all_gather(t, dim=0, num_links=0)
    with pytest.raises(TTJaxError, match="needs a mesh tensor"):
        ttjax.all_gather(np.zeros(4, np.float32), dim=0)


def test_placement_errors():
    mesh = MESHES[(1, 8)]
    with pytest.raises(TTJaxError, match="ShardTensorToMesh: dim 1 has size 6, which does not divide over 8 devices"):
        ttjax.from_numpy(np.zeros((2, 6)), mesh_mapper=ShardTensorToMesh(mesh, dim=1))
    with pytest.raises(TTJaxError, match="ShardTensor2dMesh mesh_shape \\(4, 2\\) differs from the mesh's \\(1, 8\\)"):
        ShardTensor2dMesh(mesh, dims=(0, 1), mesh_shape=(4, 2))
    with pytest.raises(TTJaxError, match="a 8x8 mesh needs 64 devices but only 32 are available"):
        MeshDevice((8, 8))
    t = ttjax.from_numpy(np.zeros((8, 2)), mesh_mapper=ShardTensorToMesh(mesh, dim=0))
    with pytest.raises(TTJaxError, match="lives on a 1x8 mesh; pass mesh_composer"):
        ttjax.to_numpy(t)

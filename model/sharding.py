"""Placing a model on a mesh: per-device weight layouts, the KV cache, and replicated inputs.

Weights are rearranged on the host into the per-device layout tt-metal builds (each
device's [q | k | v] block side by side for wqkv, its query heads' rows of wo, its vocab
range of the LM head cut into chunks), zero-padded where the layout needs it, then placed
with the ttnn mappers: ShardTensorToMesh on 1D meshes, ShardTensor2dMesh on 2D ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mesh import MeshDevice, ReplicateTensorToMesh, ShardTensor2dMesh, ShardTensorToMesh
from mesh.errors import TTJaxError
from model.kv_cache import kv_cache_shape
from model.config import ModelArgs
from model.params import AttentionParams, DecoderParams, MLPParams, TransformerParams
from model.precision import TensorGroup, weight_dtype
from ttjax.blockfloat import BlockFloatTensor, block_format, to_block_float
from ttjax.tensor import place_blocks


def mesh_args(args: ModelArgs, mesh_device: MeshDevice, **config) -> ModelArgs:
    """args with model_config for this mesh (config: ccl=, norm=, ...), its layout checked."""
    import dataclasses

    cfg = dataclasses.replace(args.model_config, cluster_shape=mesh_device.shape, **config)
    out = args.replace(model_config=cfg)
    out.layout.validate()
    return out


def _tp_mapper(mesh_device: MeshDevice, args: ModelArgs, heads_dim: int, model_dim: int | None):
    """Split tensor dim heads_dim over the head axis and (2D meshes) model_dim over the columns."""
    if args.model_config.is_2d:
        return ShardTensor2dMesh(mesh_device, dims=(heads_dim, model_dim), mesh_shape=mesh_device.shape)
    return ShardTensorToMesh(mesh_device, dim=heads_dim)


def _pad(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return np.pad(a, widths)


def _head_shards(args: ModelArgs):
    """For each head-axis shard: (KV head indices, query-head slice within each KV head's padded group)."""
    lay = args.layout
    per_replica = lay.group_padded // lay.kv_replicas
    out = []
    for s in range(lay.n_shards):
        if lay.kv_replicas == 1:
            kv = list(range(s * lay.n_local_kv_heads, (s + 1) * lay.n_local_kv_heads))
            out.append((kv, slice(0, lay.group_padded)))
        else:
            j = s % lay.kv_replicas
            out.append(([s // lay.kv_replicas], slice(j * per_replica, (j + 1) * per_replica)))
    return out


def _grouped_heads(w: np.ndarray, args: ModelArgs, group: int, padded_group: int, axis: int) -> np.ndarray:
    """Split `axis` (heads * head_dim) into [kv, group, head_dim], zero-padded to [kv_padded, padded_group, head_dim]."""
    shape = list(w.shape)
    w = w.reshape(*shape[:axis], args.n_kv_heads, group, args.head_dim, *shape[axis + 1 :])
    return _pad(_pad(w, axis, args.layout.kv_padded), axis + 1, padded_group)


def wqkv_per_device(wqkv: np.ndarray, args: ModelArgs) -> np.ndarray:
    """[dim, q|k|v] -> [dim, n_shards * local_qkv]: each shard's [q_local | k_local | v_local] side by side."""
    hd, nq, nkv = args.head_dim, args.n_heads, args.n_kv_heads
    q = _grouped_heads(wqkv[:, : nq * hd], args, args.n_groups, args.layout.group_padded, 1)  # [dim, kv_p, G_p, hd]
    k = _grouped_heads(wqkv[:, nq * hd : (nq + nkv) * hd], args, 1, 1, 1)  # [dim, kv_p, 1, hd]
    v = _grouped_heads(wqkv[:, (nq + nkv) * hd :], args, 1, 1, 1)
    dim = wqkv.shape[0]
    blocks = []
    for kv, qs in _head_shards(args):
        blocks += [q[:, kv, qs].reshape(dim, -1), k[:, kv].reshape(dim, -1), v[:, kv].reshape(dim, -1)]
    return np.concatenate(blocks, axis=1)


def wo_per_device(wo: np.ndarray, args: ModelArgs) -> np.ndarray:
    """[q heads * hd, dim] -> [n_shards * local_q * hd, dim]: rows in the order of each shard's query heads."""
    rows = _grouped_heads(wo, args, args.n_groups, args.layout.group_padded, 0)  # [kv_p, G_p, hd, dim]
    return np.concatenate([rows[kv, qs].reshape(-1, wo.shape[1]) for kv, qs in _head_shards(args)], axis=0)


def lm_head_chunks(output: np.ndarray, args: ModelArgs) -> list[np.ndarray]:
    """[dim, vocab] -> per split i, the devices' i-th chunks side by side (tt-metal's LM head layout)."""
    lay = args.layout
    out = _pad(output, 1, lay.vocab_padded)
    chunks, start = [], 0
    for size in lay.lm_head_splits:
        chunks.append(
            np.concatenate([out[:, d * lay.vocab_local + start : d * lay.vocab_local + start + size] for d in range(lay.n_shards)], 1)
        )
        start += size
    return chunks


def shard_params(params: TransformerParams, args: ModelArgs, mesh_device: MeshDevice) -> TransformerParams:
    """Unsharded params -> per-device params on mesh_device (args from mesh_args)."""
    if args.model_config.cluster_shape != mesh_device.shape:
        raise TTJaxError(f"args are laid out for a {args.model_config.cluster_shape} mesh, not {mesh_device.shape}; use mesh_args.")
    lay = args.layout
    host = lambda a: np.asarray(jax.device_get(a), np.float32)  # noqa: E731
    act = args.activation_dtype

    def place(a, mapper, dtype=act):
        """Each device's block, encoded on its own when dtype is a block float (as each TT device holds its tiles)."""
        fmt = block_format(dtype)
        if fmt is not None:
            return place_blocks(mesh_device, mapper.map(a), fmt)
        return mesh_device.place(mapper.map(a.astype(jnp.dtype(dtype))))

    replicate = ReplicateTensorToMesh(mesh_device)
    col = lambda: _tp_mapper(mesh_device, args, -1, 0)  # noqa: E731  N over heads, K over columns
    row = lambda: _tp_mapper(mesh_device, args, 0, 1)  # noqa: E731  K over heads, N over columns

    layers = []
    for i, layer in enumerate(params.layers):
        a, f = layer.attention, layer.feed_forward
        dt = lambda group: weight_dtype(args, group, i)  # noqa: E731
        layers.append(
            DecoderParams(
                attention_norm=place(host(layer.attention_norm), replicate),
                attention=AttentionParams(
                    wqkv=place(wqkv_per_device(host(a.wqkv), args), col(), dt(TensorGroup.WQKV)),
                    wo=place(wo_per_device(host(a.wo), args), row(), dt(TensorGroup.WO)),
                ),
                ffn_norm=place(host(layer.ffn_norm), replicate),
                feed_forward=MLPParams(
                    w1=place(_pad(host(f.w1), 1, lay.hidden_padded), col(), dt(TensorGroup.FF1_FF3)),
                    w2=place(_pad(host(f.w2), 0, lay.hidden_padded), row(), dt(TensorGroup.FF2)),
                    w3=place(_pad(host(f.w3), 1, lay.hidden_padded), col(), dt(TensorGroup.FF1_FF3)),
                ),
            )
        )
    emb = host(params.tok_embeddings)
    emb_dtype = weight_dtype(args, TensorGroup.EMBEDDING)
    if lay.residual_axis is None:
        embedding = place(emb, replicate, emb_dtype)
    else:  # the embedding produces the fractured residual stream directly (tt-metal dims=(None, 3))
        embedding = place(emb, ShardTensor2dMesh(mesh_device, dims=(None, 1), mesh_shape=mesh_device.shape), emb_dtype)
    output = host(params.lm_head_weights()[0]) if len(params.lm_head_weights()) == 1 else np.concatenate(
        [host(w) for w in params.lm_head_weights()], axis=1
    )
    return TransformerParams(
        tok_embeddings=embedding,
        layers=layers,
        norm=place(host(params.norm), replicate),
        output=[place(c, col(), weight_dtype(args, TensorGroup.LM_HEAD)) for c in lm_head_chunks(output, args)],
    )


def allocate_mesh_kv_cache(args: ModelArgs, mesh_device: MeshDevice, batch: int | None = None):
    """Per device, per layer [K, V] of model.kv_cache's shape with this device's KV heads."""
    rows, cols = mesh_device.shape
    shape = (rows, cols, *kv_cache_shape(args, batch))
    zeros = jax.jit(lambda: jnp.zeros(shape, args.activation_dtype), out_shardings=mesh_device.sharding)
    return tuple((zeros(), zeros()) for _ in range(args.n_layers))


def replicate(x, mesh_device: MeshDevice) -> jax.Array:
    """An input (tokens, positions, rot mats, scalars) on every device."""
    rows, cols = mesh_device.shape
    x = jnp.asarray(x)
    return jax.device_put(jnp.broadcast_to(x, (rows, cols, *x.shape)), mesh_device.sharding)


def abstract_params(args: ModelArgs, mesh_device: MeshDevice) -> TransformerParams:
    """The placed params' shapes, dtypes and shardings, without weights (to compile and inspect programs).

    Weight dtypes follow args.optimizations for every layer (per-layer overrides are not applied)."""
    lay = args.layout
    rows, cols = mesh_device.shape

    def spec(*local, group=None):
        dtype = args.activation_dtype if group is None else weight_dtype(args, group)
        fmt = block_format(dtype)
        if fmt is None:
            return jax.ShapeDtypeStruct((rows, cols, *local), dtype, sharding=mesh_device.sharding)
        like = jax.eval_shape(lambda: to_block_float(jnp.zeros(local, jnp.float32), fmt))
        place = lambda a: jax.ShapeDtypeStruct((rows, cols, *a.shape), a.dtype, sharding=mesh_device.sharding)  # noqa: E731
        return BlockFloatTensor(place(like.codes), place(like.exps), tuple(local), fmt)

    dim_n = args.dim // lay.axis_size(lay.dim_axis)  # N of wo / w2: split over the columns on 2D meshes
    qkv_local = (lay.n_local_heads + 2 * lay.n_local_kv_heads) * args.head_dim
    layer = DecoderParams(
        attention_norm=spec(args.dim),
        attention=AttentionParams(
            wqkv=spec(lay.dim_k_local, qkv_local, group=TensorGroup.WQKV),
            wo=spec(lay.n_local_heads * args.head_dim, dim_n, group=TensorGroup.WO),
        ),
        ffn_norm=spec(args.dim),
        feed_forward=MLPParams(
            w1=spec(lay.dim_k_local, lay.hidden_local, group=TensorGroup.FF1_FF3),
            w2=spec(lay.hidden_local, dim_n, group=TensorGroup.FF2),
            w3=spec(lay.dim_k_local, lay.hidden_local, group=TensorGroup.FF1_FF3),
        ),
    )
    return TransformerParams(
        tok_embeddings=spec(args.vocab_size, lay.dim_local, group=TensorGroup.EMBEDDING),
        layers=[layer] * args.n_layers,
        norm=spec(args.dim),
        output=[spec(lay.dim_k_local, size, group=TensorGroup.LM_HEAD) for size in lay.lm_head_splits],
    )

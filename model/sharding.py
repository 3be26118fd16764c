"""Placing a model on a mesh: per-device weight layouts, the KV cache, and replicated inputs.

Each weight's WeightSpec (model.params) names its split and its layout. Weights are rearranged
on the host into the per-device layout tt-metal builds (each device's [q | k | v] block side by
side for wqkv, its query heads' rows of wo, its vocab range of the LM head cut into chunks; on
tt's T3K all_gather_matmul path wo keeps every device's rows, in the gathered order, and is split
by columns instead),
zero-padded where the layout needs it, then placed with the ttnn mappers: ShardTensorToMesh on
1D meshes, ShardTensor2dMesh on 2D ones. The layouts are written in jax.numpy so that
abstract_params gets the placed shapes from the same code without touching memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mesh import MeshDevice, ReplicateTensorToMesh, ShardTensor2dMesh, ShardTensorToMesh
from model.errors import ConfigError
from model.config import ModelArgs
from model.kv_cache import kv_cache_shape
from model.params import COLUMN, EMBEDDING, REPLICATED, TransformerParams, WeightSpec, lm_head_chunks, map_specs, param_specs
from ttjax.blockfloat import BlockFloatTensor, block_format, to_block_float
from ttjax.tensor import place_blocks


def mesh_args(args: ModelArgs, mesh_device: MeshDevice, **config) -> ModelArgs:
    """args with model_config for this mesh (config: ccl=, norm=, ...), its layout checked."""
    import dataclasses

    cfg = dataclasses.replace(args.model_config, cluster_shape=mesh_device.shape, **config)
    out = args.replace(model_config=cfg)
    out.layout.validate()
    if cfg.group_users:  # required grouping: the model's batch must divide over the columns
        out.layout.user_groups(out.max_batch_size)
    return out


def _pad(a, axis: int, size: int):
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return jnp.pad(a, widths)


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


def _grouped_heads(w, args: ModelArgs, group: int, padded_group: int, axis: int):
    """Split `axis` (heads * head_dim) into [kv, group, head_dim], zero-padded to [kv_padded, padded_group, head_dim]."""
    shape = list(w.shape)
    w = w.reshape(*shape[:axis], args.n_kv_heads, group, args.head_dim, *shape[axis + 1 :])
    return _pad(_pad(w, axis, args.layout.kv_padded), axis + 1, padded_group)


def wqkv_per_device(wqkv, args: ModelArgs):
    """[dim, q|k|v] -> [dim, n_shards * local_qkv]: each shard's [q_local | k_local | v_local] side by side."""
    hd, nq, nkv = args.head_dim, args.n_heads, args.n_kv_heads
    q = _grouped_heads(wqkv[:, : nq * hd], args, args.n_groups, args.layout.group_padded, 1)  # [dim, kv_p, G_p, hd]
    k = _grouped_heads(wqkv[:, nq * hd : (nq + nkv) * hd], args, 1, 1, 1)  # [dim, kv_p, 1, hd]
    v = _grouped_heads(wqkv[:, (nq + nkv) * hd :], args, 1, 1, 1)
    dim = wqkv.shape[0]
    blocks = []
    for kv, qs in _head_shards(args):
        blocks += [q[:, kv, qs].reshape(dim, -1), k[:, kv].reshape(dim, -1), v[:, kv].reshape(dim, -1)]
    return jnp.concatenate(blocks, axis=1)


def wo_per_device(wo, args: ModelArgs):
    """[q heads * hd, dim] -> [n_shards * local_q * hd, dim]: rows in the order of each shard's query heads."""
    rows = _grouped_heads(wo, args, args.n_groups, args.layout.group_padded, 0)  # [kv_p, G_p, hd, dim]
    return jnp.concatenate([rows[kv, qs].reshape(-1, wo.shape[1]) for kv, qs in _head_shards(args)], axis=0)


def lm_head_per_device(output, args: ModelArgs) -> list:
    """[dim, vocab] -> per split i, the devices' i-th chunks side by side (tt-metal's LM head layout): chunk i,
    split over the devices by columns, gives device d the i-th chunk of its vocab range."""
    lay = args.layout
    out = _pad(output, 1, lay.vocab_padded)
    devices = [lm_head_chunks(out[:, d * lay.vocab_local : (d + 1) * lay.vocab_local], args) for d in range(lay.n_shards)]
    return [jnp.concatenate(chunk, 1) for chunk in zip(*devices)]


def _hidden(w, args: ModelArgs, split: str):
    """The MLP hidden dim zero-padded to a multiple of the head-axis devices (N of w1/w3, K of w2)."""
    return _pad(w, 1 if split == COLUMN else 0, args.layout.hidden_padded)


# Per-device layouts named by WeightSpec.layout: the host-side rearrangement before the split.
LAYOUTS = {
    None: lambda w, args, split: w,
    "wqkv": lambda w, args, split: wqkv_per_device(w, args),
    "wo": lambda w, args, split: wo_per_device(w, args),
    "hidden": _hidden,
    "vocab": lambda w, args, split: lm_head_per_device(w, args),
}


def mapper(spec: WeightSpec, args: ModelArgs, mesh_device: MeshDevice):
    """The ttnn mapper that splits a weight of this spec over the mesh (model_config's two schemes)."""
    lay = args.layout
    if spec.split == REPLICATED or (spec.split == EMBEDDING and lay.residual_axis is None):
        return ReplicateTensorToMesh(mesh_device)
    if spec.split == EMBEDDING:  # the embedding produces the fractured residual stream directly (tt-metal dims=(None, 3))
        return ShardTensor2dMesh(mesh_device, dims=(None, 1), mesh_shape=mesh_device.shape)
    if spec.layout == "wo" and lay.wo_gathered:
        # tt's wo on the all_gather_matmul path: ShardTensor2dMesh dims=(2, 3) on the 1 x 8 mesh, i.e. split by
        # columns (the model dim) over the 8 devices; every device holds all the (gathered) heads' rows.
        return ShardTensorToMesh(mesh_device, dim=-1)
    heads_dim, model_dim = (-1, 0) if spec.split == COLUMN else (0, 1)
    if args.model_config.is_2d:
        return ShardTensor2dMesh(mesh_device, dims=(heads_dim, model_dim), mesh_shape=mesh_device.shape)
    return ShardTensorToMesh(mesh_device, dim=heads_dim)


def _check_laid_out(args: ModelArgs, mesh_device: MeshDevice):
    if args.model_config.cluster_shape != mesh_device.shape:
        raise ConfigError(f"args are laid out for a {args.model_config.cluster_shape} mesh, not {mesh_device.shape}; use mesh_args.")


def place_weight(spec: WeightSpec, w, args: ModelArgs, mesh_device: MeshDevice):
    """One weight (float32 values in its logical layout, host or device) laid out per device, split over the mesh
    and stored in its group's dtype (args from mesh_args). Each device's block of a block-float weight is encoded on
    its own, as each TT device holds its own tiles."""
    laid = LAYOUTS[spec.layout](jnp.asarray(w, jnp.float32), args, spec.split)
    split, dtype = mapper(spec, args, mesh_device), spec.dtype(args)
    one = lambda a: _place(mesh_device, split.map(np.asarray(a)), dtype)  # noqa: E731
    return [one(c) for c in laid] if isinstance(laid, list) else one(laid)


def is_placed(w, mesh_device: MeshDevice) -> bool:
    """Whether a weight (an array, a BlockFloatTensor, or the LM head's chunks) already lives split over this mesh."""
    if isinstance(w, list):
        return bool(w) and all(is_placed(c, mesh_device) for c in w)
    if isinstance(w, BlockFloatTensor):
        w = w.codes
    return isinstance(w, jax.Array) and w.sharding == mesh_device.sharding


def shard_params(params: TransformerParams, args: ModelArgs, mesh_device: MeshDevice) -> TransformerParams:
    """Unsharded params -> per-device params on mesh_device (args from mesh_args), weight by weight; weights already
    placed on this mesh (model.checkpoint.placed) are kept as they are."""
    _check_laid_out(args, mesh_device)

    def place(spec: WeightSpec, w):
        return w if is_placed(w, mesh_device) else place_weight(spec, w, args, mesh_device)

    return map_specs(place, args, params)


def _place(mesh_device: MeshDevice, blocks, dtype):
    if block_format(dtype) is not None:
        return place_blocks(mesh_device, blocks, block_format(dtype))
    return mesh_device.place(mesh_device.local_blocks(blocks, lambda b: np.asarray(b).astype(jnp.dtype(dtype))))


def allocate_mesh_kv_cache(args: ModelArgs, mesh_device: MeshDevice, batch: int | None = None):
    """Per device, per layer [K, V] of model.kv_cache's shape with this device's KV heads."""
    rows, cols = mesh_device.shape
    shape = (rows, cols, *kv_cache_shape(args, batch))
    zeros = jax.jit(lambda: jnp.zeros(shape, args.activation_dtype), out_shardings=mesh_device.sharding)
    return tuple((zeros(), zeros()) for _ in range(args.n_layers))


def replicate(x, mesh_device: MeshDevice) -> jax.Array:
    """An input (tokens, positions, rot mats, scalars) on every device."""
    rows, cols = mesh_device.shape
    if jax.process_count() == 1:
        x = jnp.asarray(x)
        return jax.device_put(jnp.broadcast_to(x, (rows, cols, *x.shape)), mesh_device.sharding)
    # Across processes each one places the copies on its own devices (every process holds the same input).
    host = np.asarray(x)
    whole = np.broadcast_to(host, (rows, cols, *host.shape))
    return jax.make_array_from_callback(whole.shape, mesh_device.sharding, lambda index: whole[index])


def abstract_params(args: ModelArgs, mesh_device: MeshDevice) -> TransformerParams:
    """The placed params' shapes, dtypes and shardings, without weights (to compile and inspect programs), from the
    same spec, layouts and mappers as shard_params (per-layer precision overrides included)."""
    _check_laid_out(args, mesh_device)
    rows, cols = mesh_device.shape

    def placed(local: tuple[int, ...], dtype):
        fmt = block_format(dtype)
        if fmt is None:
            return jax.ShapeDtypeStruct((rows, cols, *local), dtype, sharding=mesh_device.sharding)
        like = jax.eval_shape(lambda: to_block_float(jnp.zeros(local, jnp.float32), fmt))
        put = lambda a: jax.ShapeDtypeStruct((rows, cols, *a.shape), a.dtype, sharding=mesh_device.sharding)  # noqa: E731
        return BlockFloatTensor(put(like.codes), put(like.exps), tuple(local), fmt)

    def abstract(spec: WeightSpec):
        laid = jax.eval_shape(lambda w: LAYOUTS[spec.layout](w, args, spec.split), jax.ShapeDtypeStruct(spec.shape, jnp.float32))
        split, dtype = mapper(spec, args, mesh_device), spec.dtype(args)
        # The mapper's split of a zero-stride stand-in (no memory) gives one device's shape.
        local = lambda a: split.map(np.broadcast_to(np.zeros((), np.int8), a.shape))[0][0].shape  # noqa: E731
        return [placed(local(c), dtype) for c in laid] if isinstance(laid, list) else placed(local(laid), dtype)

    return jax.tree.map(abstract, param_specs(args))

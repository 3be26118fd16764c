"""Placement: where the compiled programs run and how their inputs and outputs get there.

One object for both cases: a single device (params converted to their precision, plain jit), or
a MeshDevice (params split by model.sharding, every program run per device under shard_map,
inputs replicated to every device, outputs read as one device holds them). The Generator,
the Engine and the vLLM interface go through it and never ask which case they are in.

A 1x1 mesh would serve for both, but measured 5% slower decode on XLA:CPU (SmolLM2, batch 1:
45.8 against 48.4 tokens/s, median of 10), so a single device stays unwrapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mesh import MeshDevice
from model.config import ModelArgs
from model.kv_cache import allocate_kv_cache
from model.params import TransformerParams, convert_params
from model.sharding import allocate_mesh_kv_cache, mesh_args, replicate, shard_params


class Placement:
    def __init__(self, args: ModelArgs, mesh_device: MeshDevice | None = None):
        if mesh_device is not None and args.model_config.cluster_shape != mesh_device.shape:
            args = mesh_args(args, mesh_device)
        self.args = args  # laid out for the mesh (model_config.cluster_shape)
        self.mesh_device = mesh_device

    def with_args(self, args: ModelArgs) -> Placement:
        return Placement(args, self.mesh_device)

    def params(self, params: TransformerParams) -> TransformerParams:
        """Loaded params as the programs take them: in their precision, on the device or split over the mesh."""
        if self.mesh_device is None:
            return convert_params(params, self.args)
        return shard_params(params, self.args, self.mesh_device)

    def put(self, x) -> jax.Array:
        """An input for the programs (tokens, positions, tables, scalars): on a mesh, replicated to every device."""
        return jnp.asarray(x) if self.mesh_device is None else replicate(x, self.mesh_device)

    def local(self, x) -> jax.Array:
        """A program output as one device holds it (outputs are replicated across the mesh): this process's first
        device's copy, so no process reads another's (on a multi-process mesh it could not)."""
        return x if self.mesh_device is None else x.addressable_shards[0].data[0, 0]

    def is_placed(self, x) -> bool:
        """Whether x is already an input in this placement (a device array with the mesh's leading dims)."""
        return isinstance(x, jax.Array) and (self.mesh_device is None or x.shape[:2] == self.mesh_device.shape)

    def spec(self, shape, dtype=jnp.int32) -> jax.ShapeDtypeStruct:
        """The abstract input of this shape, for compiling without data."""
        if self.mesh_device is None:
            return jax.ShapeDtypeStruct(shape, dtype)
        return jax.ShapeDtypeStruct((*self.mesh_device.shape, *shape), dtype, sharding=self.mesh_device.sharding)

    def kv_cache(self, batch: int | None = None):
        """Per layer [K, V], zeroed: model.kv_cache's layout, this device's KV heads on a mesh."""
        if self.mesh_device is None:
            return allocate_kv_cache(self.args, batch)
        return allocate_mesh_kv_cache(self.args, self.mesh_device, batch)

    def kv_cache_spec(self, batch: int | None = None):
        return jax.eval_shape(lambda: self.kv_cache(batch))

    def wrap(self, fn):
        """fn as the programs run it: as is on one device, per device under shard_map on a mesh."""
        return fn if self.mesh_device is None else self.mesh_device.shard_map(fn)

"""Loading straight into the model's storage: params built one weight at a time, in the precision and placement
the Generator runs them in.

Each weight is read (a checkpoint tensor dequantized, or dummy values drawn), converted to its group's dtype
(bfloat8_b / bfloat4_b codes and exponents, bfloat16, float32) and placed (on the default device, or split over a
mesh), and its float32 values are dropped before the next weight is read. On one device a weight is converted in
chunks of rows (model.params.convert_weight), so dummy Llama-3.1-8B in bfloat8_b (8.5 GB) loads in about its own
size plus a chunk. The results are exactly what model.params.convert_params / model.sharding.shard_params make of
the whole float32 model, so the Generator takes them as they are.
"""

from __future__ import annotations

from typing import Callable

import jax
from model.progress import progress as progress_of

from mesh import MeshDevice
from model.config import ModelArgs
from model.params import TransformerParams, WeightSpec, convert_weight, param_specs, row_chunks
from model.sharding import place_weight


def _whole(values, shape):
    """A weight's full float32 values, from a rows(r0, r1) function too (mesh placement lays out whole weights)."""
    import jax.numpy as jnp

    return jnp.concatenate([values(r0, r1) for r0, r1 in row_chunks(shape)]) if callable(values) else values


def build_params(read: Callable[[WeightSpec], object], args: ModelArgs, mesh_device: MeshDevice | None = None, *,
                 progress: bool = False, desc: str = "converting") -> TransformerParams:
    """Params in args' precision, on the default device or split over mesh_device (args laid out for it), made one
    weight at a time: read(spec) gives the weight's float32 values ([K, N], numpy or jax) or a function rows(r0, r1)
    of them; each weight is converted and placed, and its values dropped, before the next is read."""
    leaves, tree = jax.tree.flatten(param_specs(args))
    out = []
    for spec in progress_of(leaves, desc, enabled=progress):
        values = read(spec)
        if mesh_device is None:
            placed = convert_weight(spec, values, args)
        else:
            placed = place_weight(spec, _whole(values, spec.shape), args, mesh_device)
        del values
        out.append(jax.block_until_ready(placed))
    return jax.tree.unflatten(tree, out)


def dummy_params(args: ModelArgs, mesh_device: MeshDevice | None = None, *, seed: int = 0, std: float = 0.02,
                 progress: bool = False) -> TransformerParams:
    """dummy_weights' values straight in args' precision and placement (what Generator(dummy_weights(args), args)
    holds, without the float32 model)."""
    from model.checkpoint.dummy import dummy_reader

    return build_params(dummy_reader(args, seed=seed, std=std), args, mesh_device, progress=progress, desc=f"dummy weights for {args.model_name}")

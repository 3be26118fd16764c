"""dummy_weights: random weights of a real model's shapes, as tt-metal's `dummy_weights` option.

Lets a person bring up (and shard) Llama-3.2-1B/3B or 3.1-8B/70B shapes without the weights.
The shapes come from the parameter spec (model.params): matmul weights are N(0, 0.02) like HF's
initializer, norms are ones, and a tied LM head is the embedding's transpose.

Each weight is drawn in the row chunks it is converted in (model.params.row_chunks, a function of its
shape), seeded by its own key and the chunk's first row: `dummy_reader` hands a weight out chunk by
chunk, so model.checkpoint.placed can store Llama-3.1-8B in bfloat8_b without ever holding a whole weight in
float32, and `dummy_weights` (the whole tree, in one dtype) holds the same values.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from model.config import ModelArgs
from model.params import TransformerParams, WeightSpec, map_specs, param_specs, row_chunks


def _host_normal(key, r0, std, shape):
    """std * N(0, 1) in float32 from numpy's PCG64 seeded by (key, r0): about twice as fast as jax.random's threefry on
    the CPU, which makes the random values the cost of loading dummy Llama-3.1-8B."""
    rng = np.random.Generator(np.random.PCG64([int(w) for w in np.asarray(key).reshape(-1)] + [int(r0)]))
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


@partial(jax.jit, static_argnums=3)
def _normal_rows(key, r0, std, shape):
    # A callback inside a program: drawn when run, never when traced (jax.eval_shape(dummy_weights) stays abstract).
    return jax.pure_callback(partial(_host_normal, shape=shape), jax.ShapeDtypeStruct(shape, jnp.float32), key, r0, std)


def dummy_reader(args: ModelArgs, *, seed: int = 0, std: float = 0.02):
    """read(spec) -> the weight's float32 values: a function rows(r0, r1) for the row chunks of a random weight (jax
    arrays, drawn when asked for), else the whole array (norms; a tied LM head, the embedding's transpose)."""
    specs = jax.tree.leaves(param_specs(args))
    keys = dict(zip(((s.source, s.transpose) for s in specs), jax.random.split(jax.random.PRNGKey(seed), len(specs))))
    std = np.float32(std)

    def read(spec: WeightSpec):
        if spec.init == "ones":
            return np.ones(spec.shape, np.float32)
        if args.tie_word_embeddings and spec.transpose and spec.source[0][0] == "tok_embeddings.weight":
            embedding = (spec.source, False)
            shape = spec.source[0][1]
            return jnp.concatenate([_normal_rows(keys[embedding], r0, std, (r1 - r0, shape[1])) for r0, r1 in row_chunks(shape)]).T
        key = keys[(spec.source, spec.transpose)]
        return lambda r0, r1: _normal_rows(key, r0, std, (r1 - r0, spec.shape[1]))

    return read


def dummy_weights(args: ModelArgs, *, seed: int = 0, dtype=jnp.float32, std: float = 0.02) -> TransformerParams:
    """The whole params tree in one dtype (unconverted, as a checkpoint loads); model.checkpoint.placed.dummy_params
    stores the same values straight in the model's precision."""
    read = dummy_reader(args, seed=seed, std=std)

    def whole(spec: WeightSpec):
        values = read(spec)
        if callable(values):
            values = jnp.concatenate([values(r0, r1) for r0, r1 in row_chunks(spec.shape)])
        return jnp.asarray(values).astype(dtype)

    return map_specs(whole, args)

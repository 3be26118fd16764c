"""dummy_weights: random weights of a real model's shapes, as tt-metal's `dummy_weights` option.

Lets a person bring up (and shard) Llama-3.2-1B/3B or 3.1-8B/70B shapes without the weights;
pass n_layers to keep it within memory. The shapes come from the parameter spec (model.params):
matmul weights are N(0, 0.02) like HF's initializer, norms are ones, and a tied LM head is the
embedding's transpose.
"""

import jax
import jax.numpy as jnp

from model.config import ModelArgs
from model.params import TransformerParams, WeightSpec, param_specs


def dummy_weights(args: ModelArgs, *, seed: int = 0, dtype=jnp.float32, std: float = 0.02) -> TransformerParams:
    specs = param_specs(args)
    leaves, tree = jax.tree.flatten(specs)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))

    def init(spec: WeightSpec, key):
        if spec.init == "ones":
            return jnp.ones(spec.shape, dtype)
        return (std * jax.random.normal(key, spec.shape, jnp.float32)).astype(dtype)

    params = jax.tree.unflatten(tree, [init(s, k) for s, k in zip(leaves, keys)])
    if args.tie_word_embeddings:
        params.output = params.tok_embeddings.T
    return params

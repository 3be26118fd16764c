"""LM head: hidden states [.., dim] -> logits [.., vocab] (float32).

On a mesh each device holds its slice of the vocabulary, stored as column chunks of at most
max_columns_per_device_lm_head (tt-metal's splits); the chunk outputs are concatenated, then
the devices' slices all-gathered.
"""

import jax
import jax.numpy as jnp

import ttjax
from model.ccl import gather_vocab, reduce_k_split
from model.config import ModelArgs


def lm_head(x: jax.Array, weights: list[jax.Array], args: ModelArgs) -> jax.Array:
    local = jnp.concatenate([ttjax.linear(x, w) for w in weights], axis=-1)
    return gather_vocab(reduce_k_split(local, args), args).astype(jnp.float32)

"""LM head: hidden states [.., dim] -> logits [.., vocab] (float32)."""

import jax
import jax.numpy as jnp

import ttjax


def lm_head(x: jax.Array, weight: jax.Array) -> jax.Array:
    return ttjax.linear(x, weight).astype(jnp.float32)

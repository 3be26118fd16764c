"""SwiGLU feed-forward: w2(silu(w1 x) * w3 x)."""

import jax

import ttjax
from model.params import MLPParams


def mlp(p: MLPParams, x: jax.Array) -> jax.Array:
    return ttjax.linear(jax.nn.silu(ttjax.linear(x, p.w1)) * ttjax.linear(x, p.w3), p.w2)

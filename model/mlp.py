"""SwiGLU feed-forward: w2(silu(w1 x) * w3 x); w1/w3 column-parallel, w2 row-parallel."""

import jax

import ttjax
from model.ccl import reduce_k_split, reduce_row_parallel
from model.config import ModelArgs
from model.params import MLPParams


def mlp(p: MLPParams, x: jax.Array, args: ModelArgs, layer_id: int = 0) -> jax.Array:
    gate = reduce_k_split(ttjax.linear(x, p.w1), args)
    up = reduce_k_split(ttjax.linear(x, p.w3), args)
    return reduce_row_parallel(ttjax.linear(jax.nn.silu(gate) * up, p.w2), args)

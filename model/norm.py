"""RMSNorm with the model's epsilon."""

import jax

import ttjax
from model.config import ModelArgs


def rms_norm(x: jax.Array, weight: jax.Array, args: ModelArgs) -> jax.Array:
    return ttjax.rms_norm(x, weight, epsilon=args.norm_eps)

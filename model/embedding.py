"""Token embedding: tokens -> rows of tok_embeddings."""

import jax

import ttjax
from model.params import TransformerParams


def embedding(params: TransformerParams, tokens: jax.Array) -> jax.Array:
    return ttjax.embedding(tokens, params.tok_embeddings)

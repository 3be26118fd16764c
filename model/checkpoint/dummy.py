"""dummy_weights: random weights of a real model's shapes, as tt-metal's `dummy_weights` option.

Lets a person bring up (and shard) Llama-3.2-1B/3B or 3.1-8B/70B shapes without the weights;
pass n_layers to keep it within memory. Matmul weights are N(0, 0.02) like HF's initializer,
norms are ones.
"""

import jax
import jax.numpy as jnp

from model.config import ModelArgs
from model.params import AttentionParams, DecoderParams, MLPParams, TransformerParams


def dummy_weights(args: ModelArgs, *, seed: int = 0, dtype=jnp.float32, std: float = 0.02) -> TransformerParams:
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 5 * args.n_layers + 2))

    def normal(*shape):
        return (std * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

    def ones(n):
        return jnp.ones((n,), dtype)

    d, h = args.dim, args.hidden_dim
    layers = [
        DecoderParams(
            attention_norm=ones(d),
            attention=AttentionParams(wqkv=normal(d, args.qkv_size), wo=normal(args.n_heads * args.head_dim, d)),
            ffn_norm=ones(d),
            feed_forward=MLPParams(w1=normal(d, h), w2=normal(h, d), w3=normal(d, h)),
        )
        for _ in range(args.n_layers)
    ]
    output = None if args.tie_word_embeddings else normal(d, args.vocab_size)
    return TransformerParams(tok_embeddings=normal(args.vocab_size, d), layers=layers, norm=ones(d), output=output)

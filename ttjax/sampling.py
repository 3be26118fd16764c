"""Sampling on device, as tt-metal's decode does it: top-k (at most 32 candidates), then temperature and
top-p over those candidates, per user; k = 1 (or temperature 0) is argmax.

Every user brings its own temperature, top_k, top_p and seed as [batch] arrays, so one compiled
step serves a batch that mixes greedy and sampled users. The random key of a user's token is
fold_in(PRNGKey(seed), position): the token a request draws at a position does not depend on
which slot it sits in or who shares its batch, so a seeded request is reproducible alone or in
a continuous batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_TOP_K = 32  # tt-metal's on-device top-k takes k <= 32


def sample(logits, position, *, temperature, top_k, top_p, seed):
    """logits [B, V] -> tokens [B] int32. position [B]: the position the sampled token will take."""
    k = min(MAX_TOP_K, logits.shape[-1])
    values, indices = jax.lax.top_k(logits.astype(jnp.float32), k)  # sorted, most likely first
    rank = jnp.arange(k)
    top_k = jnp.clip(top_k, 1, k)
    greedy = (temperature <= 0) | (top_k == 1)
    t = jnp.where(greedy, 1.0, temperature)
    scaled = jnp.where(rank[None, :] < top_k[:, None], values / t[:, None], -jnp.inf)
    probs = jax.nn.softmax(scaled, axis=-1)
    # top-p: keep the smallest prefix whose mass reaches top_p (the most likely token always stays)
    before = jnp.cumsum(probs, axis=-1) - probs
    scaled = jnp.where(before < top_p[:, None], scaled, -jnp.inf)
    keys = jax.vmap(lambda s, p: jax.random.fold_in(jax.random.key(s), p))(seed.astype(jnp.uint32), position)
    choice = jax.vmap(jax.random.categorical)(keys, scaled)
    choice = jnp.where(greedy, 0, choice)
    return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)

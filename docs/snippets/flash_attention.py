# Flash attention (prefill) and flash decode against plain softmax attention. Prefill walks query and key chunks
# with an online softmax and skips key chunks past the causal diagonal; decode splits each user's cache into
# chunks, each user at its own position, and joins the chunks' partial results by log-sum-exp.
import jax
import jax.numpy as jnp
import numpy as np

import ttjax


def reference(q, k, v, lengths):  # one query row per user or a causal block; GQA by repeating KV heads
    k, v = (jnp.repeat(t, q.shape[1] // t.shape[1], axis=1) for t in (k, v))
    scores = q @ k.swapaxes(-1, -2) / q.shape[-1] ** 0.5
    mask = jnp.arange(k.shape[2])[None, :] < lengths[:, None, None, None]
    return jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1) @ v


rng = np.random.default_rng(0)
q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in [(1, 8, 512, 64), (1, 2, 512, 64), (1, 2, 512, 64)])
out = ttjax.scaled_dot_product_attention(q, k, v, is_causal=True, program_config=ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=128, k_chunk_size=128))
kg, vg = jnp.repeat(k, 4, axis=1), jnp.repeat(v, 4, axis=1)  # 8 query heads share 2 KV heads
causal = np.tril(np.ones((512, 512), bool))
dense = jax.nn.softmax(jnp.where(causal, q @ kg.swapaxes(-1, -2) / 8.0, -jnp.inf), axis=-1) @ vg  # a 512x512 matrix
print(f"flash attention, 512 rows in 128x128 chunks: max |error| {float(jnp.abs(out - dense).max()):.1e}")

pos = jnp.array([0, 37, 300, 1023], jnp.int32)  # four users, each at its own position in a 1024-row cache
q1 = jnp.asarray(rng.standard_normal((4, 8, 64)), jnp.float32)
kc, vc = (jnp.asarray(rng.standard_normal((4, 2, 1024, 64)), jnp.float32) for _ in range(2))
dec = ttjax.scaled_dot_product_attention_decode(q1, kc, vc, pos)
ref = reference(q1[:, :, None], kc, vc, pos + 1)[:, :, 0]
print(f"flash decode, users at {pos.tolist()}: max |error| {float(jnp.abs(dec - ref).max()):.1e}")

"""The whole model as one pure function: (params, tokens, rot mats, kv cache) -> (logits, kv cache).

Written per device: unsharded it runs as is; on a mesh it runs inside MeshDevice.shard_map
with this device's weights and cache (see model.sharding).

Layers are a Python loop inside one jitted program, not a lax.scan: on XLA:CPU a scan over
stacked weights slices each layer's weights into a fresh buffer every step, which measured
twice as slow at batch 1.
"""

from __future__ import annotations

import jax

from model.norm import norm_for_matmul
from model.config import TILE_SIZE, ModelArgs
from model.decoder import decoder
from model.embedding import embedding
from model.lm_head import lm_head
from model.params import TransformerParams
from model.rope import RotMats


def forward(
    params: TransformerParams,
    tokens: jax.Array,
    rot: RotMats,
    kv_cache,
    *,
    args: ModelArgs,
    mode: str,
    current_pos: jax.Array | None = None,
    user_id=0,
    get_last_token=None,
    last_row=None,
    return_hidden: bool = False,
    page_table=None,
    chunk_start_idx=None,
):
    """prefill: tokens [1, seq] of one user, written to cache slot user_id (or, with page_table, to its pages;
    with chunk_start_idx too, tokens are the chunk of the prompt that starts there). decode: tokens [batch],
    one per user at current_pos [batch].

    get_last_token (prefill): start row of the 32-row tile that holds the last real token; only that tile
    goes through the final norm and LM head, as in tt-metal. last_row (prefill, instead): the last real token's
    row; only that row does (the logits a prompt's generation reads: a row's logits do not depend on the tile's
    other rows, and the LM head of one row reads its weights once, as a decode step does). Neither computes logits
    for every position. Returns logits [1, rows (32, 1 or seq), vocab] (prefill) or [batch, 1, vocab] (decode), float32,
    and the cache;
    with return_hidden, also each decoder layer's output (for per-layer PCC).
    """
    x = embedding(params, tokens).astype(args.activation_dtype)
    if mode == "decode":
        x = x[:, None, :]
    new_cache, hidden = [], []
    for i, (layer, cache) in enumerate(zip(params.layers, kv_cache)):
        with jax.named_scope(f"layer_{i}"):
            x, cache = decoder(
                layer, x, rot, cache, args=args, mode=mode, current_pos=current_pos, user_id=user_id, layer_id=i,
                page_table=page_table, chunk_start_idx=chunk_start_idx,
            )
        new_cache.append(cache)
        hidden.append(x)
    if mode == "prefill" and get_last_token is not None:
        rows = min(TILE_SIZE, x.shape[1])
        x = jax.lax.dynamic_slice_in_dim(x, get_last_token, rows, axis=1)
    elif mode == "prefill" and last_row is not None:
        x = jax.lax.dynamic_slice_in_dim(x, last_row, 1, axis=1)
    x = norm_for_matmul(x, params.norm, args, mode)
    logits = lm_head(x, params.output, args)
    return (logits, tuple(new_cache), hidden) if return_hidden else (logits, tuple(new_cache))

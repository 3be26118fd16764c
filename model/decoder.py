"""Decoder layer: x + attention(norm(x)), then h + mlp(norm(h))."""

import jax

from model.attention import attention
from model.norm import norm_for_matmul
from model.config import ModelArgs
from model.mlp import mlp
from model.params import DecoderParams
from model.rope import RotMats


def decoder(
    p: DecoderParams, x: jax.Array, rot: RotMats, cache, *, args: ModelArgs, mode: str, current_pos=None, user_id=0, layer_id=0,
    page_table=None, chunk_start_idx=None,
):
    attn_in = norm_for_matmul(x, p.attention_norm, args, mode)
    attn_out, cache = attention(
        p.attention, attn_in, rot, cache, args=args, mode=mode, current_pos=current_pos, user_id=user_id, layer_id=layer_id,
        page_table=page_table, chunk_start_idx=chunk_start_idx,
    )
    h = x + attn_out
    return h + mlp(p.feed_forward, norm_for_matmul(h, p.ffn_norm, args, mode), args, layer_id=layer_id, mode=mode), cache

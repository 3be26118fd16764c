"""Decoder layer: x + attention(norm(x)), then h + mlp(norm(h))."""

import jax

from model.attention import attention
from model.config import ModelArgs
from model.mlp import mlp
from model.norm import rms_norm
from model.params import DecoderParams
from model.rope import RotMats


def decoder(p: DecoderParams, x: jax.Array, rot: RotMats, cache, *, args: ModelArgs, mode: str, current_pos=None, user_id=0):
    attn_out, cache = attention(
        p.attention, rms_norm(x, p.attention_norm, args), rot, cache, args=args, mode=mode, current_pos=current_pos, user_id=user_id
    )
    h = x + attn_out
    return h + mlp(p.feed_forward, rms_norm(h, p.ffn_norm, args)), cache

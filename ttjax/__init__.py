"""ttjax: the op surface of the Llama stack, named after ttnn (linear, rms_norm, embedding,
rotary_embedding_llama, scaled_dot_product_attention[_decode], fill_cache, update_cache).

Ops are pure jax functions; they know nothing about models (arrows point demos -> model ->
ttjax -> mesh).
"""

from ttjax.attention import scaled_dot_product_attention, scaled_dot_product_attention_decode
from ttjax.embedding import embedding
from ttjax.errors import TTJaxError
from ttjax.kv_cache import fill_cache, update_cache
from ttjax.linear import linear
from ttjax.norm import rms_norm
from ttjax.rotary import rotary_embedding_llama, rotate_pairs

__all__ = [
    "TTJaxError",
    "embedding",
    "fill_cache",
    "linear",
    "rms_norm",
    "rotary_embedding_llama",
    "rotate_pairs",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_decode",
    "update_cache",
]

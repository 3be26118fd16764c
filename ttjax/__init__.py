"""ttjax: the op surface of the Llama stack, named after ttnn (linear, rms_norm, embedding,
rotary_embedding_llama, scaled_dot_product_attention[_decode], fill_cache, update_cache), the
collectives (all_gather, reduce_scatter, all_reduce), host <-> mesh movement (as_tensor,
from_numpy, to_numpy) and TT's block floats (bfloat8_b, bfloat4_b, typecast).

Ops are pure jax functions; they know nothing about models (arrows point demos -> model ->
ttjax -> mesh).
"""

from ttjax.blockfloat import BlockFloatTensor, bfloat4_b, bfloat8_b, pack_as_bfp_tiles, quantize as typecast
from ttjax.ccl import ReduceType, Topology, all_gather, all_reduce, reduce_scatter
from ttjax.attention import scaled_dot_product_attention, scaled_dot_product_attention_decode
from ttjax.embedding import embedding
from ttjax.errors import TTJaxError
from ttjax.kv_cache import fill_cache, update_cache
from ttjax.linear import linear
from ttjax.norm import rms_norm, rms_norm_post_all_gather, rms_norm_pre_all_gather
from ttjax.tensor import as_tensor, from_numpy, to_numpy
from ttjax.rotary import rotary_embedding_llama, rotate_pairs

__all__ = [
    "BlockFloatTensor",
    "bfloat4_b",
    "bfloat8_b",
    "pack_as_bfp_tiles",
    "typecast",
    "ReduceType",
    "Topology",
    "all_gather",
    "all_reduce",
    "as_tensor",
    "from_numpy",
    "reduce_scatter",
    "to_numpy",
    "TTJaxError",
    "embedding",
    "fill_cache",
    "linear",
    "rms_norm",
    "rms_norm_post_all_gather",
    "rms_norm_pre_all_gather",
    "rotary_embedding_llama",
    "rotate_pairs",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_decode",
    "update_cache",
]

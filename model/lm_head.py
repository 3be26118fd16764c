"""LM head: hidden states [.., dim] -> logits [.., vocab] (float32).

Each device holds its slice of the vocabulary (all of it on one device), stored as column chunks
of at most max_columns_per_device_lm_head (tt-metal's splits, model.params.lm_head_chunks); the
chunk outputs are concatenated, then the devices' slices all-gathered.
"""

import jax
import jax.numpy as jnp

import ttjax
from model.ccl import gather_vocab, reduce_k_split
from model.config import ModelArgs
from model.precision import OpGroup, OutputSite, compute_kernel_config, output_dtype


def lm_head(x: jax.Array, weights, args: ModelArgs) -> jax.Array:
    """weights: the column chunks, or one [dim, vocab] weight (params as loaded, before placement). The matmuls run
    under lm_head.py's compute-kernel config (HiFi2, 16-bit Dst) and write bfloat8_b logits in a device config."""
    chunks = weights if isinstance(weights, (list, tuple)) else [weights]
    config = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LM_HEAD), dtype=output_dtype(args, OutputSite.LM_HEAD))
    local = jnp.concatenate([ttjax.linear(x, w, **config) for w in chunks], axis=-1)
    return gather_vocab(reduce_k_split(local, args), args).astype(jnp.float32)

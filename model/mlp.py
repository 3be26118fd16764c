"""SwiGLU feed-forward: w2(silu(w1 x) * w3 x); w1/w3 column-parallel, w2 row-parallel.

Each matmul runs under its op group's compute-kernel config (LI_FF1_FF3, LI_FF2) and writes its output in the
format tt_transformers gives it; the SiLU * w3 product is stored in bfloat8_b (model.precision)."""

import jax

import ttjax
from model.ccl import reduce_k_split, reduce_row_parallel
from model.config import ModelArgs
from model.params import MLPParams
from model.precision import OpGroup, OutputSite, compute_kernel_config, output_dtype, to_output


def mlp(p: MLPParams, x: jax.Array, args: ModelArgs, layer_id: int = 0) -> jax.Array:
    ff1_3 = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LI_FF1_FF3), dtype=output_dtype(args, OutputSite.FF1_FF3))
    gate = reduce_k_split(ttjax.linear(x, p.w1, **ff1_3), args)
    up = reduce_k_split(ttjax.linear(x, p.w3, **ff1_3), args)
    hidden = to_output(jax.nn.silu(gate) * up, args, OutputSite.MLP_MUL)
    ff2 = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LI_FF2), dtype=output_dtype(args, OutputSite.FF2))
    return reduce_row_parallel(ttjax.linear(hidden, p.w2, **ff2), args)

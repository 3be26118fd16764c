"""SwiGLU feed-forward: w2(silu(w1 x) * w3 x); w1/w3 column-parallel, w2 row-parallel.

Each matmul runs under its op group's compute-kernel config (LI_FF1_FF3, LI_FF2) and writes its output in the
format tt_transformers gives it; silu(w1 x) * (w3 x) is one ttnn.mul with SiLU fused on its first input, at
binary_ng's own config (MLP_MUL: the SiLU on the SFPU, the product on the matrix engine), stored in bfloat8_b
(model.precision)."""

import jax

import ttjax
from model.ccl import gather_ff2_input, reduce_ff1_ff3, reduce_row_parallel
from model.config import ModelArgs
from model.params import MLPParams
from model.precision import OpGroup, OutputSite, compute_kernel_config, emulation_kwargs, output_dtype


def mlp(p: MLPParams, x: jax.Array, args: ModelArgs, layer_id: int = 0, mode: str | None = None) -> jax.Array:
    """mode (which collectives follow w1 / w3 on a 2D mesh, model.ccl.scatter_ff1_ff3): "prefill" or "decode";
    None reads it from x, [batch, 1, dim] in decode (prefill pads a prompt to at least a tile of rows)."""
    mode = mode or ("decode" if x.shape[-2] == 1 else "prefill")
    ff1_3 = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LI_FF1_FF3), dtype=output_dtype(args, OutputSite.FF1_FF3))
    gate = reduce_ff1_ff3(ttjax.linear(x, p.w1, **ff1_3), args, mode)
    up = reduce_ff1_ff3(ttjax.linear(x, p.w3, **ff1_3), args, mode)
    product = ttjax.mul(gate, up, input_tensor_a_activations=("silu",), dtype=output_dtype(args, OutputSite.MLP_MUL),
                        input_tensor_a_dtype=output_dtype(args, OutputSite.FF1_FF3), **emulation_kwargs(args, OpGroup.MLP_MUL))
    hidden = gather_ff2_input(product, args, mode)
    ff2 = dict(compute_kernel_config=compute_kernel_config(args, OpGroup.LI_FF2), dtype=output_dtype(args, OutputSite.FF2))
    return reduce_row_parallel(ttjax.linear(hidden, p.w2, **ff2), args, "ff2", mode)

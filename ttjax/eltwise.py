"""ttjax.mul: ttnn.mul, with the activation ttnn fuses on its first input (input_tensor_a_activations), as
tt_transformers' MLP uses it: silu(w1 x) * (w3 x) in one op.

Without a compute_kernel_config: float math in the inputs' dtype (a reference). With one (ttnn's binary ops take
HiFi4 and a 16-bit Dst when given none, for bfloat16 and block-float inputs), what binary_ng's kernel computes
(ttnn/cpp/ttnn/operations/eltwise/binary_ng: eltwise_binary_no_bcast.cpp, eltwise_utils.hpp): a is copied to Dst
and the activation applied there on the SFPU (ttjax.sfpu), packed to a's format (input_tensor_a_dtype: ttnn tensors
carry their format, ttjax arrays hold block-float values in bfloat16 or float32); then the product on the matrix
engine (ELWMUL at the config's fidelity), packed to dtype. fpu=False makes the product exact float math, sfpu=False
the activation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import ttjax.sfpu as sfpu_fns
from ttjax.blockfloat import block_format, quantize
from mesh.errors import TTJaxError
from ttjax.matrix_engine import WormholeComputeKernelConfig, elwmul, pack

ACTIVATIONS = {"silu": jax.nn.silu}  # the exact form; the SFPU's is ttjax.sfpu's function of the same name


def mul(a: jax.Array, b: jax.Array, *, input_tensor_a_activations: tuple[str, ...] = (), dtype=None,
        compute_kernel_config: WormholeComputeKernelConfig | None = None, input_tensor_a_dtype=None, fpu: bool = True,
        sfpu: bool = True) -> jax.Array:
    """a * b (b broadcast to a), a first passed through each activation named in input_tensor_a_activations ("silu").
    dtype: the output format, a jnp dtype or ttjax.bfloat8_b / bfloat4_b (values rounded to it, held in a's dtype);
    default a's dtype."""
    for name in input_tensor_a_activations:
        if name not in ACTIVATIONS:
            raise TTJaxError(f"input_tensor_a_activations: {name!r} is not one of {', '.join(ACTIVATIONS)}.")
    held = a.dtype if dtype is None or block_format(dtype) is not None else jnp.dtype(dtype)
    out_format = dtype if dtype is not None else a.dtype
    if compute_kernel_config is None:
        for name in input_tensor_a_activations:
            a = ACTIVATIONS[name](a)
        out = a * b
        return (quantize(out, out_format, device=True) if block_format(out_format) is not None else out).astype(held)
    fp32 = compute_kernel_config.fp32_dest_acc_en
    if input_tensor_a_activations:
        dst = sfpu_fns.to_dst(a, fp32)  # copy_tile: a into Dst
        for name in input_tensor_a_activations:
            dst = sfpu_fns.run_on_dst(dst, name, fp32=fp32) if sfpu else ACTIVATIONS[name](dst)
        # packed to the intermediate buffer in a's format
        a = pack(dst, input_tensor_a_dtype or a.dtype, fp32).astype(jnp.float32)
    dst = elwmul(a, b, compute_kernel_config) if fpu else a.astype(jnp.float32) * b.astype(jnp.float32)
    return pack(dst, out_format, fp32).astype(held)

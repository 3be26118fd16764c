"""ttjax.matmul and ttjax.linear (a matmul against a weight stored [K, N], the way TT stores matmul weights),
with ttnn's compute_kernel_config= and dtype= (ttjax.matrix_engine emulates what the matrix engine computes
for a config)."""

import jax
import jax.numpy as jnp

from ttjax.blockfloat import BlockFloatTensor, block_format
from ttjax.matrix_engine import TILE, WormholeComputeKernelConfig, check_depth, pack, stored_matrix, tensix_matmul_stored
from ttjax.memory_config import DRAM_MEMORY_CONFIG, MemoryConfig, TensorSpec
import ttjax.native as native_lib
from ttjax.op_validation import validate_matmul


def matmul(x: jax.Array, weight, *, compute_kernel_config: WormholeComputeKernelConfig | None = None, dtype=None) -> jax.Array:
    """x [..., K] @ weight [K, N] -> [..., N]; x is in0 (SrcB), weight in1 (SrcA).

    Without a compute_kernel_config the product is exact float math, accumulated in float32 (a reference, not
    hardware). With one, it is what a Tensix core computes under that config: math-fidelity phases, Dst in FP32
    or BF16, the packer's rounding to dtype (ttjax.matrix_engine). dtype is the output format: a jnp dtype or
    ttjax.bfloat8_b / bfloat4_b (values rounded to it, held in x's dtype); default x's dtype.

    A block-float weight is decoded inside the program, so it stays compact at rest; its values fit bfloat16
    and float32 exactly. Where ttjax's native kernels run, bfloat16 and block-float weights are read as stored by
    them (XLA:CPU would write out a decoded copy and run a slow bfloat16 dot)."""
    out_dtype = x.dtype if dtype is None or block_format(dtype) is not None else jnp.dtype(dtype)
    if compute_kernel_config is None:
        out = exact_matmul(x, weight)
        if block_format(dtype) is not None:
            return pack(out, dtype, True).astype(out_dtype)
        return out.astype(out_dtype)
    rows = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    dst = tensix_matmul_stored(rows, weight, compute_kernel_config)
    out = pack(dst, dtype if dtype is not None else x.dtype, compute_kernel_config.fp32_dest_acc_en)
    return out.reshape(*x.shape[:-1], dst.shape[-1]).astype(out_dtype)


def exact_matmul(x: jax.Array, weight, *, native: bool = True, isa: str = "auto") -> jax.Array:
    """x [..., K] @ weight [K, N] in exact float math, float32 out: the product of x's values (in x's dtype) and
    the weight's stored values, summed in float32. native: through ttjax's kernel where it is built and the weight
    is stored compactly (bfloat16 or a block float; float32 weights go to XLA's dot, as fast at memory speed)."""
    compact = isinstance(weight, BlockFloatTensor) or weight.dtype == jnp.bfloat16
    if native and compact and native_lib.available():
        check_depth(x, weight)
        weight = stored_matrix(weight)
        if (weight.codes.ndim if isinstance(weight, BlockFloatTensor) else weight.ndim) == 2:
            k = x.shape[-1]
            depth = weight.codes.shape[-2] if isinstance(weight, BlockFloatTensor) else k + (-k % TILE)
            rows = jnp.pad(x.reshape(-1, k).astype(jnp.float32), ((0, 0), (0, depth - k)))
            out = native_lib.tensix_matmul(rows, weight, 1, True, exact=True, isa=isa)
            return out.reshape(*x.shape[:-1], out.shape[-1])
    w = weight.decode(x.dtype) if isinstance(weight, BlockFloatTensor) else weight.astype(x.dtype)
    return jnp.matmul(x, w, preferred_element_type=jnp.float32)


def linear(x: jax.Array, weight, *, compute_kernel_config: WormholeComputeKernelConfig | None = None, dtype=None,
           program_config=None, memory_config: MemoryConfig | None = None, input_memory_config: MemoryConfig | None = None,
           weight_memory_config: MemoryConfig | None = None) -> jax.Array:
    """ttnn.linear without a bias: ttjax.matmul against a weight.

    program_config (a ttjax.program_config matmul config) and memory_config (the output's) are checked as a Wormhole
    checks them (ttjax.op_validation), at trace time: a config the chip would refuse raises OpConfigError here.
    ttnn reads the operands' memory configs off the tensors; ttjax arrays carry none, so they are given as
    input_memory_config and weight_memory_config (default DRAM interleaved). None of them changes the result, as on
    the device."""
    if program_config is not None:
        validate_matmul("ttjax.linear", _spec(x, input_memory_config), _spec(weight, weight_memory_config), program_config,
                        memory_config or DRAM_MEMORY_CONFIG, _format(dtype if dtype is not None else x.dtype),
                        fp32_dest_acc_en=bool(compute_kernel_config and compute_kernel_config.fp32_dest_acc_en),
                        packer_l1_acc=bool(compute_kernel_config and compute_kernel_config.packer_l1_acc))
    return matmul(x, weight, compute_kernel_config=compute_kernel_config, dtype=dtype)


def _format(dtype) -> str:
    """The tile format a dtype is stored in on the device (float32 activations are float32 tiles)."""
    fmt = block_format(dtype)
    return fmt.name if fmt is not None else jnp.dtype(dtype).name


def _spec(t, memory_config) -> TensorSpec:
    return TensorSpec(t.shape, _format(t.dtype), memory_config or DRAM_MEMORY_CONFIG)

# What the matrix engine computes: a bfloat8_b weight times bfloat16 activations at each math fidelity, and the
# destination register accumulating in FP32 or BF16. Each phase takes 5 bits of the weight and 7 of the activation.
import jax.numpy as jnp
import numpy as np

import ttjax
from ttjax.blockfloat import to_block_float
from ttjax.metrics import pcc

rng = np.random.default_rng(0)
x = jnp.asarray(rng.standard_normal((32, 2048)), jnp.bfloat16)
w = rng.standard_normal((2048, 512)).astype(np.float32) / 45
exact = np.asarray(x, np.float32) @ w  # float math on the unrounded weight
w8 = to_block_float(w, ttjax.bfloat8_b)
for fidelity in (ttjax.MathFidelity.LoFi, ttjax.MathFidelity.HiFi2, ttjax.MathFidelity.HiFi3, ttjax.MathFidelity.HiFi4):
    for fp32_dst in (True, False):
        cfg = ttjax.WormholeComputeKernelConfig(math_fidelity=fidelity, fp32_dest_acc_en=fp32_dst)
        y = np.asarray(ttjax.linear(x, w8, compute_kernel_config=cfg, dtype=jnp.bfloat16), np.float32)
        print(f"{fidelity.name:5} {'FP32' if fp32_dst else 'BF16'} Dst: PCC {pcc(exact, y):.6f}, "
              f"mean |error| {np.abs(y - exact).mean():.4f}")

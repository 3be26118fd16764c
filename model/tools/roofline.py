"""The roofline of decode: the machine's measured read bandwidth, and the bytes of weights a decode step reads.

Read bandwidth: a jitted float32 GEMV, y = A @ x, over a square matrix of `mib` MiB (1 GiB by default,
16384 x 16384), far past every cache. One call warms up, then `runs` calls are timed (each waits for its
result); the figure is A's bytes over the median time (x and y are 64 KiB, left out). XLA:CPU runs the dot on
its intra-op thread pool, every core, so it is what one whole-machine decode step can read at best.

Weight bytes per decode step: every stored byte of every matrix and norm as the step reads it (float32 4 B a
value, bfloat16 2 B, bfloat8_b and bfloat4_b their codes and shared exponents as stored), the LM head once and the
embedding table not at all (a token reads one row of it). A model whose embedding and LM head are tied reads that
matrix once, as the LM head. At batch 1 a step makes one token, so the roofline is bandwidth / weight bytes tokens/s;
a batch of B makes B tokens a step from the same weights.
"""

from __future__ import annotations

import statistics
import time

METHOD = "jitted float32 GEMV (y = A @ x) over a {mib} MiB matrix, median of {runs} timed calls after one warm-up"


def read_bandwidth(mib: int = 1024, runs: int = 7) -> dict:
    """{"gb_s": median, "runs_gb_s": [...], "method": how} for a GEMV over a float32 matrix of about mib MiB."""
    import jax
    import jax.numpy as jnp

    n = max(256, int((mib * 2**20 / 4) ** 0.5) // 256 * 256)
    a = jax.jit(lambda: jnp.ones((n, n), jnp.float32))()  # materialised: the GEMV takes it as an argument
    x = jnp.ones((n,), jnp.float32)
    gemv = jax.jit(lambda a, x: a @ x)
    gemv(a, x).block_until_ready()
    seconds = []
    for _ in range(runs):
        t = time.perf_counter()
        gemv(a, x).block_until_ready()
        seconds.append(time.perf_counter() - t)
    nbytes = a.nbytes
    del a
    return {
        "gb_s": nbytes / statistics.median(seconds) / 1e9,
        "runs_gb_s": [nbytes / s / 1e9 for s in seconds],
        "method": METHOD.format(mib=round(nbytes / 2**20), runs=runs),
    }


def ttjax_weight_bytes(params) -> int:
    """Bytes a decode step reads from ttjax params as placed (summed over a mesh's devices): all but the
    embedding table (the LM head is a weight of its own, a copy when tied)."""
    import jax

    from model.params import weight_nbytes

    return weight_nbytes(params) - sum(leaf.nbytes for leaf in jax.tree.leaves(params.tok_embeddings))


def gguf_weight_bytes(path: str) -> int:
    """Bytes a decode step reads from a GGUF file's tensors as stored (llama.cpp computes on them so): all but
    token_embd, unless there is no output.weight (tied: the LM head reads token_embd)."""
    from model.checkpoint.gguf import open_gguf

    tensors = {t.name: int(t.n_bytes) for t in open_gguf(path).tensors}
    tied = "output.weight" not in tensors
    return sum(tensors.values()) - (0 if tied else tensors.get("token_embd.weight", 0))


def roofline_fraction(tokens_per_s: float, batch: int, weight_bytes: int, gb_s: float) -> float:
    """Decode steps/s x weight bytes a step / read bandwidth: the share of the bandwidth the weights alone take."""
    return tokens_per_s / batch * weight_bytes / (gb_s * 1e9)

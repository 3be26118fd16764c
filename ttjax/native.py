"""ttjax's native CPU kernels, reached through JAX's extension point (jax.ffi custom calls).

`make setup` builds them (ttjax.native.build()): g++ compiles ttjax/csrc/*.cc against the XLA FFI headers
that jaxlib ships, into ttjax/_native.so. The vector ISA is chosen at run time from what the CPU has: AVX-512
kernels written with intrinsics (weights decoded in registers), else the portable C++ compiled for AVX2 + FMA,
else for the baseline; `isa=` (or TTJAX_NATIVE_ISA for every call) picks a level explicitly (the tests run
every level the machine can). Where the library is missing or does not load, or TTJAX_NATIVE=0 is set,
`available()` is False and callers use their pure-JAX path, which is the reference the kernels are tested
against.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cc"))
LIBRARY = Path(__file__).with_name("_native.so")
TENSIX_MATMUL = "ttjax_tensix_matmul"
TENSIX_MATMUL_BFP = "ttjax_tensix_matmul_block_float"
GATHER_ROWS = "ttjax_gather_rows"
SCATTER_ROWS = "ttjax_scatter_rows"
SFPU = "ttjax_sfpu"
SDPA_DECODE = "ttjax_sdpa_decode"
SDPA_PREFILL = "ttjax_sdpa_prefill"
# ttjax/csrc/sfpu.cc's functions (its enum Fn)
SFPU_FUNCTIONS = {"exp": 0, "reciprocal": 1, "rsqrt": 2, "sqrt": 3, "sigmoid": 4, "silu": 5, "mul_scalar": 6,
                  "exp_schraudolph": 7, "exp_polynomial": 8, "exp_accurate_scaled": 9, "reciprocal_iter": 10}
ISA_LEVELS = {"auto": 0, "portable": 1, "avx2": 2, "avx512": 3, "avx512vbmi": 4}  # avx512vbmi: AVX-512 with VBMI


def build(verbose: bool = True) -> bool:
    """Compile the kernels; False (with the compiler's message) where they cannot be built."""
    cmd = [
        os.environ.get("CXX", "g++"), "-O3", "-std=c++17", "-shared", "-fPIC",
        "-ffp-contract=off", "-fno-fast-math", f"-I{jax.ffi.include_dir()}", *map(str, SOURCES), "-o", str(LIBRARY),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        if verbose:
            print(f"ttjax: native kernels not built, the pure-JAX path will be used ({getattr(e, 'stderr', '') or e})",
                  file=sys.stderr)
        return False
    if verbose:
        print(f"ttjax: built {LIBRARY.name}")
    return True


@functools.cache
def _load():
    if os.environ.get("TTJAX_NATIVE", "1") == "0" or not LIBRARY.exists():
        return None
    try:
        lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
        jax.ffi.register_ffi_target(TENSIX_MATMUL, jax.ffi.pycapsule(lib.TtjaxTensixMatmul), platform="cpu")
        jax.ffi.register_ffi_target(TENSIX_MATMUL_BFP, jax.ffi.pycapsule(lib.TtjaxTensixMatmulBlockFloat), platform="cpu")
        jax.ffi.register_ffi_target(GATHER_ROWS, jax.ffi.pycapsule(lib.TtjaxGatherRows), platform="cpu")
        jax.ffi.register_ffi_target(SCATTER_ROWS, jax.ffi.pycapsule(lib.TtjaxScatterRows), platform="cpu")
        jax.ffi.register_ffi_target(SFPU, jax.ffi.pycapsule(lib.TtjaxSfpu), platform="cpu")
        jax.ffi.register_ffi_target(SDPA_DECODE, jax.ffi.pycapsule(lib.TtjaxSdpaDecode), platform="cpu")
        jax.ffi.register_ffi_target(SDPA_PREFILL, jax.ffi.pycapsule(lib.TtjaxSdpaPrefill), platform="cpu")
        lib.TtjaxIsaLevels.restype = ctypes.c_int64
    except (OSError, AttributeError) as e:
        print(f"ttjax: {LIBRARY.name} did not load ({e}); the pure-JAX path will be used", file=sys.stderr)
        return None
    return lib


def _isa_code(isa: str) -> np.int64:
    """The level a call runs at: isa, or where it is "auto" the TTJAX_NATIVE_ISA environment variable's (read when a
    function is traced), else the best the CPU has."""
    if isa == "auto":
        isa = os.environ.get("TTJAX_NATIVE_ISA", "auto")
    if isa not in ISA_LEVELS:
        from mesh.errors import TTJaxError

        raise TTJaxError(f"TTJAX_NATIVE_ISA / isa = {isa!r} is not one of {', '.join(ISA_LEVELS)}.")
    return np.int64(ISA_LEVELS[isa])


def available() -> bool:
    """The native kernels are built, loaded and not switched off (TTJAX_NATIVE=0)."""
    return _load() is not None


def isa_levels() -> list[str]:
    """The vector ISA levels the kernels can run at on this CPU, lowest first (empty without the kernels)."""
    lib = _load()
    if lib is None:
        return []
    bits = lib.TtjaxIsaLevels()
    return [name for name, level in ISA_LEVELS.items() if level and bits >> level & 1]


def tensix_matmul(x: jax.Array, w, phases: int, fp32_dest: bool, tf32: bool = False, exact: bool = False,
                  isa: str = "auto") -> jax.Array:
    """The matrix engine's Dst for x [R, K] @ w (see ttjax.matrix_engine); call only when available().

    x: unpacked float32 operands, K a multiple of 32. w as stored: float32 or bfloat16 [K' <= K, N] (float32 read
    as TF32 when tf32, else BF16), or a 2-D ttjax.BlockFloatTensor whose padded rows are K; it is decoded and
    unpacked inside the kernel. exact: float32 math on x and the stored values as they are (no phases, no Dst
    rounding; the order of the sum is the kernel's). isa: one of ISA_LEVELS."""
    modes = dict(phases=np.int64(phases), fp32_dest=bool(fp32_dest), exact=bool(exact), isa=_isa_code(isa))
    from ttjax.blockfloat import BlockFloatTensor

    if isinstance(w, BlockFloatTensor):
        n = w.shape[-1]
        out = jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32)
        return jax.ffi.ffi_call(TENSIX_MATMUL_BFP, out, vmap_method="sequential")(
            x.astype(jnp.float32), w.codes, w.exps, mantissa_bits=np.int64(w.fmt.mantissa_bits), **modes
        )
    if w.dtype not in (jnp.bfloat16, jnp.float32):
        w = w.astype(jnp.float32)
    out = jax.ShapeDtypeStruct((x.shape[0], w.shape[1]), jnp.float32)
    return jax.ffi.ffi_call(TENSIX_MATMUL, out, vmap_method="sequential")(x.astype(jnp.float32), w, tf32=bool(tf32), **modes)


def sfpu(dst: jax.Array, fn: str, *, fp32: bool, approx: bool = False, p0: int = 0, p1: int = 0, flag: int = 0,
         isa: str = "auto") -> jax.Array:
    """An SFPU function over Dst values (float32 arrays, any shape): loaded, computed and stored as
    ttjax.sfpu.run_on_dst describes; call only when available(). fn: one of SFPU_FUNCTIONS; p0, p1, flag: its
    constants (see ttjax/csrc/sfpu.cc)."""
    out = jax.ShapeDtypeStruct(dst.shape, jnp.float32)
    return jax.ffi.ffi_call(SFPU, out, vmap_method="expand_dims")(
        dst.astype(jnp.float32), fn=np.int64(SFPU_FUNCTIONS[fn]), fp32=bool(fp32), approx=bool(approx), p0=np.int64(p0),
        p1=np.int64(p1), flag=np.int64(flag), isa=_isa_code(isa))


def sdpa_decode(q, k_cache, v_cache, pos, page_table, *, n_kv: int, block: int, seq: int, k_chunk: int, phases: int,
                fp32: bool, exp_approx: bool, corr_approx: bool, recip_approx: bool, scale_bits: int, a_bits: int,
                isa: str = "auto") -> jax.Array:
    """Flash decode as tt-metal's kernel computes it (ttjax.sdpa_kernel's decode walk) in one call: q [N, G, d] float32
    (N = users x KV heads), the caches contiguous [N, S, d] or paged [blocks, KV, block, d] with page_table
    [B, blocks_per_user] (an empty array for a contiguous cache), pos [N] int32. Returns the final Dst [N, G, d]."""
    out = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    return jax.ffi.ffi_call(SDPA_DECODE, out)(
        q.astype(jnp.float32), k_cache, v_cache, pos.astype(jnp.int32), page_table.astype(jnp.int32), n_kv=np.int64(n_kv),
        block=np.int64(block), seq=np.int64(seq), k_chunk=np.int64(k_chunk), phases=np.int64(phases), fp32=bool(fp32),
        exp_approx=bool(exp_approx), corr_approx=bool(corr_approx), recip_approx=bool(recip_approx),
        scale_bits=np.int64(scale_bits), a_bits=np.int64(a_bits), isa=_isa_code(isa))


def sdpa_prefill(q, k_cache, v_cache, page_row, q_start, *, block: int, seq: int, q_chunk: int, k_chunk: int,
                 n_keys: int, causal: bool, phases: int, fp32: bool, exp_approx: bool, corr_approx: bool,
                 recip_approx: bool, scale_bits: int, a_bits: int, isa: str = "auto") -> jax.Array:
    """Flash attention as tt-metal's prefill kernel computes it (ttjax.sdpa_kernel's prefill walk) in one call:
    q [N, G, Sq, d] unscaled (N = users x KV heads), the keys contiguous [N, seq, d] (page_row empty) or a paged cache
    [blocks, KV, block, d] read through page_row [blocks_per_user]; q_start: the position of query row 0 (an int32
    scalar, may be traced). Returns the final Dst [N, G, Sq, d]."""
    out = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    return jax.ffi.ffi_call(SDPA_PREFILL, out)(
        q.astype(jnp.float32), k_cache, v_cache, page_row.astype(jnp.int32), jnp.asarray(q_start, jnp.int32).reshape(1),
        block=np.int64(block), seq=np.int64(seq), q_chunk=np.int64(q_chunk), k_chunk=np.int64(k_chunk),
        n_keys=np.int64(n_keys), causal=bool(causal), phases=np.int64(phases), fp32=bool(fp32),
        exp_approx=bool(exp_approx), corr_approx=bool(corr_approx), recip_approx=bool(recip_approx),
        scale_bits=np.int64(scale_bits), a_bits=np.int64(a_bits), isa=_isa_code(isa))


def rows_kernels_for(cache) -> bool:
    """gather_rows / scatter_rows serve this cache: a bfloat16 one (XLA:CPU moves bfloat16 data through float32,
    a whole cache at a time; float32 caches it reads and writes in place itself), with the kernels built."""
    return cache.dtype == jnp.bfloat16 and available()


def gather_rows(cache: jax.Array, idx: jax.Array) -> jax.Array:
    """float32 rows of cache viewed as [rows, d]: out[..., :] = cache row idx[...] (zeros for an index outside)."""
    out = jax.ShapeDtypeStruct((*idx.shape, cache.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call(GATHER_ROWS, out)(cache, idx.astype(jnp.int32))


def scatter_rows(cache: jax.Array, idx: jax.Array, values: jax.Array) -> jax.Array:
    """cache with row idx[m] set to values[m] (in the cache's dtype), in place; an index outside writes nothing."""
    out = jax.ShapeDtypeStruct(cache.shape, cache.dtype)
    return jax.ffi.ffi_call(SCATTER_ROWS, out, input_output_aliases={0: 0})(
        cache, idx.reshape(-1).astype(jnp.int32), values.reshape(-1, cache.shape[-1]).astype(cache.dtype))

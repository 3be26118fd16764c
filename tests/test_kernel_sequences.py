"""The kernels of a decoder step beyond the matmuls (RMSNorm, the MLP's multiply with SiLU, flash attention, flash
decode, the rotary embedding) against a plain numpy reference of each kernel's sequence (tests/kernel_reference.py) on
small shapes, bit for bit; the native walks against the pure-JAX ones at every ISA level; and the emulated path
against the exact one (they must differ)."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttjax
import ttjax.native as native
from tests import kernel_reference as kr
from ttjax.matrix_engine import MathFidelity, WormholeComputeKernelConfig

CONFIGS = {  # tt_transformers' norm (HiFi2, FP32 Dst) and SDPA configs, and their opposites
    "HiFi2-fp32-exact": WormholeComputeKernelConfig(MathFidelity.HiFi2, math_approx_mode=False, fp32_dest_acc_en=True),
    "HiFi4-bf16-approx": WormholeComputeKernelConfig(MathFidelity.HiFi4, math_approx_mode=True, fp32_dest_acc_en=False),
    "LoFi-fp32-approx": WormholeComputeKernelConfig(MathFidelity.LoFi, math_approx_mode=True, fp32_dest_acc_en=True),
    "HiFi2-bf16-exact": WormholeComputeKernelConfig(MathFidelity.HiFi2, math_approx_mode=False, fp32_dest_acc_en=False),
}


def bits(x):
    return np.asarray(jnp.asarray(x, jnp.float32)).view(np.uint32)


def assert_bits_equal(got, want):
    got, want = bits(got), np.asarray(np.asarray(want, np.float64), np.float32).view(np.uint32)
    assert got.shape == want.shape
    bad = np.flatnonzero(got.ravel() != want.ravel())
    assert bad.size == 0, f"{bad.size} of {got.size} values differ, first at {bad[0]}: " \
                          f"{got.ravel()[bad[0]].view(np.float32)} vs {want.ravel()[bad[0]].view(np.float32)}"


@contextlib.contextmanager
def pure_jax():
    """The pure-JAX walk (the native kernels switched off for the block)."""
    saved = native.available
    native.available = lambda: False
    try:
        yield
    finally:
        native.available = saved


def bf16(rng, shape, scale=1.0):
    return jnp.asarray(rng.normal(size=shape) * scale, jnp.bfloat16)


def f64(x):
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64)


def fid(cfg):
    return cfg.math_fidelity.name


# ---------------------------------------------------------------------------------------------------- RMSNorm
@pytest.mark.parametrize("name", CONFIGS)
def test_rms_norm_is_the_kernels_sequence(name):
    cfg, rng = CONFIGS[name], np.random.default_rng(1)
    x, w = bf16(rng, (6, 96), 3.0), bf16(rng, (96,))
    got = ttjax.rms_norm(x, w, epsilon=1e-5, compute_kernel_config=cfg)
    assert got.dtype == jnp.bfloat16
    assert_bits_equal(got, kr.rms_norm(f64(x), f64(w), 1e-5, fid(cfg), cfg.fp32_dest_acc_en, cfg.math_approx_mode))


@pytest.mark.parametrize("name", ["HiFi2-fp32-exact", "HiFi4-bf16-approx"])
def test_distributed_rms_norm_is_the_kernels_sequence(name):
    cfg, rng = CONFIGS[name], np.random.default_rng(2)
    x, w = bf16(rng, (5, 64), 2.0), bf16(rng, (64,))
    stats = ttjax.rms_norm_pre_all_gather(x, compute_kernel_config=cfg)
    assert_bits_equal(stats, kr.rms_norm_pre(f64(x), fid(cfg), cfg.fp32_dest_acc_en))
    gathered = jnp.concatenate([stats, stats * 0.5, stats * 2.0, stats], axis=-1)  # four devices' sums
    got = ttjax.rms_norm_post_all_gather(x, gathered, w, epsilon=1e-6, dim=256, compute_kernel_config=cfg)
    want = kr.rms_norm_post(f64(x), f64(gathered), f64(w), 1e-6, 256, fid(cfg), cfg.fp32_dest_acc_en,
                            cfg.math_approx_mode)
    assert_bits_equal(got, want)


@pytest.mark.parametrize("name", ["HiFi4-bf16-approx", "LoFi-fp32-approx"])
def test_rms_norm_emulation_differs_from_exact(name):
    """Where the rsqrt is approximate the SFPU shows in the output (with tt_transformers' HiFi2 / exact / FP32 Dst norm
    config its error is below what reading the rsqrt back as TF32 keeps); the matrix engine's steps always do."""
    cfg, rng = CONFIGS[name], np.random.default_rng(3)
    x, w = bf16(rng, (32, 256), 3.0), bf16(rng, (256,))
    emulated = bits(ttjax.rms_norm(x, w, epsilon=1e-5, compute_kernel_config=cfg))
    no_sfpu = bits(ttjax.rms_norm(x, w, epsilon=1e-5, compute_kernel_config=cfg, sfpu=False))
    exact = bits(ttjax.rms_norm(x, w, epsilon=1e-5, compute_kernel_config=cfg, sfpu=False, fpu=False))
    assert (emulated != no_sfpu).any() and (no_sfpu != exact).any()


# ---------------------------------------------------------------------------------------------------- MLP
@pytest.mark.parametrize("name", CONFIGS)
def test_silu_multiply_is_the_kernels_sequence(name):
    cfg, rng = CONFIGS[name], np.random.default_rng(4)
    a, b = bf16(rng, (8, 64), 4.0), bf16(rng, (8, 64))
    got = ttjax.mul(a, b, input_tensor_a_activations=("silu",), compute_kernel_config=cfg)
    assert_bits_equal(got, kr.silu_mul(f64(a), f64(b), fid(cfg), cfg.fp32_dest_acc_en))


def test_silu_multiply_emulation_differs_from_exact():
    cfg = WormholeComputeKernelConfig(MathFidelity.HiFi4, math_approx_mode=False, fp32_dest_acc_en=False)
    a = jnp.asarray(np.linspace(-8, 8, 4096).reshape(64, 64), jnp.bfloat16)
    b = jnp.ones_like(a)
    sfpu = bits(ttjax.mul(a, b, input_tensor_a_activations=("silu",), compute_kernel_config=cfg))
    exact = bits(ttjax.mul(a, b, input_tensor_a_activations=("silu",), compute_kernel_config=cfg, sfpu=False))
    assert 0 < (sfpu != exact).mean() < 0.5


# ---------------------------------------------------------------------------------------------------- SDPA
def prefill_reference(q, k, v, cfg, pc, scale):
    """Every (head, query chunk) through kr.flash_attention, packed to bfloat16."""
    b, h, s, d = q.shape
    g = h // k.shape[1]
    out = np.zeros(q.shape)
    for hh in range(h):
        for start in range(0, s, pc.q_chunk_size):
            rows = slice(start, start + pc.q_chunk_size)
            dst = kr.flash_attention(f64(q[0, hh, rows]), f64(k[0, hh // g]), f64(v[0, hh // g]),
                                     np.arange(s)[rows], pc.k_chunk_size, fid(cfg), cfg.fp32_dest_acc_en,
                                     cfg.math_approx_mode, pc.exp_approx_mode, scale)
            out[0, hh, rows] = kr.pack_bf16(dst, cfg.fp32_dest_acc_en)
    return out


@pytest.mark.parametrize("name", ["HiFi2-fp32-exact", "HiFi4-bf16-approx", "LoFi-fp32-approx"])
@pytest.mark.parametrize("exp_approx_mode", [False, True])
def test_flash_attention_is_the_kernels_sequence(name, exp_approx_mode):
    cfg, rng = CONFIGS[name], np.random.default_rng(5)
    q, k, v = bf16(rng, (1, 4, 96, 32), 2.0), bf16(rng, (1, 2, 96, 32), 2.0), bf16(rng, (1, 2, 96, 32))
    pc = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=32, exp_approx_mode=exp_approx_mode)
    want = prefill_reference(q, k, v, cfg, pc, 32**-0.5)
    with pure_jax():
        got = ttjax.scaled_dot_product_attention(q, k, v, program_config=pc, compute_kernel_config=cfg)
    assert_bits_equal(got, want)


def decode_reference(q, k, v, pos, cfg, pc, scale):
    b, h, d = q.shape
    n_kv = k.shape[1]
    g = h // n_kv
    approx = pc.exp_approx_mode or h <= 16  # the half-tile rule: bfloat16 Q, causal
    out = np.zeros(q.shape)
    for u in range(b):
        for kv in range(n_kv):
            heads = slice(kv * g, (kv + 1) * g)
            dst = kr.flash_decode(f64(q[u, heads]), f64(k[u, kv]), f64(v[u, kv]), int(pos[u]), pc.k_chunk_size,
                                  fid(cfg), cfg.fp32_dest_acc_en, cfg.math_approx_mode, approx, pc.exp_approx_mode, scale)
            out[u, heads] = kr.pack_bf16(dst, cfg.fp32_dest_acc_en)
    return out


@pytest.mark.parametrize("name", ["HiFi2-fp32-exact", "HiFi4-bf16-approx"])
@pytest.mark.parametrize("heads", [8, 32])
def test_flash_decode_is_the_kernels_sequence(name, heads):
    cfg, rng = CONFIGS[name], np.random.default_rng(6)
    q, k, v = bf16(rng, (3, heads, 32), 2.0), bf16(rng, (3, 4, 128, 32), 2.0), bf16(rng, (3, 4, 128, 32))
    pos = jnp.asarray([0, 77, 127], jnp.int32)
    pc = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=32, exp_approx_mode=False)
    want = decode_reference(q, k, v, pos, cfg, pc, 32**-0.5)
    with pure_jax():
        got = ttjax.scaled_dot_product_attention_decode(q, k, v, pos, program_config=pc, compute_kernel_config=cfg)
    assert_bits_equal(got, want)


def test_sdpa_emulation_differs_from_exact():
    cfg, rng = CONFIGS["HiFi2-fp32-exact"], np.random.default_rng(7)
    q, k, v = bf16(rng, (2, 8, 64), 3.0), bf16(rng, (2, 2, 128, 64), 3.0), bf16(rng, (2, 2, 128, 64))
    pos = jnp.asarray([100, 127], jnp.int32)

    def run(**kw):
        return bits(ttjax.scaled_dot_product_attention_decode(q, k, v, pos, compute_kernel_config=cfg, **kw))

    emulated, no_sfpu, exact = run(), run(sfpu=False), run(sfpu=False, fpu=False)
    assert (emulated != no_sfpu).mean() > 0.05 and (no_sfpu != exact).any()


# ---------------------------------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("name", ["HiFi4-bf16-approx", "HiFi2-fp32-exact", "LoFi-fp32-approx"])
def test_rotary_embedding_is_the_kernels_sequence(name):
    cfg, rng = CONFIGS[name], np.random.default_rng(11)
    x = bf16(rng, (5, 3, 64), 3.0)
    angles = rng.uniform(0, 200, size=(5, 1, 32)).astype(np.float32).repeat(2, axis=-1)
    cos, sin = jnp.asarray(np.cos(angles)), jnp.asarray(np.sin(angles))
    got = ttjax.rotary_embedding_llama(x, cos, sin, ttjax.get_rot_transformation_mat(), compute_kernel_config=cfg)
    assert got.dtype == jnp.bfloat16
    assert_bits_equal(got, kr.rotary(f64(x), f64(cos), f64(sin), fid(cfg), cfg.fp32_dest_acc_en))
    exact = ttjax.rotary_embedding_llama(x, cos, sin)  # float32 tables and math, rounded once
    assert (bits(got) != bits(exact)).mean() > 0.05
    with pytest.raises(ttjax.TTJaxError, match="takes bfloat16 input"):
        ttjax.rotary_embedding_llama(x.astype(jnp.float32), cos, sin, compute_kernel_config=cfg)


# ---------------------------------------------------------------------------------------------------- native walks
needs_native = pytest.mark.skipif(not native.available(), reason="the native kernels are not built")


def paged(cache, rng, block):
    """A contiguous cache [B, KV, S, d] laid out in shuffled blocks [B * S / block, KV, block, d] and its table."""
    b, n_kv, s, d = cache.shape
    perm = rng.permutation(b * s // block)
    blocks = cache.reshape(b, n_kv, s // block, block, d).transpose(0, 2, 1, 3, 4).reshape(-1, n_kv, block, d)
    return jnp.zeros_like(blocks).at[perm].set(blocks), jnp.asarray(perm.reshape(b, s // block), jnp.int32)


# Each Dst mode and fidelity with each exp mode at least once (every pairing is a compile of both walks).
@needs_native
@pytest.mark.parametrize("name, exp_approx_mode", [("HiFi2-fp32-exact", False), ("HiFi4-bf16-approx", True),
                                                   ("LoFi-fp32-approx", True), ("HiFi4-bf16-approx", False)])
def test_native_decode_equals_the_jax_walk(name, exp_approx_mode):
    cfg, rng = CONFIGS[name], np.random.default_rng(8)
    q = bf16(rng, (3, 15, 64), 2.0)
    k, v = bf16(rng, (3, 3, 256, 64), 2.0), bf16(rng, (3, 3, 256, 64))
    pos = jnp.asarray([-1, 70, 255], jnp.int32)  # -1: an empty slot
    kp, table = paged(k, rng, 32)
    vp = jnp.zeros_like(kp).at[jnp.asarray(table).reshape(-1)].set(
        v.reshape(3, 3, 8, 32, 64).transpose(0, 2, 1, 3, 4).reshape(-1, 3, 32, 64))
    pc = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=64, exp_approx_mode=exp_approx_mode)
    runs = {
        "contiguous": lambda: ttjax.scaled_dot_product_attention_decode(q, k, v, pos, program_config=pc, compute_kernel_config=cfg),
        "paged": lambda: ttjax.paged_scaled_dot_product_attention_decode(q, kp, vp, pos, table, program_config=pc,
                                                                         compute_kernel_config=cfg),
    }
    for label, f in runs.items():
        with pure_jax():
            want = jax.jit(f)()
        assert_bits_equal(jax.jit(f)(), f64(want)), label


@needs_native
@pytest.mark.parametrize("name", ["HiFi2-fp32-exact", "HiFi4-bf16-approx"])
def test_native_decode_skips_masked_tiles_only_where_that_is_exact(name):
    """The native decode walks a user's last chunk only up to the tile its position reaches. It equals the whole
    chunk's walk also where a skipped tile could change a bit: a P V column that is -0 so far (V's column -0 up to
    the position), V rows past the position that are not finite (0 * inf is NaN on the chip too)."""
    cfg, rng = CONFIGS[name], np.random.default_rng(11)
    q = bf16(rng, (4, 4, 64), 2.0)
    k, v = np.asarray(bf16(rng, (4, 1, 256, 64), 2.0)), np.array(bf16(rng, (4, 1, 256, 64)))
    pos = jnp.asarray([20, 100, 40, 3], jnp.int32)
    v[0, 0, :, 5] = -0.0  # user 0: a -0 column up to its position and +0 past it
    v[0, 0, 21:, 5] = 0.0
    v[1, 0, 200, 7] = np.inf  # user 1: an infinity past its position, in a tile it does not reach
    v[2, 0, 50:, :] = np.nan  # user 2: NaN past its position
    k, v = jnp.asarray(k), jnp.asarray(v)
    pc = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=256, exp_approx_mode=False)

    def f():
        return ttjax.scaled_dot_product_attention_decode(q, k, v, pos, program_config=pc, compute_kernel_config=cfg)

    with pure_jax():
        want = jax.jit(f)()
    got = jax.jit(f)()
    assert_bits_equal(got, f64(want))
    assert np.isnan(np.asarray(got[1:3], np.float32)).any() and not np.isnan(np.asarray(got[3], np.float32)).any()


@needs_native
@pytest.mark.parametrize("name, exp_approx_mode", [("HiFi2-fp32-exact", False), ("HiFi4-bf16-approx", True)])
def test_native_prefill_equals_the_jax_walk(name, exp_approx_mode):
    cfg, rng = CONFIGS[name], np.random.default_rng(9)
    q, k, v = bf16(rng, (1, 6, 100, 64), 2.0), bf16(rng, (1, 2, 100, 64), 2.0), bf16(rng, (1, 2, 100, 64))
    pc = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=64, exp_approx_mode=exp_approx_mode)
    f = jax.jit(lambda q, k, v: ttjax.scaled_dot_product_attention(q, k, v, program_config=pc, compute_kernel_config=cfg))
    with pure_jax():
        want = jax.jit(lambda q, k, v: ttjax.scaled_dot_product_attention(q, k, v, program_config=pc,
                                                                          compute_kernel_config=cfg))(q, k, v)
    assert_bits_equal(f(q, k, v), f64(want))

    # a later chunk of a prompt against a paged cache: positions 64..127 of a 128-position user
    kc, vc = bf16(rng, (1, 2, 128, 64), 2.0), bf16(rng, (1, 2, 128, 64))
    kp, table = paged(kc, rng, 32)
    vp = jnp.zeros_like(kp).at[table.reshape(-1)].set(vc.reshape(1, 2, 4, 32, 64).transpose(0, 2, 1, 3, 4).reshape(-1, 2, 32, 64))
    qc = bf16(rng, (1, 6, 64, 64), 2.0)

    def chunked(start):
        return ttjax.chunked_scaled_dot_product_attention(qc, kp, vp, table, start, program_config=pc, compute_kernel_config=cfg)

    with pure_jax():
        want = jax.jit(chunked)(jnp.int32(64))
    assert_bits_equal(jax.jit(chunked)(jnp.int32(64)), f64(want))


@needs_native
@pytest.mark.parametrize("isa", native.isa_levels() or ["auto"])
def test_native_sdpa_at_every_isa_level(isa, monkeypatch):
    """Decode and prefill give the pure-JAX walk's bits at every vector ISA level the CPU has (TTJAX_NATIVE_ISA)."""
    cfg, rng = CONFIGS["HiFi2-fp32-exact"], np.random.default_rng(10)
    q, k, v = bf16(rng, (2, 8, 64), 2.0), bf16(rng, (2, 2, 128, 64), 2.0), bf16(rng, (2, 2, 128, 64))
    qp = bf16(rng, (1, 4, 64, 64), 2.0)
    pos = jnp.asarray([5, 127], jnp.int32)
    pc = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=ttjax.CoreCoord(8, 8), q_chunk_size=32, k_chunk_size=32)

    def both():
        return (ttjax.scaled_dot_product_attention_decode(q, k, v, pos, program_config=pc, compute_kernel_config=cfg),
                ttjax.scaled_dot_product_attention(qp, k[:1, :, :64], v[:1, :, :64], program_config=pc, compute_kernel_config=cfg))

    with pure_jax():
        want = jax.jit(both)()
    monkeypatch.setenv("TTJAX_NATIVE_ISA", isa)
    jax.clear_caches()
    for got, ref in zip(jax.jit(both)(), want):
        assert_bits_equal(got, f64(ref))

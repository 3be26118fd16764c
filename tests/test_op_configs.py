"""Op configs: what tt_transformers' model_config builds validates for every named model on the devices tt-metal runs
it on, and configs the chip would refuse are refused, each with one message naming the value, the limit and the op."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ttjax
import ttjax.op_validation
import ttjax.wormhole
from model.config import named_config
from model.op_configs import (
    DEVICES,
    create_dram_sharded_mem_config,
    dram_matmul_config,
    matmul_config,
    op_configs,
    validate,
    width_sharded,
)
from ttjax import (
    BufferType,
    CoreCoord,
    CoreGrid,
    CoreRange,
    CoreRangeSet,
    MatmulMultiCoreReuseMultiCast1DProgramConfig,
    MatmulMultiCoreReuseMultiCastProgramConfig,
    MemoryConfig,
    OpConfigError,
    ShardSpec,
    TensorMemoryLayout,
)
from ttjax.memory_config import TensorSpec
from ttjax.op_validation import validate_matmul

# The model/device pairs of tt_transformers' PERF.md (70B runs on T3K and Galaxy only).
SUPPORTED = [(m, d) for m in ("Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B") for d in DEVICES] + [("Llama-3.1-70B", "T3K"), ("Llama-3.1-70B", "TG")]


@pytest.mark.parametrize("model,device", SUPPORTED)
@pytest.mark.parametrize("mode,seq_len", [("decode", 1), ("prefill", 128), ("prefill", 1024), ("prefill", 8192), ("prefill", 32768)])
@pytest.mark.parametrize("precision", ["performance", "accuracy"])
def test_the_configs_model_config_builds_validate(model, device, mode, seq_len, precision):
    ops = op_configs(named_config(model), device, mode, seq_len, precision)
    assert {"wqkv", "sdpa" if mode == "prefill" else "sdpa_decode"} <= {op.name for op in ops}
    for op in ops:
        use = validate(op)
        assert use.region_end + use.resident_bytes <= ttjax.wormhole.WORMHOLE_B0.l1_size


def test_tt_transformers_numbers_come_out_of_the_formulas():
    """Values tt_transformers' helpers give for Llama-3.1-8B (re-derived from model_config.py by hand)."""
    by = {op.name: op for op in op_configs(named_config("Llama-3.1-8B"), "N150", "decode")}
    w1 = by["w1_w3"].program_config
    assert (w1.in0_block_w, w1.per_core_M, w1.per_core_N) == (2, 1, 7)  # 8x8 grid: 64 cores over K = 4096
    assert by["w1_w3"].b.memory_config.shard_spec.shape == (4096, 1216)  # 14336 padded to 14592 over 12 banks
    w2 = by["w2"].program_config
    assert (w2.in0_block_w, w2.per_core_M, w2.per_core_N) == (7, 1, 2)
    assert by["lm_head"].count == 3  # 128256 columns in chunks of at most 668 * 64
    t3k = {op.name: op for op in op_configs(named_config("Llama-3.1-8B"), "T3K", "decode")}
    assert isinstance(t3k["wo"].program_config, MatmulMultiCoreReuseMultiCast1DProgramConfig)  # the fused all-gather matmul


def _dram_op(k=4096, n=14336, cores=64, grid=CoreGrid(8, 8)):
    a = TensorSpec((1, 1, 32, k), "bfloat16", width_sharded(32, k, grid))
    b = TensorSpec((k, n), "bfloat4_b", create_dram_sharded_mem_config(k, n))
    cfg = dram_matmul_config(32, k, n, cores)
    out = MemoryConfig(TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1,
                       ShardSpec(grid.core_range_set(), (32, cfg.per_core_N * 32)))
    return a, b, cfg, out


def test_a_good_dram_sharded_matmul_passes():
    validate_matmul("w1", *_dram_op())


PREFILL_A = TensorSpec((1, 1, 1024, 4096), "bfloat16")
PREFILL_B = TensorSpec((4096, 14336), "bfloat4_b")
GOOD_2D = matmul_config(1024, 4096, 14336, (8, 8), per_core_N=56)

BROKEN = [
    # wrong per-core blocks
    ("subblock does not divide the block", lambda: validate_matmul("w1", PREFILL_A, PREFILL_B, dataclasses.replace(GOOD_2D, out_subblock_w=3),
                                                                  ttjax.DRAM_MEMORY_CONFIG), "out_block_w (56) must be divisible by out_subblock_w (3)"),
    ("K blocks", lambda: validate_matmul("w1", PREFILL_A, PREFILL_B, dataclasses.replace(GOOD_2D, in0_block_w=5), ttjax.DRAM_MEMORY_CONFIG),
     "Kt must be divisible by in0_block_w (Kt = 128, in0_block_w = 5)"),
    ("subblock past the destination register", lambda: validate_matmul(
        "w1", PREFILL_A, PREFILL_B, dataclasses.replace(GOOD_2D, out_subblock_h=2, out_subblock_w=4, per_core_M=4, out_block_h=None),
        ttjax.DRAM_MEMORY_CONFIG, fp32_dest_acc_en=True), "out_subblock_w 4 times out_subblock_h 2 needs to be at most 4 to fit in hardware"),
    ("too few blocks for the output", lambda: validate_matmul("w1", PREFILL_A, PREFILL_B, dataclasses.replace(GOOD_2D, per_core_N=14, out_subblock_w=2, out_block_w=None),
                                                             ttjax.DRAM_MEMORY_CONFIG),
     "Num output blocks along x (32) must be smaller than or equal to the number of columns in compute grid (8)!"),
    ("DRAM-sharded per_core_M", lambda: validate_matmul("w1", *(lambda a, b, c, o: (a, b, dataclasses.replace(c, per_core_M=2), o))(*_dram_op())),
     "M (1) must equal per_core_M (2)"),
    # shard spec against memory config and grid
    ("shard spec that does not cover the tensor", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16", MemoryConfig(TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1,
                                                                   ShardSpec(CoreGrid(8, 4).core_range_set(), (32, 64)))),
        *_dram_op()[1:]), "Number of shards along width 64 must not exceed number of cores 32"),
    ("shard grid off the device", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16", MemoryConfig(
            TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1, ShardSpec(CoreRangeSet((CoreRange(CoreCoord(0, 0), CoreCoord(7, 8)),)), (32, 64)))),
        *_dram_op()[1:]), "Tensor shard spec grid {[(x=0,y=0) - (x=7,y=8)]} must lie within compute grid (8, 8)"),
    ("interleaved with a shard spec", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16", MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.L1,
                                                                   ShardSpec(CoreGrid(8, 8).core_range_set(), (32, 64)))),
        *_dram_op()[1:]), "is INTERLEAVED but carries a shard spec"),
    ("DRAM-sharded with an interleaved activation", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16"), *_dram_op()[1:]), "Input tensor A must be sharded for DRAM sharded program config"),
    ("DRAM-sharded weight not in DRAM", lambda: validate_matmul(
        "w1", _dram_op()[0], TensorSpec((4096, 14336), "bfloat4_b", MemoryConfig(TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1, ShardSpec(
            CoreGrid(8, 8).core_range_set(), (4096, 224)))), *_dram_op()[2:]), "must be width-sharded in DRAM"),
    ("1D width-sharded activation for a height-sharded config", lambda: validate_matmul(
        "w1", _dram_op()[0], PREFILL_B, MatmulMultiCoreReuseMultiCast1DProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), in0_block_w=2, out_subblock_h=1, out_subblock_w=1, per_core_M=1, per_core_N=7, fuse_batch=True, mcast_in0=False),
        ttjax.DRAM_MEMORY_CONFIG), "mcast_in1 requires N (448) to fit within one per_core_N block (7)"),
    # L1 at a long sequence: wqkv's 2D config made for 8192 rows at once, without tt's cut into 2048-row pieces
    ("L1 overflow at a long sequence", lambda: validate_matmul(
        "wqkv", TensorSpec((1, 1, 8192, 4096), "bfloat16"), TensorSpec((4096, 6144), "bfloat8_b"),
        matmul_config(8192, 4096, 6144, (8, 8), fuse_batch=True), ttjax.DRAM_MEMORY_CONFIG),
     "wqkv: Statically allocated circular buffers on core range [(x=0,y=0) - (x=7,y=7)] grow to"),
    ("L1 tensors crowding the circular buffers", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16", ttjax.L1_MEMORY_CONFIG), TensorSpec((4096, 14336), "bfloat8_b", ttjax.L1_MEMORY_CONFIG),
        MatmulMultiCoreReuseMultiCast1DProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), in0_block_w=32, out_subblock_h=1, out_subblock_w=7, per_core_M=1, per_core_N=7, fuse_batch=True, mcast_in0=True), ttjax.L1_MEMORY_CONFIG),
     "clash with L1 buffers"),
    ("an L1 tensor bigger than L1", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16"), TensorSpec((4096, 14336), "bfloat16", ttjax.L1_MEMORY_CONFIG),
        MatmulMultiCoreReuseMultiCast1DProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), in0_block_w=2, out_subblock_h=1, out_subblock_w=7, per_core_M=1, per_core_N=7, fuse_batch=True, mcast_in0=True), ttjax.DRAM_MEMORY_CONFIG),
     "w1: Out of Memory: Not enough space to allocate 117440512 B L1 buffer across 64 banks"),
    # too many cores
    ("grid larger than the device", lambda: validate_matmul("w1", PREFILL_A, PREFILL_B, dataclasses.replace(
        GOOD_2D, compute_with_storage_grid_size=CoreCoord(8, 9)), ttjax.DRAM_MEMORY_CONFIG),
     "compute_with_storage_grid_size (8, 9) must fit within device grid (8, 8)"),
    ("1D config with more blocks than cores", lambda: validate_matmul(
        "w1", TensorSpec((1, 1, 32, 4096), "bfloat16"), PREFILL_B,
        MatmulMultiCoreReuseMultiCast1DProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 2), in0_block_w=2, out_subblock_h=1, out_subblock_w=1, per_core_M=1, per_core_N=7, fuse_batch=True, mcast_in0=True), ttjax.DRAM_MEMORY_CONFIG),
     "Number of blocks exceeds number of cores: 64 blocks > 16 cores"),
    ("SDPA grid past the device", lambda: ttjax.op_validation.validate_sdpa("sdpa", 64, 64, 128, CoreCoord(9, 8)),
     "Provided grid must not contain more cores than the device. Got 72 cores, expected at most 64 cores."),
    ("SDPA chunk not whole tiles", lambda: ttjax.op_validation.validate_sdpa("sdpa", 48, 64, 128, CoreCoord(8, 8)),
     "q_chunk_size must be divisible by TILE_SIZE. Got q_chunk_size: 48, TILE_SIZE: 32"),
    ("SDPA chunks past L1", lambda: ttjax.op_validation.validate_sdpa("sdpa", 1024, 1024, 128, CoreCoord(8, 8)), "beyond max L1 size of 1499136 B"),
]


@pytest.mark.parametrize("why,call,words", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_config_the_chip_would_refuse_is_refused_with_its_reason(why, call, words):
    with pytest.raises(OpConfigError) as e:
        call()
    assert words in str(e.value) and "\n" not in str(e.value)
    # the op is named first; a spec ttnn's TensorSpec itself refuses is refused where it is made, naming the tensor
    assert str(e.value).split(":")[0] in ("w1", "wqkv", "sdpa") or str(e.value).startswith("TensorSpec [")


def test_numerics_never_depend_on_the_configs():
    """ttjax.linear with a program config and memory configs computes what it computes without them."""
    x = jax.random.normal(jax.random.key(0), (1, 1, 32, 256), jnp.float32).astype(jnp.bfloat16)
    w = ttjax.typecast(jax.random.normal(jax.random.key(1), (256, 768)), ttjax.bfloat8_b)
    ckc = ttjax.WormholeComputeKernelConfig(ttjax.MathFidelity.HiFi2, fp32_dest_acc_en=True)
    grid = CoreGrid(8, 1)
    a_mc = width_sharded(32, 256, grid)
    cfg = dram_matmul_config(32, 256, 768, 8)
    out_mc = MemoryConfig(TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1, ShardSpec(grid.core_range_set(), (32, cfg.per_core_N * 32)))
    plain = ttjax.linear(x, w, compute_kernel_config=ckc)
    configured = ttjax.linear(x, w, compute_kernel_config=ckc, program_config=cfg, memory_config=out_mc, input_memory_config=a_mc,
                              weight_memory_config=create_dram_sharded_mem_config(256, 768))
    np.testing.assert_array_equal(np.asarray(plain, np.float32), np.asarray(configured, np.float32))
    with pytest.raises(OpConfigError, match="Input tensor A must be sharded"):
        ttjax.linear(x, w, compute_kernel_config=ckc, program_config=cfg, memory_config=out_mc)


def test_the_sdpa_ops_check_their_program_config():
    q = jnp.ones((1, 4, 256, 64), jnp.bfloat16)
    too_wide = ttjax.SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(9, 8), q_chunk_size=64, k_chunk_size=64)
    with pytest.raises(OpConfigError, match="ttjax.scaled_dot_product_attention: Provided grid must not contain more cores"):
        ttjax.scaled_dot_product_attention(q, q[:, :2], q[:, :2], program_config=too_wide)
    with pytest.raises(OpConfigError, match="beyond max L1 size"):
        ttjax.scaled_dot_product_attention(q, q[:, :2], q[:, :2], program_config=ttjax.SDPAProgramConfig(compute_with_storage_grid_size=CoreCoord(8, 8), q_chunk_size=2048, k_chunk_size=2048))


def test_decode_rows_and_the_ops_own_output_spec_are_taken():
    """Found in review: one user's row (tile-padded to 32) may be sharded, and L1_WIDTH_SHARDED_MEMORY_CONFIG (no spec:
    the op works it out, as tt_transformers passes it) is a valid output."""
    grid = CoreGrid(8, 1)
    x = jnp.ones((1, 1, 1, 256), jnp.bfloat16)
    w = ttjax.typecast(jnp.ones((256, 768)), ttjax.bfloat8_b)
    cfg = dram_matmul_config(32, 256, 768, 8)
    y = ttjax.linear(x, w, program_config=cfg, memory_config=ttjax.L1_WIDTH_SHARDED_MEMORY_CONFIG,
                     input_memory_config=width_sharded(32, 256, grid), weight_memory_config=create_dram_sharded_mem_config(256, 768))
    assert y.shape == (1, 1, 1, 768)
    ttjax.linear(x[0, 0, 0], w, program_config=MatmulMultiCoreReuseMultiCastProgramConfig(compute_with_storage_grid_size=(8, 8), in0_block_w=np.int64(2), out_subblock_h=1, out_subblock_w=1, per_core_M=1, per_core_N=3, transpose_mcast=False))


def test_wo_decode_has_one_head_per_core():
    """tt's ATTN_OUTPUT_PROGCFG: n_heads / devices cores (Llama-3.2-3B on N300: 12 cores, in0_block_w 4, per_core_N 8)."""
    wo = {op.name: op for op in op_configs(named_config("Llama-3.2-3B"), "N300", "decode")}["wo"]
    assert wo.a.memory_config.shard_spec.num_cores() == 12
    assert (wo.program_config.in0_block_w, wo.program_config.per_core_N) == (4, 8)

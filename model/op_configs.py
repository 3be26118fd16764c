"""The op configs tt_transformers' model_config gives each matmul and SDPA of a Llama, per device and mode.

For a model (ModelArgs), a device (N150, N300, T3K, TG) and a mode, `op_configs` returns one OpConfig
per op: its program config, the memory configs of its operands and output, and their formats, built
with tt_transformers' own rules (models/tt_transformers/tt/model_config.py: find_grid,
dram_matmul_config, matmul_config, matmul_1d_config, create_dram_sharded_mem_config, the
*_MEMCFG and *_PROGCFG entries; attention.py, mlp.py, lm_head.py for the shapes each op sees):

- decode, N150 / N300 / T3K: every matmul DRAM-sharded, its activation width-sharded in L1 over a
  grid that divides K (and N), its weight width-sharded over the 12 DRAM banks; T3K's wo, where dim
  / 256 is a multiple of 8, is an all-gather fused into a 1D matmul on 8 cores;
- decode, TG: wqkv and the MLP as 1D matmuls on interleaved DRAM weights;
- prefill: 2D matmuls on DRAM-interleaved activations, the sequence cut into pieces (2048 rows for
  wqkv, 1024 for wo, prefill_len_cutoff for the MLP) so the per-core blocks stay in L1.

`validate` runs every config through ttjax.op_validation, as the chip would check them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.buckets import get_padded_prefill_len
from model.config import ModelArgs
from model.errors import ConfigError
from model.model_config import lm_head_core_grid, lm_head_max_columns_per_device
from model.precision import ModelOptimizations
from ttjax.memory_config import (
    DRAM_MEMORY_CONFIG,
    L1_WIDTH_SHARDED_MEMORY_CONFIG,
    BufferType,
    CoreCoord,
    CoreGrid,
    CoreRange,
    CoreRangeSet,
    MemoryConfig,
    ShardSpec,
    TensorMemoryLayout,
    TensorSpec,
    num_cores_to_corerangeset,
)
from ttjax.op_validation import L1Use, validate_matmul, validate_sdpa
from ttjax.program_config import (
    MatmulMultiCoreReuseMultiCast1DProgramConfig,
    MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig,
    MatmulMultiCoreReuseMultiCastProgramConfig,
)
from ttjax.wormhole import TILE, WORMHOLE_B0

DEVICES = {"N150": (1, 1), "N300": (1, 2), "T3K": (1, 8), "TG": (8, 4)}  # tt_transformers' cluster shapes
MAX_QKV_MM_SEQ_LEN = 2048  # prefill wqkv runs on pieces of this many rows
WO_PREFILL_ROWS = 1024  # and wo on pieces of these
WIDTH = TensorMemoryLayout.WIDTH_SHARDED


@dataclass(frozen=True)
class OpConfig:
    """One op's configs: a matmul (a @ b -> output) or, with b None, an SDPA (sdpa holds its q/k chunks and grid)."""

    name: str
    a: TensorSpec
    b: TensorSpec | None
    program_config: object
    output: MemoryConfig
    out_dtype: str
    fp32_dest_acc_en: bool = False
    sdpa: tuple[int, int, int, CoreCoord] | None = None  # (q_chunk_size, k_chunk_size, head_dim, grid)
    count: int = 1  # how many times a layer (or the step) runs it: the MLP's w1 and w3, pieces of a long prefill


# -- tt_transformers' helpers --------------------------------------------------------------------------------------
def find_largest_divisor(n: float, max_divisor: int = 8) -> int:
    """The largest i <= max_divisor dividing n, else 1; n may be a fraction (k / 32 / cores), which only 1 divides."""
    return next((i for i in range(max_divisor, 0, -1) if n % i == 0), 1)


def _rows_cols(cores: int) -> tuple[int, int]:
    """The fewest rows of at most 8 cores that hold cores (find_grid's last step)."""
    rows = next(r for r in range(1, 9) if cores % r == 0 and cores // r <= 8)
    return rows, cores // rows


def find_grid(n_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the core count nearest 32 (of at most 64) that divides n_tiles."""
    counts = sorted((c for c in range(1, 65) if n_tiles % c == 0 and any(c % r == 0 and c // r <= 8 for r in range(1, 9))),
                    key=lambda c: abs(c - 32))
    if not counts:
        raise ConfigError(f"no grid of at most 64 cores divides {n_tiles} tiles.")
    return _rows_cols(counts[0])


def find_grid_k_n(k_tiles: int, n_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the largest core count (at most 64) dividing both."""
    c = max(c for c in range(1, 65) if k_tiles % c == 0 and n_tiles % c == 0 and any(c % r == 0 and c // r <= 8 for r in range(1, 9)))
    return _rows_cols(c)


def dram_shard_core_grid_for_k(k: int) -> CoreGrid:
    rows, cols = find_grid(k // TILE)
    return CoreGrid(x=cols, y=rows)


def dram_shard_core_grid_for_k_and_n(k: int, n: int) -> CoreGrid:
    rows, cols = find_grid_k_n(k // TILE, n // TILE)
    return CoreGrid(x=cols, y=rows)


def create_dram_sharded_mem_config(k: int, n: int, banks: int = WORMHOLE_B0.dram_banks) -> MemoryConfig:
    """A weight [k, n] width-sharded over the DRAM banks, n padded to a tile per bank."""
    padded = math.ceil(n / (TILE * banks)) * TILE * banks
    grid = CoreRangeSet((CoreRange(CoreCoord(0, 0), CoreCoord(banks - 1, 0)),))
    return MemoryConfig(WIDTH, BufferType.DRAM, ShardSpec(grid, (k, padded // banks)))


def dram_matmul_config(m: int, k: int, n: int, num_cores: int) -> MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig:
    return MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig(
        in0_block_w=find_largest_divisor(k // (TILE * num_cores)), per_core_M=math.ceil(m / TILE), per_core_N=math.ceil(n / (TILE * num_cores)))


def get_out_subblock_w(per_core_N: int, out_subblock_h: int) -> int:
    w = 4
    while w > 1 and (w * out_subblock_h > 4 or per_core_N % w):
        w -= 1
    return w


def matmul_config(m: int, k: int, n: int, grid: tuple[int, int], in0_block_w: int | None = None, fuse_batch: bool = False,
                  per_core_N: int | None = None, subblock_w_1: bool = False) -> MatmulMultiCoreReuseMultiCastProgramConfig:
    """The 2D config on grid (x, y): M over y, N over x."""
    gx, gy = grid
    if in0_block_w is None and k % (TILE * gy):  # tt_transformers asserts it: in0_block_w comes from k / 32 / grid_y
        raise ConfigError(f"matmul_config: k = {k} is not a multiple of 32 x grid_y = {TILE * gy}.")
    per_core_M = math.ceil(m / (TILE * gy))
    per_core_N = per_core_N or math.ceil(n / (TILE * gx))
    return MatmulMultiCoreReuseMultiCastProgramConfig(
        compute_with_storage_grid_size=CoreCoord(gx, gy), in0_block_w=in0_block_w or find_largest_divisor(k // (TILE * gy)),
        out_subblock_h=1, out_subblock_w=1 if subblock_w_1 else get_out_subblock_w(per_core_N, 1), per_core_M=per_core_M,
        per_core_N=per_core_N, transpose_mcast=False, fuse_batch=fuse_batch)


def matmul_1d_config(m: int, k: int, n: int, grid: CoreGrid = CoreGrid(8, 8), fp32_acc: bool = False,
                     in0_block_w: int | None = None, subblock_1x1: bool = False) -> MatmulMultiCoreReuseMultiCast1DProgramConfig:
    if n / TILE / grid.num_cores < 1:
        grid = CoreGrid(grid.x, max(1, n // TILE // grid.x))
    cores = grid.num_cores
    per_core_M, per_core_N = math.ceil(m / TILE), math.ceil(n / TILE / cores)
    limit = 4 if fp32_acc else 8
    w = 1 if subblock_1x1 else max(d for d in range(1, limit + 1) if per_core_N % d == 0)
    h = 1 if subblock_1x1 else max(d for d in range(1, per_core_M + 1) if per_core_M % d == 0 and d * w <= limit)
    return MatmulMultiCoreReuseMultiCast1DProgramConfig(
        compute_with_storage_grid_size=CoreCoord(grid.x, grid.y), in0_block_w=in0_block_w or find_largest_divisor(k / TILE / cores),
        out_subblock_h=h, out_subblock_w=w, per_core_M=per_core_M, per_core_N=per_core_N, fuse_batch=True, mcast_in0=True)


def find_prefill_grid(row_tiles: int, col_tiles: int) -> tuple[int, int]:
    return find_largest_divisor(row_tiles), find_largest_divisor(col_tiles)


def width_sharded(rows: int, width: int, grid: CoreGrid | CoreRangeSet) -> MemoryConfig:
    """An activation [rows, width] width-sharded in L1 over grid (row-major), each core [rows, width / cores]."""
    cores = grid.core_range_set() if isinstance(grid, CoreGrid) else grid
    return MemoryConfig(WIDTH, BufferType.L1, ShardSpec(cores, (rows, width // cores.num_cores())))


def _dram_sharded_op(name, k, n, grid: CoreGrid | CoreRangeSet, act_dtype, w_dtype, out_dtype, fp32, count=1) -> OpConfig:
    """A decode matmul as tt_transformers sets it up: the activation width-sharded over grid, the weight over the DRAM
    banks, the output L1_WIDTH_SHARDED (its spec the op's to work out)."""
    cores = grid.num_cores if isinstance(grid, CoreGrid) else grid.num_cores()
    cfg = dram_matmul_config(TILE, k, n, cores)
    a = TensorSpec((1, 1, TILE, k), act_dtype, width_sharded(TILE, k, grid))
    b = TensorSpec((k, n), w_dtype, create_dram_sharded_mem_config(k, n))
    return OpConfig(name, a, b, cfg, L1_WIDTH_SHARDED_MEMORY_CONFIG, out_dtype, fp32, count=count)


# -- the configs ---------------------------------------------------------------------------------------------------
def _formats(args: ModelArgs, precision: str) -> dict[str, str]:
    """Weight formats on the device: tt_transformers' preset (performance: bfloat8_b attention, bfloat4_b w1/w3,
    bfloat8_b w2; accuracy: bfloat16 attention, bfloat8_b MLP)."""
    opt = ModelOptimizations.named(precision, args.model_name)
    return {g: opt.get_tensor_dtype(g).value for g in ("WQKV", "WO", "FF1_FF3", "FF2")}


def op_configs(args: ModelArgs, device: str, mode: str = "decode", seq_len: int = 128, precision: str = "performance") -> list[OpConfig]:
    """The configs of one decoder layer's matmuls and SDPA (and the LM head) for args on device in mode; seq_len is the
    prefill's length."""
    if device not in DEVICES:
        raise ConfigError(f"device {device!r} is not one of {', '.join(DEVICES)}.")
    if mode not in ("decode", "prefill"):
        raise ConfigError(f"mode {mode!r} is not 'decode' or 'prefill'.")
    rows, cols = DEVICES[device]
    nd = rows * cols
    if args.n_heads % cols or args.dim % (TILE * 8):
        raise ConfigError(f"{args.model_name}: tt_transformers needs n_heads ({args.n_heads}) to divide over the {cols} devices of a "
                          f"row and dim ({args.dim}) to be a multiple of {TILE * 8} (8 cores of whole tiles).")
    if device == "TG" and lm_head_core_grid(args.dim, 32) is None:
        raise ConfigError(f"{args.model_name}: on a Galaxy tt_transformers needs dim ({args.dim}) to be a multiple of 1024 (its LM head grid).")
    if mode == "prefill":
        seq_len = get_padded_prefill_len(seq_len)  # prefill runs on tt's buckets
    if precision not in ("performance", "accuracy"):
        raise ConfigError(f"precision {precision!r} is not 'performance' or 'accuracy' (tt_transformers' presets).")
    fmt = _formats(args, precision)
    return (_decode(args, device, rows, cols, nd, fmt) if mode == "decode" else _prefill(args, device, rows, cols, nd, fmt, seq_len))


def _qkv_size(args: ModelArgs) -> int:
    return args.head_dim * (2 * args.n_kv_heads + args.n_heads)


def _decode(args, device, rows, cols, nd, fmt) -> list[OpConfig]:
    dim, hidden, hd = args.dim, args.hidden_dim, args.head_dim
    ops = []
    if device == "TG":
        lm_rows = lm_head_core_grid(dim, 32)[0]
        big = dim >= 8192
        # XQKV_DECODE_PROGCFG on TG: a block of one tile per core, one core per output tile.
        qkv = MatmulMultiCoreReuseMultiCast1DProgramConfig(
            compute_with_storage_grid_size=CoreCoord(8, 5 if big else lm_rows), in0_block_w=2 if big else 1, out_subblock_h=1,
            out_subblock_w=1, per_core_M=1, per_core_N=1, fuse_batch=True, mcast_in0=True)
        ops.append(OpConfig("wqkv", TensorSpec((1, 1, TILE, dim // 4), "bfloat16", DRAM_MEMORY_CONFIG),
                            TensorSpec((dim // 4, _qkv_size(args) // 8), fmt["WQKV"]), qkv, DRAM_MEMORY_CONFIG, "bfloat16", True))
        if dim >= 4096:
            ff1 = matmul_1d_config(TILE, dim // 4, hidden // 8, CoreGrid(8, 2), subblock_1x1=True)
            ff2 = matmul_1d_config(TILE, hidden // 8, dim // 4, CoreGrid(8, 2), subblock_1x1=True)
            act = TensorSpec((1, 1, TILE, dim // 4), "bfloat16", DRAM_MEMORY_CONFIG)
            ops.append(OpConfig("w1_w3", act, TensorSpec((dim // 4, hidden // 8), fmt["FF1_FF3"]), ff1, DRAM_MEMORY_CONFIG, "bfloat8_b", count=2))
            ops.append(OpConfig("w2", TensorSpec((1, 1, TILE, hidden // 8), "bfloat8_b", DRAM_MEMORY_CONFIG),
                                TensorSpec((hidden // 8, dim // 4), fmt["FF2"]), ff2, DRAM_MEMORY_CONFIG, "bfloat16"))
    else:
        attn_grid = dram_shard_core_grid_for_k(dim)
        ops.append(_dram_sharded_op("wqkv", dim, _qkv_size(args) // nd, attn_grid, "bfloat16", fmt["WQKV"], "bfloat16", True))
        wo_k = args.n_heads * hd // nd
        if nd == 8 and (dim // TILE // 8) % 8 == 0:  # USE_FUSED_ALL_GATHER_MATMUL: the attention output gathered into 8 cores
            ag = MatmulMultiCoreReuseMultiCast1DProgramConfig(
                compute_with_storage_grid_size=CoreCoord(8, 1), in0_block_w=dim // TILE // 8, out_subblock_h=1,
                out_subblock_w=get_out_subblock_w(dim // 8 // TILE // 8, 1), per_core_M=1, per_core_N=dim // 8 // TILE // 8,
                fuse_batch=True, mcast_in0=True)
            a = TensorSpec((1, 1, TILE, dim), "bfloat16", width_sharded(TILE, dim, CoreGrid(8, 1)))
            out = width_sharded(TILE, dim // 8, CoreGrid(8, 1))
            ops.append(OpConfig("wo", a, TensorSpec((dim, dim // 8), fmt["WO"]), ag, out, "bfloat16", True))
        else:
            # nlp_concat_heads_decode leaves one head per core: wo's activation is width-sharded over n_heads / devices cores.
            heads = num_cores_to_corerangeset(args.n_heads // nd, CoreCoord(8, 8), row_wise=True)
            ops.append(_dram_sharded_op("wo", wo_k, dim, heads, "bfloat16", fmt["WO"], "bfloat16", True))
        ops.append(_dram_sharded_op("w1_w3", dim, hidden // nd, dram_shard_core_grid_for_k_and_n(dim, hidden // nd), "bfloat16",
                                    fmt["FF1_FF3"], "bfloat8_b", False, count=2))
        ops.append(_dram_sharded_op("w2", hidden // nd, dim, dram_shard_core_grid_for_k_and_n(hidden // nd, dim), "bfloat8_b", fmt["FF2"],
                                    "bfloat16", False))
    ops.append(OpConfig("sdpa_decode", TensorSpec((1, 1, TILE, hd), "bfloat16"), None, None, DRAM_MEMORY_CONFIG, "bfloat16", True,
                        sdpa=(0, 0, hd, CoreCoord(8, 8))))  # SDPA_DECODE_PROGCFG: chunk sizes 0, the op picks them
    ops += _lm_head(args, device, nd)
    return ops


def _lm_head(args, device, nd) -> list[OpConfig]:
    dim, vocab = args.dim, args.vocab_size
    if device == "TG":
        return []  # one interleaved weight padded to 128K columns, ttnn's own config
    r, c = lm_head_core_grid(dim, nd)
    grid = CoreGrid(x=c, y=r)
    per_device = math.ceil(vocab / nd)
    most = lm_head_max_columns_per_device(dim, nd)
    splits = math.ceil(per_device / most)
    sizes = [most] * (splits - 1) + [per_device - most * (splits - 1)]  # lm_head.py: full chunks, then the rest
    ops = []
    for size, count in sorted(((s, sizes.count(s)) for s in set(sizes)), reverse=True):
        ops.append(_dram_sharded_op("lm_head", dim, size, grid, "bfloat16", "bfloat8_b", "bfloat8_b", False, count=count))
    return ops


def _prefill(args, device, rows, cols, nd, fmt, seq_len) -> list[OpConfig]:
    dim, hidden, hd = args.dim, args.hidden_dim, args.head_dim
    tg = device == "TG"
    cutoff = 512 if device == "N150" and dim >= 4096 else 1024  # prefill_len_cutoff (8B and 11B on N150: 512)
    act = "bfloat16"
    ops = []
    m = min(seq_len, MAX_QKV_MM_SEQ_LEN)
    pieces = max(1, seq_len // MAX_QKV_MM_SEQ_LEN)
    qkv_n = _qkv_size(args) // (rows if tg else cols)
    k = dim // (cols if tg else 1)
    qkv = MatmulMultiCoreReuseMultiCastProgramConfig(
        compute_with_storage_grid_size=CoreCoord(8, 8), in0_block_w=1, out_subblock_h=1, out_subblock_w=1,
        per_core_M=max(1, 8 if seq_len >= 2048 else math.ceil(seq_len / TILE / 8)),
        per_core_N=math.ceil(_qkv_size(args) / cols / TILE / 8),  # XQKV_PREFILL_PROGCFG divides by cluster_shape[1]
        transpose_mcast=False, fuse_batch=seq_len <= MAX_QKV_MM_SEQ_LEN)
    ops.append(OpConfig("wqkv", TensorSpec((1, pieces, m, k), act), TensorSpec((k, qkv_n), fmt["WQKV"]), qkv, DRAM_MEMORY_CONFIG, act,
                        True, count=1))
    wo_k = args.n_heads * hd // (rows if tg else nd)
    wo_n = dim // cols if tg else (1024 if nd == 8 and 1024 % (dim // 8) == 0 else dim)
    wo_m = min(seq_len, WO_PREFILL_ROWS)
    grid = find_prefill_grid(8, wo_k // TILE)
    wo = matmul_config(wo_m, wo_k, wo_n, grid, in0_block_w=1 if tg else None, fuse_batch=seq_len <= WO_PREFILL_ROWS,
                       per_core_N=None if tg else math.ceil(wo_n / (TILE * 8)), subblock_w_1=tg)
    ops.append(OpConfig("wo", TensorSpec((1, max(1, seq_len // WO_PREFILL_ROWS), wo_m, wo_k), act), TensorSpec((wo_k, wo_n), fmt["WO"]),
                        wo, DRAM_MEMORY_CONFIG, act, True))
    mm = min(seq_len, cutoff)
    mk, mn = dim // rows, hidden // cols
    grid = (8, min(min(seq_len, 1024) // TILE, 4)) if tg else find_prefill_grid(8, dim // TILE)
    w1 = matmul_config(mm, mk, mn, grid, fuse_batch=seq_len <= cutoff, per_core_N=None if tg else math.ceil(mn / (TILE * 8)), subblock_w_1=tg)
    ops.append(OpConfig("w1_w3", TensorSpec((1, max(1, seq_len // cutoff), mm, mk), act), TensorSpec((mk, mn), fmt["FF1_FF3"]), w1,
                        DRAM_MEMORY_CONFIG, "bfloat8_b", count=2))
    k2 = hidden // cols  # what each device holds
    k_cfg = hidden // cols if tg else hidden  # PREFILL_MLP_W2_PRG_CONFIG's k: the whole hidden dim but on a Galaxy
    grid = find_prefill_grid(8, k_cfg // TILE)
    w2 = matmul_config(mm, k_cfg, dim // (cols if tg else 1), grid, fuse_batch=seq_len <= cutoff,
                       per_core_N=None if tg else math.ceil(dim / (TILE * 8)), subblock_w_1=tg)
    ops.append(OpConfig("w2", TensorSpec((1, max(1, seq_len // cutoff), mm, k2), "bfloat8_b"), TensorSpec((k2, dim // (cols if tg else 1)), fmt["FF2"]),
                        w2, DRAM_MEMORY_CONFIG, act))
    chunk = 256 if seq_len >= 2048 else 64
    ops.append(OpConfig("sdpa", TensorSpec((1, 1, seq_len, hd), "bfloat8_b"), None, None, DRAM_MEMORY_CONFIG, act, False,
                        sdpa=(chunk, chunk, hd, CoreCoord(8, 8))))
    return ops


def validate(op: OpConfig, chip=WORMHOLE_B0) -> L1Use:
    """Check one op's configs as the chip would."""
    if op.sdpa is not None:
        q, k, hd, grid = op.sdpa
        return validate_sdpa(op.name, q, k, hd, grid, op.a.dtype, op.fp32_dest_acc_en, chip)
    return validate_matmul(op.name, op.a, op.b, op.program_config, op.output, op.out_dtype, fp32_dest_acc_en=op.fp32_dest_acc_en, chip=chip)

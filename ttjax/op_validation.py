"""Op configs checked as a Wormhole checks them: what ttnn's matmul validate() and program factories refuse, and
whether the circular buffers a program needs fit a core's L1 beside the tensors already there.

The rules and the wording of each refusal are tt-metal's (ttnn/cpp/ttnn/operations/matmul/device/
matmul_device_operation.cpp and its program factories; tt_metal/impl/program/program.cpp for L1),
prefixed with the op that was given the config. Numbers are tiles of 32x32 unless they say B (bytes).
Two checks ttnn leaves to the factory or to a hang are made here too, and say so: that a DRAM-sharded
weight is in DRAM, and that a sharded tensor's shards cover it.

Nothing here changes what an op computes: on the device, too, the config decides only where and how
fast (ttjax's ops take program_config / memory_config and run these checks at trace time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mesh.errors import OpConfigError
from ttjax.memory_config import (
    BufferType,
    CoreCoord,
    CoreRange,
    CoreRangeSet,
    MemoryConfig,
    ShardOrientation,
    ShardSpec,
    TensorMemoryLayout,
    TensorSpec,
    num_cores_to_corerangeset,
)
from ttjax.program_config import (
    MatmulMultiCoreReuseMultiCast1DProgramConfig,
    MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig,
    MatmulMultiCoreReuseMultiCastProgramConfig,
    out_block,
)
from ttjax.wormhole import TILE, TILE_BYTES, WORMHOLE_B0, Chip, dest_tiles, tile_bytes

WIDTH, HEIGHT, BLOCK = TensorMemoryLayout.WIDTH_SHARDED, TensorMemoryLayout.HEIGHT_SHARDED, TensorMemoryLayout.BLOCK_SHARDED
DOUBLE_BUFFER = 2  # MCAST_INPUT_BUFFERING_DEPTH (matmul_utilities.hpp)
DRAM_SHARDED_IN1_BUFFERS = 3  # the DRAM-sharded factory triple-buffers the weight stream


@dataclass(frozen=True)
class L1Use:
    """One core's L1 under an op: circular buffers from the unreserved base up, L1 tensors from the top down."""

    core_range: str
    circular_buffer_bytes: int
    resident_bytes: int  # L1 tensors (sharded operands, interleaved L1 pages) on the busiest core
    region_end: int  # absolute address where the circular buffers end


def _fail(op: str, message: str):
    raise OpConfigError(f"{op}: {message}")


def tiles(n: int) -> int:
    return -(-n // TILE)


def _rows(shape) -> int:
    return math.prod(shape[:-1])


def check_memory_config(op: str, name: str, t: TensorSpec, chip: Chip = WORMHOLE_B0) -> None:
    """A memory config that agrees with itself, the tensor and the device: a shard spec exactly when sharded, its
    grid on the device, its shards covering the tensor (tt_transformers' rule: no padding of shards)."""
    mc = t.memory_config
    spec = mc.shard_spec
    if not mc.is_sharded:
        if spec is not None:
            _fail(op, f"{name} is {mc.memory_layout.name} but carries a shard spec {list(spec.shape)}; an interleaved tensor has none.")
        return
    if spec is None:
        _fail(op, f"{name} is {mc.memory_layout.name} without a shard spec; a sharded tensor needs one (grid and shard shape).")
    box = spec.grid.bounding_box()
    if mc.buffer_type is BufferType.L1 and (box.end.x >= chip.compute_grid.x or box.end.y >= chip.compute_grid.y):
        _fail(op, f"Tensor shard spec grid {spec.grid} must lie within compute grid ({chip.compute_grid.x}, {chip.compute_grid.y}) ({name}).")
    if mc.buffer_type is BufferType.DRAM and spec.num_cores() > chip.dram_banks:
        _fail(op, f"{name}'s shard spec spans {spec.num_cores()} DRAM banks; a Wormhole has {chip.dram_banks}.")
    # Tensors are tiled: a shard covers the tile-padded shape (decode's 1 or 8 rows are one 32-row tile).
    h, w, n = tiles(_rows(t.shape)) * TILE, tiles(t.shape[-1]) * TILE, spec.num_cores()
    sh, sw = spec.shape
    if sh % TILE or sw % TILE:
        _fail(op, f"{name}'s shard shape {list(spec.shape)} is not a multiple of the {TILE}x{TILE} tile.")
    grid = box.grid_size
    ok, want = {
        HEIGHT: (sw == w and sh * n >= h, f"[>= {tiles(-(-h // n)) * TILE}, {w}] (the tensor tile-padded to [{h}, {w}])"),
        WIDTH: (sh == h and sw * n >= w, f"[{h}, >= {tiles(-(-w // n)) * TILE}] (the tensor tile-padded to [{h}, {w}])"),
        BLOCK: (sh * grid.y >= h and sw * grid.x >= w, f"[>= {tiles(-(-h // grid.y)) * TILE}, >= {tiles(-(-w // grid.x)) * TILE}]"),
    }[mc.memory_layout]
    if not ok:
        _fail(op, f"{name} {list(t.shape)} is {mc.memory_layout.name} over {n} cores with shard shape {list(spec.shape)}, which "
                  f"does not match the tensor: the shard must be {want}.")


def _resident(op: str, t: TensorSpec, chip: Chip) -> int:
    """Bytes an L1 tensor takes on the busiest core; one that does not fit at all is refused as the allocator does
    (tt_metal/impl/allocator/bank_manager.cpp)."""
    mc = t.memory_config
    if mc.buffer_type is not BufferType.L1:
        return 0
    if mc.is_sharded:
        sh, sw = mc.shard_spec.shape
        per_bank, banks = tiles(sh) * tiles(sw) * tile_bytes(t.dtype), mc.shard_spec.num_cores()
    else:
        pages = tiles(_rows(t.shape)) * tiles(t.shape[-1])
        per_bank, banks = -(-pages // chip.compute_cores) * tile_bytes(t.dtype), chip.compute_cores
    bank = chip.l1_size - chip.l1_unreserved_base
    if per_bank > bank:
        total = tiles(_rows(t.shape)) * tiles(t.shape[-1]) * tile_bytes(t.dtype)
        _fail(op, f"Out of Memory: Not enough space to allocate {total} B L1 buffer across {banks} banks, where each bank needs to store "
                  f"{per_bank} B, but bank size is {bank} B ({list(t.shape)} {t.dtype}).")
    return per_bank


def check_l1(op: str, core_range: str, cb_bytes: int, resident: int, chip: Chip = WORMHOLE_B0) -> L1Use:
    """tt_metal/impl/program/program.cpp's check of a program's static circular buffers against the core's L1."""
    end = chip.l1_unreserved_base + cb_bytes
    if end > chip.l1_size:
        _fail(op, f"Statically allocated circular buffers on {core_range} grow to {end} B which is beyond max L1 size of "
                  f"{chip.l1_size} B ({cb_bytes} B of circular buffers from the unreserved base at {chip.l1_unreserved_base} B).")
    if end > chip.l1_size - resident:
        _fail(op, f"Statically allocated circular buffers clash with L1 buffers on {core_range}. L1 buffer allocated at "
                  f"{chip.l1_size - resident} and static circular buffer region ends at {end} ({resident} B of L1 tensors on the core).")
    return L1Use(core_range, cb_bytes, resident, end)


def _check_blocks(op: str, config, fp32_dest_acc_en: bool, Kt: int):
    names = ("in0_block_w", "out_subblock_h", "out_subblock_w", "per_core_M", "per_core_N", "out_block_h", "out_block_w")
    for name in names:
        if name.startswith("out_block") and getattr(config, name) is None:
            continue  # defaults to per_core_M / N
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            _fail(op, f"{name} is {value}, which is not valid.")
    bh, bw = out_block(config)
    for a, b, an, bn in ((bh, config.out_subblock_h, "out_block_h", "out_subblock_h"), (bw, config.out_subblock_w, "out_block_w", "out_subblock_w"),
                         (config.per_core_M, bh, "per_core_M", "out_block_h"), (config.per_core_N, bw, "per_core_N", "out_block_w")):
        if a % b:
            _fail(op, f"{an} ({a}) must be divisible by {bn} ({b})")
    limit = dest_tiles(fp32_dest_acc_en)
    if config.out_subblock_h * config.out_subblock_w > limit:
        _fail(op, f"out_subblock_w {config.out_subblock_w} times out_subblock_h {config.out_subblock_h} needs to be at most {limit} "
                  f"to fit in hardware (the destination register holds {limit} tiles{' with fp32_dest_acc_en' if fp32_dest_acc_en else ''}).")
    if Kt % config.in0_block_w:
        _fail(op, f"Kt must be divisible by in0_block_w (Kt = {Kt}, in0_block_w = {config.in0_block_w}).")


def _check_grid(op: str, grid, chip: Chip):
    if grid.x < 1 or grid.y < 1:
        _fail(op, f"compute_with_storage_grid_size must be non-zero, got ({grid.x}, {grid.y})")
    if grid.x > chip.compute_grid.x or grid.y > chip.compute_grid.y:
        _fail(op, f"compute_with_storage_grid_size ({grid.x}, {grid.y}) must fit within device grid ({chip.compute_grid.x}, {chip.compute_grid.y})")


def _range(grid) -> str:
    return f"core range {CoreRange(CoreCoord(0, 0), CoreCoord(grid.x - 1, grid.y - 1))}"


def _interm_bytes(out_dtype: str, fp32_dest_acc_en: bool, packer_l1_acc: bool, k_blocks: int) -> int:
    """The partials' buffer is the output's unless the partials are kept in another format between K blocks."""
    if fp32_dest_acc_en:
        return tile_bytes("float32")
    if packer_l1_acc and k_blocks > 1:
        return tile_bytes("bfloat16")
    return tile_bytes(out_dtype)


def validate_matmul(op: str, a: TensorSpec, b: TensorSpec, config, output: MemoryConfig, out_dtype: str = "bfloat16", *,
                    fp32_dest_acc_en: bool = False, packer_l1_acc: bool = False, chip: Chip = WORMHOLE_B0) -> L1Use:
    """Refuse what the chip refuses for a = [..., M, K] @ b = [K, N] under config, writing output; returns the busiest
    core's L1 use."""
    if len(b.shape) != 2 or not a.shape:
        _fail(op, f"a matmul takes A [..., M, K] and B [K, N], got A {list(a.shape)} and B {list(b.shape)}.")
    if len(a.shape) == 1:  # a vector is one row
        a = TensorSpec((1, *a.shape), a.dtype, a.memory_config)
    if a.shape[-1] != b.shape[-2]:
        _fail(op, f"The width of the first tensor must be equal to the height of the second tensor. Mismatch: width={a.shape[-1]} height={b.shape[-2]}")
    for name, dtype in (("input A", a.dtype), ("input B", b.dtype), ("the output", out_dtype)):
        if dtype not in TILE_BYTES:
            _fail(op, f"{name} is {dtype}, which a Wormhole does not hold in tiles; use one of {', '.join(TILE_BYTES)}.")
    for name, t in (("input A", a), ("input B", b)):
        check_memory_config(op, name, t, chip)
    # A fused batch is one tall matmul; otherwise each batch is its own, M rows tall (the DRAM-sharded config never fuses).
    fused = getattr(config, "fuse_batch", False)
    Mt, Kt, Nt = tiles(_rows(a.shape) if fused else a.shape[-2]), tiles(a.shape[-1]), tiles(b.shape[-1])
    # A sharded output's spec is the op's to work out (ttnn's compute_output_specs; a different one given is replaced,
    # with a warning): only its layout and buffer type are the caller's.
    out = TensorSpec((*a.shape[:-1], b.shape[-1]), out_dtype, output_spec(op, config, output, Mt, Nt, chip))
    check_memory_config(op, "the output", out, chip)
    ma, mb = a.memory_config, b.memory_config
    ta, tb, to = (tile_bytes(t.dtype) for t in (a, b, out))
    if isinstance(config, MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig):
        return _dram_sharded(op, a, b, out, config, Mt, Kt, Nt, fp32_dest_acc_en, packer_l1_acc, chip)
    if not isinstance(config, (MatmulMultiCoreReuseMultiCastProgramConfig, MatmulMultiCoreReuseMultiCast1DProgramConfig)):
        _fail(op, f"program_config {type(config).__name__} is not a matmul program config.")
    grid = config.compute_with_storage_grid_size
    _check_grid(op, grid, chip)
    _check_blocks(op, config, fp32_dest_acc_en, Kt)
    bh, bw = out_block(config)
    k_blocks = Kt // config.in0_block_w
    depth = DOUBLE_BUFFER if k_blocks > 1 else 1
    blocks_y, blocks_x = -(-Mt // config.per_core_M), -(-Nt // config.per_core_N)
    if isinstance(config, MatmulMultiCoreReuseMultiCast1DProgramConfig):
        if blocks_x * blocks_y > grid.x * grid.y:
            _fail(op, f"Number of blocks exceeds number of cores: {blocks_x * blocks_y} blocks > {grid.x * grid.y} cores")
        if config.mcast_in0 and blocks_y != 1:
            _fail(op, f"mcast_in0 requires M ({Mt}) to fit within a single per_core_M block ({config.per_core_M}), got num_blocks_y={blocks_y}")
        if not config.mcast_in0 and blocks_x != 1:
            _fail(op, f"mcast_in1 requires N ({Nt}) to fit within one per_core_N block ({config.per_core_N}); got num_blocks_x={blocks_x}")
        if ma.is_sharded and ma.buffer_type is BufferType.L1:
            if not config.fuse_batch:
                _fail(op, "Error: Batch fusion must be enabled. (fuse_batch is False, and an L1-sharded input A needs it.)")
            want = WIDTH if config.mcast_in0 else HEIGHT
            if ma.memory_layout is not want:
                _fail(op, f"Error: input_tensor_a must be {want.name.split('_')[0].lower()} sharded. Provided tensor memory layout: {ma.memory_layout.name}")
            _shard_rows(op, a, config)
            if config.mcast_in0 and (ma.shard_spec.shape[1] // TILE) % config.in0_block_w:
                _fail(op, f"Error: shard_shape[1] ({ma.shard_spec.shape[1]}) / in0_tile.get_width() ({TILE}) must be divisible by in0_block_w ({config.in0_block_w}).")
        if output.is_sharded:
            want = WIDTH if config.mcast_in0 else HEIGHT
            line = (grid.y == 1) if config.mcast_in0 else (grid.x == 1)
            if output.memory_layout is not want and not (output.memory_layout is BLOCK and line):
                _fail(op, f"Error: Output memory layout must be {want.name}. Provided tensor memory layout: {output.memory_layout.name}")
            if ma.is_sharded and ma.buffer_type is not output.buffer_type:
                _fail(op, f"Error: Buffer type mismatch. (input A is in {ma.buffer_type.name}, the output in {output.buffer_type.name}.)")
    else:
        if config.transpose_mcast:
            blocks_x, blocks_y = blocks_y, blocks_x
        if blocks_x > grid.x:
            _fail(op, f"Num output blocks along x ({blocks_x}) must be smaller than or equal to the number of columns in compute grid ({grid.x})!")
        if blocks_y > grid.y:
            _fail(op, f"Num output blocks along y ({blocks_y}) must be smaller than or equal to the number of rows in compute grid ({grid.y})!")
        if ma.is_sharded:
            if not config.fuse_batch:
                _fail(op, "Batch fusion is required when input A is sharded (fuse_batch is False)")
            if ma.memory_layout not in (BLOCK, HEIGHT):
                _fail(op, f"Unsupported memory layout {ma.memory_layout.name}.")
            _shard_rows(op, a, config)
            if (ma.shard_spec.shape[1] // TILE) % config.in0_block_w:
                _fail(op, f"shard_shape[1] / in0_tile.get_width() ({ma.shard_spec.shape[1] // TILE}) must be divisible by in0_block_w ({config.in0_block_w})")
        if output.is_sharded and output.memory_layout is not BLOCK:
            _fail(op, f"Output memory layout must be BLOCK_SHARDED, got: {output.memory_layout.name}")
    cb = (bh * config.in0_block_w * depth * ta  # in0 slices
          + (0 if mb.is_sharded and mb.buffer_type is BufferType.L1 else bw * config.in0_block_w * depth * tb))  # in1 slices
    out_tiles = bh * bw
    if not output.is_sharded:  # a sharded output is written in place in its tensor
        cb += out_tiles * to
    two_d = isinstance(config, MatmulMultiCoreReuseMultiCastProgramConfig)
    interm = _interm_bytes(out.dtype, fp32_dest_acc_en, packer_l1_acc, k_blocks - 1 if two_d else k_blocks)
    if interm != to:
        cb += out_tiles * interm
    resident = _resident(op, a, chip) + _resident(op, b, chip) + _resident(op, out, chip)
    return check_l1(op, _range(grid), cb, resident, chip)


def output_spec(op: str, config, output: MemoryConfig, Mt: int, Nt: int, chip: Chip = WORMHOLE_B0) -> MemoryConfig:
    """The output's memory config with the shard spec the op computes: a block of per_core_M x per_core_N tiles per
    core, on as many cores as the output has blocks, taken row by row from (0, 0)."""
    if not output.is_sharded:
        return output
    pm, pn = config.per_core_M, config.per_core_N
    if min(pm, pn) < 1:
        _fail(op, f"per_core_M ({pm}) and per_core_N ({pn}) must be at least 1.")
    blocks_y, blocks_x = -(-Mt // pm), -(-Nt // pn)
    if isinstance(config, MatmulMultiCoreReuseMultiCastProgramConfig):
        bx, by = (blocks_y, blocks_x) if config.transpose_mcast else (blocks_x, blocks_y)
        if bx > chip.compute_grid.x or by > chip.compute_grid.y:
            return output  # the grid check names it
        grid = CoreRangeSet((CoreRange(CoreCoord(0, 0), CoreCoord(bx - 1, by - 1)),))
        shape = (pm * TILE, pn * TILE)
    elif output.memory_layout is HEIGHT:
        grid, shape = blocks_y, (pm * TILE, Nt * TILE)
    else:
        grid, shape = blocks_x, (Mt * TILE, pn * TILE)  # every row of the output on each core (M is one block)
    if isinstance(grid, int):
        if grid > chip.compute_cores:
            _fail(op, f"the output has {grid} blocks of per_core_M x per_core_N = {pm} x {pn} tiles, more than the {chip.compute_cores} cores of the device.")
        grid = num_cores_to_corerangeset(grid, chip.compute_grid)
    return MemoryConfig(output.memory_layout, output.buffer_type, ShardSpec(grid, shape))


def _shard_rows(op: str, a: TensorSpec, config):
    Mt = tiles(_rows(a.shape))
    sh = a.memory_config.shard_spec.shape[0]
    if isinstance(config, MatmulMultiCoreReuseMultiCast1DProgramConfig) and config.mcast_in0 and Mt != config.per_core_M:
        _fail(op, f"Error: M ({Mt}) must be equal to per_core_M ({config.per_core_M}).")
    if config.per_core_M != sh // TILE:
        _fail(op, f"Error: per_core_M ({config.per_core_M}) must be equal to shard_shape[0] ({sh}) / in0_tile.get_height() ({TILE}).")


def _dram_sharded(op, a, b, out, config, Mt, Kt, Nt, fp32_dest_acc_en, packer_l1_acc, chip) -> L1Use:
    ma, mb, mo = a.memory_config, b.memory_config, out.memory_config
    for name in ("in0_block_w", "per_core_M", "per_core_N"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            _fail(op, f"{name} is {getattr(config, name)}, which is not valid.")
    if not ma.is_sharded:
        _fail(op, "Input tensor A must be sharded for DRAM sharded program config")
    if not mo.is_sharded:
        _fail(op, "Output memory config must be sharded for DRAM sharded program config")
    if ma.memory_layout is not WIDTH:
        _fail(op, f"Input A memory layout must be WIDTH_SHARDED, got: {ma.memory_layout.name}")
    if ma.buffer_type is not mo.buffer_type:
        _fail(op, f"Input A and output buffer types must match, got input: {ma.buffer_type.name} vs output: {mo.buffer_type.name}")
    if ma.memory_layout is not mo.memory_layout:
        _fail(op, f"Input A and output memory layouts must match, got input: {ma.memory_layout.name} vs output: {mo.memory_layout.name}")
    if ma.shard_spec.orientation is not ShardOrientation.ROW_MAJOR:
        _fail(op, f"Input A shard orientation must be ROW_MAJOR, got: {ma.shard_spec.orientation.name}")
    if Mt != config.per_core_M:
        _fail(op, f"M ({Mt}) must equal per_core_M ({config.per_core_M})")
    if Mt != 1:
        _fail(op, f"currently only support in0 tensor height of tile height (M is {Mt} tiles: the DRAM-sharded matmul is for decode's 32 rows)")
    if config.per_core_M != ma.shard_spec.shape[0] // TILE:
        _fail(op, f"per_core_M ({config.per_core_M}) must equal shard_shape[0] / in0_tile.get_height() ({ma.shard_spec.shape[0] // TILE})")
    if Kt % config.in0_block_w:
        _fail(op, f"K ({Kt}) must be divisible by in0_block_w ({config.in0_block_w})")
    per_core_K = ma.shard_spec.shape[1] // TILE
    if per_core_K % config.in0_block_w:
        _fail(op, f"shard_shape[1] / in0_tile.get_width() ({per_core_K}) must be divisible by in0_block_w ({config.in0_block_w})")
    if Kt % per_core_K:
        _fail(op, f"in DRAM sharded Matmul we don't have support for un-even sharding currently. K: {Kt}, per_core_K: {per_core_K}.")
    if mb.memory_layout is not WIDTH:
        _fail(op, f"Input B memory layout must be WIDTH_SHARDED, got: {mb.memory_layout.name}")
    if mb.buffer_type is not BufferType.DRAM:  # ttnn's validate does not look; its factory reads B from the DRAM banks
        _fail(op, f"input B must be width-sharded in DRAM for the DRAM-sharded program config (its workers each read one DRAM bank), got {mb.buffer_type.name}.")
    per_core_N_compute = -(-Nt // chip.dram_banks)  # each bank's worker computes its shard's columns
    k_blocks = Kt // config.in0_block_w
    ta, tb, to = (tile_bytes(t.dtype) for t in (a, b, out))
    cb = (config.per_core_M * config.in0_block_w * DOUBLE_BUFFER * ta
          + per_core_N_compute * config.in0_block_w * DRAM_SHARDED_IN1_BUFFERS * tb
          + config.per_core_M * per_core_N_compute * to)
    interm = _interm_bytes(out.dtype, fp32_dest_acc_en, packer_l1_acc, k_blocks)
    if interm != to:
        cb += config.per_core_M * per_core_N_compute * interm
    resident = _resident(op, a, chip) + _resident(op, out, chip)
    return check_l1(op, f"the {chip.dram_banks} DRAM-bank worker cores", cb, resident, chip)  # one worker per bank


def validate_sdpa(op: str, q_chunk_size: int, k_chunk_size: int, head_dim: int, grid, dtype: str = "bfloat16",
                  fp32_dest_acc_en: bool = False, chip: Chip = WORMHOLE_B0) -> L1Use:
    """SDPA's program config: chunks of whole tiles, a grid no bigger than the device (ttnn checks only the core
    count), and the chunks' circular buffers in L1 (sdpa_program_factory.cpp)."""
    if q_chunk_size == k_chunk_size == 0:  # decode's config: the op picks its chunks; only the grid is the caller's
        if grid.x * grid.y > chip.compute_cores:
            _fail(op, f"Provided grid must not contain more cores than the device. Got {grid.x * grid.y} cores, expected at most {chip.compute_cores} cores.")
        return L1Use(_range(grid), 0, 0, chip.l1_unreserved_base)
    for name, size in (("q_chunk_size", q_chunk_size), ("k_chunk_size", k_chunk_size)):
        if size < TILE or size % TILE:
            _fail(op, f"{name} must be divisible by TILE_SIZE. Got {name}: {size}, TILE_SIZE: {TILE}")
    if grid.x * grid.y > chip.compute_cores:
        _fail(op, f"Provided grid must not contain more cores than the device. Got {grid.x * grid.y} cores, expected at most {chip.compute_cores} cores.")
    sq, sk, dh = q_chunk_size // TILE, k_chunk_size // TILE, tiles(head_dim)
    t, bf16 = tile_bytes(dtype), tile_bytes("bfloat16")
    acc = tile_bytes("float32") if fp32_dest_acc_en else bf16
    cb = (sq * dh * 2 * t + sk * dh * 2 * t + sk * dh * 2 * t  # q, k, v chunks, double-buffered
          + sq * sk * bf16 + sq * sk * bf16  # the mask chunk and the scores (qk) of one chunk pair
          + sq * dh * bf16 + sq * dh * acc + 4 * sq * acc)  # the output and its running accumulator, max and sum stats
    return check_l1(op, _range(grid), cb, 0, chip)

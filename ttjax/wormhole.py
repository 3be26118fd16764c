"""Published facts of a Wormhole (wormhole_b0) chip and of the systems built from it, each with its source.

What the op checks need (the compute grid, L1, tile sizes, the destination register) and what the
device model prices with (DRAM and ethernet bandwidth, the matrix engine's rate per fidelity, the
cost of dispatching an op and of a collective). Sources are tenstorrent/tt-metal paths unless a URL
is given; "spec" is docs.tenstorrent.com/aibs/wormhole/specifications.html.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.errors import OpConfigError
from ttjax.memory_config import CoreCoord

TILE = 32
# Bytes of one 32x32 tile (tt_metal/api/tt-metalium/constants.hpp): bfloat8_b is 1 B a value plus 16 exponents of
# 4 faces (BFLOAT8_B_TILE_HW = TILE_HW + 64); bfloat4_b half a byte a value plus the same exponents.
TILE_BYTES = {"float32": 4096, "bfloat16": 2048, "bfloat8_b": 1088, "bfloat4_b": 576}


def tile_bytes(dtype: str) -> int:
    if dtype not in TILE_BYTES:
        raise OpConfigError(f"dtype {dtype!r} is not a tile format of Wormhole; use one of {', '.join(TILE_BYTES)}.")
    return TILE_BYTES[dtype]


def dest_tiles(fp32_dest_acc_en: bool, dst_full_sync_en: bool = False) -> int:
    """Tiles the destination register holds for one math step (compute_kernel_config.cpp, get_dest_reg_count): 16 tiles
    of 32x32, halved in the default half-sync mode (the packer drains one half while math fills the other), halved
    again with FP32 accumulation: 8 by default, 4 with fp32_dest_acc_en."""
    return 16 // (1 if dst_full_sync_en else 2) // (2 if fp32_dest_acc_en else 1)


@dataclass(frozen=True)
class Chip:
    """One Wormhole chip as software sees it."""

    # Worker cores ops may compute on (compute_with_storage_grid_size): tech_reports/GEMM_FLOPS/GEMM_FLOPS.md, "Currently
    # the max for Wormhole is 8x8"; tt_transformers' helpers cap grids at 8x8. See COMPUTE_GRIDS for each board.
    compute_grid: CoreCoord = CoreCoord(8, 8)
    # L1 per core: MEM_L1_SIZE (1464 * 1024), tt_metal/hw/inc/wormhole/dev_mem_map.h; the "max L1 size" of the
    # circular-buffer check (tt_metal/impl/program/program.cpp).
    l1_size: int = 1_499_136
    # Where circular buffers start (firmware, kernel config and mailboxes below it): l1_unreserved_base of the
    # wormhole_b0 system descriptor tt-mlir dumps (it moves a little between tt-metal versions).
    l1_unreserved_base: int = 103_712
    # DRAM banks (tech_reports/Saturating_DRAM_bandwidth: "on Wormhole there are 12 DRAM banks"); DRAM-sharded weights
    # are split over them (tt_transformers create_dram_sharded_mem_config).
    dram_banks: int = 12
    # AI clock, 1 GHz (spec).
    clock_hz: float = 1e9
    # GDDR6 peak, 288 GB/s (spec: 12 GT/s, 192-bit bus).
    dram_peak: float = 288e9
    # What decode matmuls reach: "around 240 GB/s" DRAM-sharded, "around 190 GB/s" interleaved
    # (tech_reports/LLMs/llms.md, "DRAM sharding"; Saturating_DRAM_bandwidth measures 239-261 GB/s on Llama-70B's).
    dram_sharded_bandwidth: float = 240e9
    dram_interleaved_bandwidth: float = 190e9
    # Matrix engine: 8x16 x 16x16 a cycle = 2048 multiply-adds = 4096 FLOPs = 4 TFLOPS a core at 1 GHz in LoFi; HiFi2,
    # HiFi3 and HiFi4 take 2, 3 and 4 passes (tech_reports/matrix_engine/matrix_engine.md).
    flops_per_core_lofi: float = 4e12
    # A NoC moves 32 B a cycle a link (tests/tt_metal/tt_metal/data_movement/documentation/intro_to_dm.md).
    noc_bytes_per_cycle: int = 32
    # Ethernet: 100 Gb/s a direction a link, 16 links a chip (tech_reports/EthernetMultichip/BasicEthernetGuide.md).
    ethernet_link_bandwidth: float = 12.5e9
    # GDDR6 a chip holds: 12 GB (spec: n150 12 GB, n300 24 GB over its two chips).
    dram_capacity: float = 12e9

    @property
    def compute_cores(self) -> int:
        return self.compute_grid.x * self.compute_grid.y


WORMHOLE_B0 = Chip()

# compute_with_storage_grid_size per board and dispatch placement, from the core descriptors ttnn 0.81.1 ships
# (tt_metal/core_descriptors/wormhole_b0_80_arch.yaml: nebula_x1 is the n150, nebula_x2 an n300 chip). Of a Wormhole's
# 8x10 Tensix cores an n150 keeps 8x9 after harvesting, an n300 chip 8x8; tensix dispatch takes the last row ("row")
# or column ("col"), which is where 8x8 comes from. With dispatch on ethernet cores (tt-metal's choice for the remote
# chip of an n300) no Tensix row is taken. A TensorSpec may name any grid (ttnn checks the device only when it
# allocates); the op checks take Chip.compute_grid.
COMPUTE_GRIDS = {
    ("n150", "row"): CoreCoord(8, 8),
    ("n150", "col"): CoreCoord(7, 9),
    ("n300", "row"): CoreCoord(8, 7),
    ("n300", "col"): CoreCoord(7, 8),
    ("galaxy", "row"): CoreCoord(8, 9),
    ("galaxy", "col"): CoreCoord(7, 10),
}

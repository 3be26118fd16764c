"""ttnn's matmul program configs: how a matmul is split over a Wormhole's cores.

Fields, defaults and keyword-only constructors are ttnn's (ttnn/cpp/ttnn/operations/matmul/device/config/
matmul_program_config_types.hpp, the Python constructors of matmul_nanobind.cpp), held to ttnn 0.81.1 by the oracle
tier (tests/oracle/). Counts are in 32x32 tiles:

- per_core_M x per_core_N: the output block one core computes (out_block_h/w default to them);
- in0_block_w: the K tiles of one step (the circular buffers hold in0_block_w-wide slices of A and B);
- out_subblock_h x out_subblock_w: the tiles one math step accumulates in the destination register.

The 2D config (MatmulMultiCoreReuseMultiCastProgramConfig) splits M over grid rows and N over grid
columns and multicasts A along rows and B along columns: prefill. The 1D config splits N (mcast_in0)
or M over a line of cores: narrow, L1-sharded activations. The DRAM-sharded config has one worker
per DRAM bank reading its own shard of the weight: decode, where reading the weight is the cost.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields

from mesh.errors import OpConfigError
from ttjax.core_range import CoreCoord, CoreRangeSet


def _checked(config) -> None:
    """A grid given as (x, y), as tt_transformers passes it, becomes a CoreCoord; counts must be integers (numpy's
    too). Whether they fit the shapes is ttjax.op_validation's to say."""
    grid = getattr(config, "compute_with_storage_grid_size", None)
    if isinstance(grid, tuple) and len(grid) == 2:
        object.__setattr__(config, "compute_with_storage_grid_size", CoreCoord(*map(int, grid)))
    elif grid is not None and not isinstance(grid, CoreCoord):
        raise OpConfigError(f"{type(config).__name__}: compute_with_storage_grid_size {grid!r} is not a CoreCoord or an (x, y) pair.")
    for f in fields(config):
        value = getattr(config, f.name)
        if f.type in ("int", "int | None") and value is not None:
            try:
                object.__setattr__(config, f.name, operator.index(value))
            except TypeError:
                raise OpConfigError(f"{type(config).__name__}: {f.name} = {value!r} is not an integer.") from None


def _fill_out_block(config) -> None:
    """out_block_h / w default to per_core_M / N, filled in at construction as ttnn's constructors do."""
    if config.out_block_h is None:
        object.__setattr__(config, "out_block_h", config.per_core_M)
    if config.out_block_w is None:
        object.__setattr__(config, "out_block_w", config.per_core_N)


@dataclass(frozen=True, kw_only=True)
class MatmulMultiCoreReuseMultiCastProgramConfig:
    compute_with_storage_grid_size: CoreCoord
    in0_block_w: int
    out_subblock_h: int
    out_subblock_w: int
    out_block_h: int | None = None
    out_block_w: int | None = None
    per_core_M: int
    per_core_N: int
    transpose_mcast: bool
    fused_activation: str | None = None
    fuse_batch: bool = True
    allowed_worker_cores: CoreRangeSet | None = None

    def __post_init__(self):
        _checked(self)
        _fill_out_block(self)


@dataclass(frozen=True, kw_only=True)
class MatmulMultiCoreReuseMultiCast1DProgramConfig:
    compute_with_storage_grid_size: CoreCoord
    in0_block_w: int
    out_subblock_h: int
    out_subblock_w: int
    out_block_h: int | None = None
    out_block_w: int | None = None
    per_core_M: int
    per_core_N: int
    fuse_batch: bool
    fused_activation: str | None = None
    mcast_in0: bool
    gather_in0: bool = False
    hop_cores: CoreRangeSet = field(default_factory=CoreRangeSet)
    num_global_cb_receivers: int = 1
    untilize_out: bool = False
    allowed_worker_cores: CoreRangeSet | None = None
    stream_in1: bool = False

    def __post_init__(self):
        _checked(self)
        _fill_out_block(self)


@dataclass(frozen=True, kw_only=True)
class MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig:
    """No grid: the workers are A's shard grid, and each reads the weight shard of one DRAM bank (or
    num_workers_per_dram_bank of them)."""

    in0_block_w: int
    per_core_M: int
    per_core_N: int
    fused_activation: str | None = None
    num_workers_per_dram_bank: int = 1

    def __post_init__(self):
        _checked(self)


MatmulProgramConfig = (MatmulMultiCoreReuseMultiCastProgramConfig | MatmulMultiCoreReuseMultiCast1DProgramConfig
                       | MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig)


def out_block(config) -> tuple[int, int]:
    """out_block_h / w, which default to per_core_M / N (None only: an explicit 0 is refused by validation)."""
    h, w = getattr(config, "out_block_h", None), getattr(config, "out_block_w", None)
    return (config.per_core_M if h is None else h), (config.per_core_N if w is None else w)

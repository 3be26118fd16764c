"""ttnn's memory configs: where a tensor lives on a Wormhole chip (DRAM or L1) and how it is split over cores.

Names and fields follow ttnn (tt_metal/api/tt-metalium/buffer_types.hpp, buffer.hpp, core_coord.hpp;
ttnn/api/ttnn/tensor/memory_config/memory_config.hpp; ttnn/ttnn/core.py). Core ranges are inclusive,
(x, y) = (column, row). A shard shape is [height, width] in elements, every dimension but the last
folded into the height. On ttjax's CPU meshes nothing of this changes a value: the configs are
checked as the chip would check them (ttjax.op_validation) and priced by the device model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from mesh.errors import OpConfigError


class TensorMemoryLayout(Enum):
    INTERLEAVED = 0  # pages round-robin over the banks (DRAM: 12 banks of a Wormhole; L1: every core)
    HEIGHT_SHARDED = 2  # rows split over the cores, each core a [h, W] shard
    WIDTH_SHARDED = 3  # columns split over the cores, each core a [H, w] shard
    BLOCK_SHARDED = 4  # a 2D grid of [h, w] blocks, rows over grid y and columns over grid x


class BufferType(Enum):
    DRAM = 0
    L1 = 1


class ShardOrientation(Enum):
    ROW_MAJOR = 0
    COL_MAJOR = 1


@dataclass(frozen=True)
class CoreCoord:
    x: int
    y: int

    def __str__(self) -> str:
        return f"(x={self.x},y={self.y})"


@dataclass(frozen=True)
class CoreRange:
    """Cores start..end, both included."""

    start: CoreCoord
    end: CoreCoord

    def __post_init__(self):
        if self.end.x < self.start.x or self.end.y < self.start.y:
            raise OpConfigError(f"CoreRange {self} ends before it starts.")

    @property
    def grid_size(self) -> CoreCoord:
        return CoreCoord(self.end.x - self.start.x + 1, self.end.y - self.start.y + 1)

    def num_cores(self) -> int:
        g = self.grid_size
        return g.x * g.y

    def __str__(self) -> str:
        return f"[{self.start} - {self.end}]"


@dataclass(frozen=True)
class CoreRangeSet:
    ranges: tuple[CoreRange, ...]

    def __post_init__(self):
        object.__setattr__(self, "ranges", tuple(self.ranges))
        cores = [c for r in self.ranges for c in _cores(r)]
        if len(set(cores)) != len(cores):
            raise OpConfigError(f"CoreRangeSet {self} has overlapping ranges.")

    def num_cores(self) -> int:
        return sum(r.num_cores() for r in self.ranges)

    def bounding_box(self) -> CoreRange:
        return CoreRange(CoreCoord(min(r.start.x for r in self.ranges), min(r.start.y for r in self.ranges)),
                         CoreCoord(max(r.end.x for r in self.ranges), max(r.end.y for r in self.ranges)))

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.ranges)) + "}"


def _cores(r: CoreRange):
    return [(x, y) for y in range(r.start.y, r.end.y + 1) for x in range(r.start.x, r.end.x + 1)]


@dataclass(frozen=True)
class CoreGrid:
    """ttnn.CoreGrid(x=columns, y=rows), from core (0, 0)."""

    x: int
    y: int

    @property
    def num_cores(self) -> int:
        return self.x * self.y

    def core_range_set(self) -> CoreRangeSet:
        return CoreRangeSet((CoreRange(CoreCoord(0, 0), CoreCoord(self.x - 1, self.y - 1)),))


@dataclass(frozen=True)
class ShardSpec:
    grid: CoreRangeSet
    shape: tuple[int, int]  # [height, width] of one core's shard, in elements
    orientation: ShardOrientation = ShardOrientation.ROW_MAJOR

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise OpConfigError(f"ShardSpec shape {list(self.shape)} must be [height, width] of positive sizes.")

    def num_cores(self) -> int:
        return self.grid.num_cores()


@dataclass(frozen=True)
class MemoryConfig:
    memory_layout: TensorMemoryLayout = TensorMemoryLayout.INTERLEAVED
    buffer_type: BufferType = BufferType.DRAM
    shard_spec: ShardSpec | None = None

    @property
    def is_sharded(self) -> bool:
        return self.memory_layout is not TensorMemoryLayout.INTERLEAVED

    def __str__(self) -> str:
        spec = "" if self.shard_spec is None else f", shard {list(self.shard_spec.shape)} on {self.shard_spec.grid}"
        return f"{self.memory_layout.name} {self.buffer_type.name}{spec}"


def num_cores_to_corerangeset(cores: int, grid: CoreCoord, row_wise: bool = True) -> CoreRangeSet:
    """ttnn.num_cores_to_corerangeset: the first `cores` cores of grid, row by row (or column by column)."""
    if not 1 <= cores <= grid.x * grid.y:
        raise OpConfigError(f"{cores} cores do not fit a {grid.x}x{grid.y} grid of {grid.x * grid.y}.")
    across = grid.x if row_wise else grid.y
    full, rest = divmod(cores, across)
    at = (lambda i, j: CoreCoord(i, j)) if row_wise else (lambda i, j: CoreCoord(j, i))
    ranges = [CoreRange(at(0, 0), at(across - 1, full - 1))] if full else []
    if rest:
        ranges.append(CoreRange(at(0, full), at(rest - 1, full)))
    return CoreRangeSet(tuple(ranges))


DRAM_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.DRAM)
L1_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.L1)
# Layout only: the op works out the shard spec (ttnn/types.hpp).
L1_WIDTH_SHARDED_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1)
L1_HEIGHT_SHARDED_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.HEIGHT_SHARDED, BufferType.L1)
L1_BLOCK_SHARDED_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.BLOCK_SHARDED, BufferType.L1)


def create_sharded_memory_config(shape: tuple[int, int], core_grid: CoreGrid | CoreRangeSet, strategy: TensorMemoryLayout,
                                 orientation: ShardOrientation = ShardOrientation.ROW_MAJOR,
                                 use_height_and_width_as_shard_shape: bool = False) -> MemoryConfig:
    """ttnn.create_sharded_memory_config (always L1). shape is the tensor's [..., H, W], or the shard's own
    [h, w] with use_height_and_width_as_shard_shape (as tt_transformers always calls it)."""
    grid = core_grid.core_range_set() if isinstance(core_grid, CoreGrid) else core_grid
    *outer, w = shape
    h = math.prod(outer)
    if not use_height_and_width_as_shard_shape:
        n = grid.num_cores()
        box = grid.bounding_box().grid_size
        h, w = {TensorMemoryLayout.HEIGHT_SHARDED: (h // n, w), TensorMemoryLayout.WIDTH_SHARDED: (h, w // n),
                TensorMemoryLayout.BLOCK_SHARDED: (h // box.y, w // box.x)}[strategy]
    return MemoryConfig(strategy, BufferType.L1, ShardSpec(grid, (h, w), orientation))


@dataclass(frozen=True)
class TensorSpec:
    """What an op needs to know of an operand to check a config: its logical shape, its format and where it lives."""

    shape: tuple[int, ...]
    dtype: str  # "bfloat16", "bfloat8_b", "bfloat4_b", "float32"
    memory_config: MemoryConfig = field(default=DRAM_MEMORY_CONFIG)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

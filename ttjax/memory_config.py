"""ttnn's memory configs: where a tensor lives on a Wormhole chip (DRAM or L1) and how it is split over cores.

Names and fields follow ttnn (tt_metal/api/tt-metalium/buffer_types.hpp, buffer.hpp;
ttnn/api/ttnn/tensor/memory_config/memory_config.hpp; tensor_spec.cpp; ttnn/ttnn/core.py) and are held to ttnn 0.81.1
itself by the oracle tier (tests/oracle/). Core ranges (ttjax.core_range) are inclusive, (x, y) = (column, row). A
shard shape is [height, width] in elements of the tensor's physical 2-D shape: every dimension but the last folded
into the height, the last two padded to whole tiles in TILE layout. On ttjax's CPU meshes nothing of this changes a value: the configs are
checked as the chip would check them (ttjax.op_validation) and priced by the device model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from mesh.errors import OpConfigError
from ttjax.core_range import CoreCoord, CoreGrid, CoreRange, CoreRangeSet, num_cores_to_corerangeset  # noqa: F401


class TensorMemoryLayout(Enum):
    INTERLEAVED = 0  # pages round-robin over the banks (DRAM: 12 banks of a Wormhole; L1: every core)
    HEIGHT_SHARDED = 2  # rows split over the cores, each core a [h, W] shard
    WIDTH_SHARDED = 3  # columns split over the cores, each core a [H, w] shard
    BLOCK_SHARDED = 4  # a 2D grid of [h, w] blocks, rows over grid y and columns over grid x


class BufferType(Enum):
    DRAM = 0
    L1 = 1
    SYSTEM_MEMORY = 2
    L1_SMALL = 3
    TRACE = 4


class ShardOrientation(Enum):
    ROW_MAJOR = 0
    COL_MAJOR = 1


class ShardStrategy(Enum):
    """ttnn.ShardStrategy: what create_sharded_memory_config splits (its TensorMemoryLayout is also taken)."""

    HEIGHT = 1
    WIDTH = 2
    BLOCK = 3


class Layout(Enum):
    """ttnn.Layout: ROW_MAJOR pages are rows; TILE pages are 32x32 tiles, the last two dims padded to whole tiles."""

    ROW_MAJOR = 0
    TILE = 1


ROW_MAJOR_LAYOUT = Layout.ROW_MAJOR
TILE_LAYOUT = Layout.TILE
TILE = 32


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


DRAM_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.DRAM)
L1_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.L1)
# Layout only: the op works out the shard spec (ttnn/types.hpp).
L1_WIDTH_SHARDED_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.WIDTH_SHARDED, BufferType.L1)
L1_HEIGHT_SHARDED_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.HEIGHT_SHARDED, BufferType.L1)
L1_BLOCK_SHARDED_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.BLOCK_SHARDED, BufferType.L1)



_STRATEGY_LAYOUT = {ShardStrategy.HEIGHT: TensorMemoryLayout.HEIGHT_SHARDED, ShardStrategy.WIDTH: TensorMemoryLayout.WIDTH_SHARDED,
                    ShardStrategy.BLOCK: TensorMemoryLayout.BLOCK_SHARDED}


def create_sharded_memory_config(shape, core_grid, strategy, orientation: ShardOrientation | None = None,
                                 use_height_and_width_as_shard_shape: bool = False) -> MemoryConfig:
    """ttnn.create_sharded_memory_config (always L1). shape is the tensor's [..., H, W] (its height all but the last
    dim folded together), split over core_grid: a CoreGrid, a pair of CoreGrids (a full grid and the partial row
    below it) or, with use_height_and_width_as_shard_shape only, a CoreRangeSet. With
    use_height_and_width_as_shard_shape the last two dims are the shard itself ([W, H] for COL_MAJOR, as ttnn
    swaps them). A split must be exact: ttnn refuses a shape the grid does not divide."""
    layout = _STRATEGY_LAYOUT.get(strategy, strategy)
    if layout not in _STRATEGY_LAYOUT.values():
        raise OpConfigError(f"create_sharded_memory_config: strategy {strategy!r} is not HEIGHT, WIDTH or BLOCK.")
    orientation = ShardOrientation.ROW_MAJOR if orientation is None else orientation
    if isinstance(core_grid, CoreGrid):
        grid = core_grid.core_range_set()
    elif isinstance(core_grid, (tuple, list)) and len(core_grid) == 2 and all(isinstance(g, CoreGrid) for g in core_grid):
        full, partial = core_grid
        grid = CoreRangeSet((CoreRange(CoreCoord(0, 0), CoreCoord(full.x - 1, full.y - 1)),
                             CoreRange(CoreCoord(0, full.y), CoreCoord(partial.x - 1, full.y))))
    elif isinstance(core_grid, CoreRangeSet):
        if not use_height_and_width_as_shard_shape:
            raise OpConfigError(f"create_sharded_memory_config: a CoreRangeSet core_grid ({core_grid}) needs "
                                "use_height_and_width_as_shard_shape=True (the shard shape cannot be worked out from it).")
        grid = core_grid
    else:
        raise OpConfigError(f"create_sharded_memory_config: core_grid {core_grid!r} is not a CoreGrid, a pair of "
                            "CoreGrids or a CoreRangeSet.")
    if len(shape) < 2:
        raise OpConfigError(f"create_sharded_memory_config: shape {list(shape)} needs at least [height, width].")
    *batch, height, width = (int(s) for s in shape)
    if use_height_and_width_as_shard_shape:
        shard = (height, width) if orientation is ShardOrientation.ROW_MAJOR else (width, height)
    else:
        h, w = math.prod(batch) * height, width
        if isinstance(core_grid, (tuple, list)):
            raise OpConfigError("create_sharded_memory_config: a pair of CoreGrids needs "
                                "use_height_and_width_as_shard_shape=True.")
        if layout is TensorMemoryLayout.BLOCK_SHARDED:
            rows, cols = (core_grid.y, core_grid.x) if orientation is ShardOrientation.ROW_MAJOR else (core_grid.x, core_grid.y)
            parts = {"height": (h, rows), "width": (w, cols)}
        elif layout is TensorMemoryLayout.HEIGHT_SHARDED:
            parts = {"height": (h, core_grid.num_cores)}
        else:
            parts = {"width": (w, core_grid.num_cores)}
        for what, (size, n) in parts.items():
            if size % n:
                raise OpConfigError(f"create_sharded_memory_config: the {what} {size} of shape {list(shape)} does not "
                                    f"divide over {n} cores of the {core_grid.x}x{core_grid.y} grid (Invalid sharding core_grid).")
        shard = (h // parts["height"][1] if "height" in parts else h, w // parts["width"][1] if "width" in parts else w)
    return MemoryConfig(layout, BufferType.L1, ShardSpec(grid, shard, orientation))


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


BLOCK_FLOATS = ("bfloat8_b", "bfloat4_b")
ELEMENT_BYTES = {"bfloat16": 2, "float32": 4, "uint32": 4, "int32": 4, "uint16": 2, "uint8": 1}


@dataclass(frozen=True)
class TensorSpec:
    """ttnn.TensorSpec: a tensor's logical shape, format, layout and where it lives. Constructing one checks what
    ttnn's constructor checks (tensor_spec.cpp): a TILE shard of whole tiles, shards that cover the tensor's physical
    shape on the grid's cores (the shard width the full width for HEIGHT, the height for WIDTH; BLOCK on one
    rectangle), block floats in TILE layout. Whether the grid is on the device is the op's check
    (ttjax.op_validation), as it is ttnn's at allocation."""

    shape: tuple[int, ...]
    dtype: str  # "bfloat16", "bfloat8_b", "bfloat4_b", "float32"
    memory_config: MemoryConfig = field(default=DRAM_MEMORY_CONFIG)
    layout: Layout = Layout.TILE

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        spec = self.memory_config.shard_spec
        if spec is not None and self.memory_config.is_sharded:
            self._check_shard(spec)
        if self.dtype in BLOCK_FLOATS and self.layout is not Layout.TILE:
            raise OpConfigError(f"TensorSpec {list(self.shape)} {self.dtype}: Only TILE layout is supported for "
                                f"{self.dtype.upper()} dtype! (got {self.layout.name})")

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """TILE pads the last two dims to whole tiles (a vector becomes one tile row: [32, n padded]); ROW_MAJOR
        pads nothing."""
        if self.layout is Layout.ROW_MAJOR:
            return self.shape
        if len(self.shape) == 1:
            return (TILE, _round_up(self.shape[0], TILE))
        return (*self.shape[:-2], _round_up(self.shape[-2], TILE), _round_up(self.shape[-1], TILE))

    @property
    def physical_shape(self) -> tuple[int, int]:
        """[height, width]: every padded dim but the last folded into the height."""
        padded = self.padded_shape
        return (1, padded[0]) if len(padded) == 1 else (math.prod(padded[:-1]), padded[-1])

    def _check_shard(self, spec: ShardSpec) -> None:
        sh, sw = spec.shape
        where = f"TensorSpec {list(self.shape)} {self.memory_config.memory_layout.name}"
        if self.layout is Layout.TILE and (sh % TILE or sw % TILE):
            raise OpConfigError(f"{where}: Physical shard shape ({sh}, {sw}) must be tile {{{TILE}, {TILE}}} sized!")
        h, w = self.physical_shape
        if self.layout is Layout.ROW_MAJOR:  # a row-major page (a row) is padded out to the shard width
            w = _round_up(w, sw)
        cores = spec.grid.num_cores()
        layout = self.memory_config.memory_layout
        if layout is TensorMemoryLayout.HEIGHT_SHARDED:
            if sw != w:
                raise OpConfigError(f"{where}: Shard width {sw} must match physical width {w} for height sharded")
            if -(-h // sh) > cores:
                raise OpConfigError(f"{where}: Number of shards along height {-(-h // sh)} must not exceed number of cores {cores}")
        elif layout is TensorMemoryLayout.WIDTH_SHARDED:
            if sh != h:
                raise OpConfigError(f"{where}: Shard height {sh} must match physical height {h} for width sharded")
            if -(-w // sw) > cores:
                raise OpConfigError(f"{where}: Number of shards along width {-(-w // sw)} must not exceed number of cores {cores}")
        else:
            if spec.grid.size() != 1:
                raise OpConfigError(f"{where}: Shard grid must be one full rectangular grid for block sharded! (got {spec.grid})")
            box = spec.grid.bounding_box().grid_size
            row_major = spec.orientation is ShardOrientation.ROW_MAJOR
            along = {"height": (-(-h // sh), box.y if row_major else box.x, "rows" if row_major else "columns"),
                     "width": (-(-w // sw), box.x if row_major else box.y, "columns" if row_major else "rows")}
            for what, (n, have, name) in along.items():
                if n > have:
                    raise OpConfigError(f"{where}: Number of shards along {what} {n} must not exceed number of {name} "
                                        f"{have} for {'row major' if row_major else 'column major'} orientation!")

    # ttnn.TensorSpec's sharding helpers: as even a split as the alignment allows, one shard per core of the grid
    # (ttnn 0.81.1 keeps the whole grid even where fewer shards would do). height/width round the shard to whole
    # tiles (TILE) and name the result as ttnn's legacy shard spec does: a shard holding every row is WIDTH_SHARDED.
    # block rounds to the recommended alignment: tiles, or for ROW_MAJOR a width of whole 64-byte L1 words.
    def height_sharded(self, grid: CoreRangeSet, orientation: ShardOrientation = ShardOrientation.ROW_MAJOR) -> TensorSpec:
        h, w = self.physical_shape
        sh = self._aligned(-(-h // grid.num_cores()), required=True)
        return self._sharded(self._one_dim_layout(sh, h), grid, (sh, w), orientation)

    def width_sharded(self, grid: CoreRangeSet, orientation: ShardOrientation = ShardOrientation.ROW_MAJOR) -> TensorSpec:
        h, w = self.physical_shape
        sw = self._aligned(-(-w // grid.num_cores()), required=True)
        return self._sharded(self._one_dim_layout(h, h), grid, (h, sw), orientation)

    def block_sharded(self, grid: CoreRange | CoreRangeSet, orientation: ShardOrientation = ShardOrientation.ROW_MAJOR) -> TensorSpec:
        if isinstance(grid, CoreRangeSet):
            if grid.size() != 1:
                raise OpConfigError(f"TensorSpec.block_sharded: grid {grid} must be one rectangle.")
            grid = grid.ranges[0]
        h, w = self.physical_shape
        size = grid.grid_size
        row_major = orientation is ShardOrientation.ROW_MAJOR
        sh = self._aligned(-(-h // (size.y if row_major else size.x)), required=False, axis=0)
        sw = self._aligned(-(-w // (size.x if row_major else size.y)), required=False, axis=1)
        return self._sharded(TensorMemoryLayout.BLOCK_SHARDED, CoreRangeSet((grid,)), (sh, sw), orientation)

    @staticmethod
    def _one_dim_layout(shard_height: int, height: int) -> TensorMemoryLayout:
        return TensorMemoryLayout.WIDTH_SHARDED if shard_height >= height else TensorMemoryLayout.HEIGHT_SHARDED

    def _aligned(self, extent: int, required: bool, axis: int = 0) -> int:
        if self.layout is Layout.TILE:
            return _round_up(extent, TILE)
        if required or axis == 0:
            return extent
        return _round_up(extent, 64 // ELEMENT_BYTES[self.dtype])

    def _sharded(self, layout, grid, shard, orientation) -> TensorSpec:
        mc = MemoryConfig(layout, self.memory_config.buffer_type, ShardSpec(grid, shard, orientation))
        return TensorSpec(self.shape, self.dtype, mc, self.layout)


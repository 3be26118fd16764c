"""ttnn's core coordinates: CoreCoord, CoreRange, CoreRangeSet, CoreGrid and num_cores_to_corerangeset.

As tt-metal defines them (tt_metal/common/core_coord.cpp, work_split.cpp; ttnn/ttnn/core.py), held to ttnn 0.81.1
itself by the oracle tier (tests/oracle/): ranges are inclusive, (x, y) = (column, row); a set's ranges may not
overlap; merge and subtract produce the same ranges ttnn's do (merge: each row's runs of cores, stacked where
consecutive rows have the same run; subtract: each range cut around the part it shares, left, right, below, above).
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.errors import OpConfigError


@dataclass(frozen=True, order=True)
class CoreCoord:
    x: int
    y: int

    def __str__(self) -> str:
        return f"(x={self.x},y={self.y})"


@dataclass(frozen=True, order=True)
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

    def cores(self) -> list[CoreCoord]:
        """Row by row."""
        return [CoreCoord(x, y) for y in range(self.start.y, self.end.y + 1) for x in range(self.start.x, self.end.x + 1)]

    def intersects(self, other: CoreRange) -> bool:
        return not (self.end.x < other.start.x or self.start.x > other.end.x or self.end.y < other.start.y
                    or self.start.y > other.end.y)

    def intersection(self, other: CoreRange) -> CoreRange | None:
        x0, y0 = max(self.start.x, other.start.x), max(self.start.y, other.start.y)
        x1, y1 = min(self.end.x, other.end.x), min(self.end.y, other.end.y)
        return CoreRange(CoreCoord(x0, y0), CoreCoord(x1, y1)) if x0 <= x1 and y0 <= y1 else None

    def contains(self, other: CoreCoord | CoreRange | CoreRangeSet) -> bool:
        if isinstance(other, CoreCoord):
            return self.start.x <= other.x <= self.end.x and self.start.y <= other.y <= self.end.y
        if isinstance(other, CoreRangeSet):
            return all(self.contains(r) for r in other.ranges)
        return self.contains(other.start) and self.contains(other.end)

    def __str__(self) -> str:
        return f"[{self.start} - {self.end}]"


class CoreRangeSet:
    """Non-overlapping core ranges (possibly none)."""

    def __init__(self, ranges=()):
        if isinstance(ranges, CoreRange):
            ranges = (ranges,)
        self.ranges = tuple(ranges)
        for i, a in enumerate(self.ranges):
            for b in self.ranges[i + 1:]:
                if a.intersects(b):
                    raise OpConfigError(f"Cannot create CoreRangeSet with specified core ranges because core ranges {a} "
                                        f"and {b} overlap!")

    def __eq__(self, other) -> bool:
        return isinstance(other, CoreRangeSet) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"CoreRangeSet({self})"

    def empty(self) -> bool:
        return not self.ranges

    def size(self) -> int:
        return len(self.ranges)

    def num_cores(self) -> int:
        return sum(r.num_cores() for r in self.ranges)

    def bounding_box(self) -> CoreRange:
        if not self.ranges:
            raise OpConfigError("Cannot get bounding_box of an empty CoreRangeSet!")
        return CoreRange(CoreCoord(min(r.start.x for r in self.ranges), min(r.start.y for r in self.ranges)),
                         CoreCoord(max(r.end.x for r in self.ranges), max(r.end.y for r in self.ranges)))

    def cores(self) -> list[CoreCoord]:
        return [c for r in self.ranges for c in r.cores()]

    def intersects(self, other: CoreRange | CoreRangeSet) -> bool:
        others = other.ranges if isinstance(other, CoreRangeSet) else (other,)
        return any(a.intersects(b) for a in self.ranges for b in others)

    def contains(self, other: CoreCoord | CoreRange | CoreRangeSet) -> bool:
        if isinstance(other, CoreCoord):
            return any(r.contains(other) for r in self.ranges)
        others = other.ranges if isinstance(other, CoreRangeSet) else (other,)
        wanted = sum(r.num_cores() for r in others)
        shared = sum(i.num_cores() for a in self.ranges for b in others if (i := a.intersection(b)) is not None)
        return wanted == 0 or shared == wanted

    def merge(self, other: CoreRange | CoreRangeSet) -> CoreRangeSet:
        """The union, as ttnn forms it: each row's runs of cores, a run stacked onto the range above it when that
        range ends on the row before with the same columns."""
        ranges = set(self.ranges) | set(other.ranges if isinstance(other, CoreRangeSet) else (other,))
        cores = {(c.x, c.y) for r in ranges for c in r.cores()}
        if not cores:
            return CoreRangeSet()
        xs, ys = [c[0] for c in cores], [c[1] for c in cores]
        done, open_ = [], {}  # open_: (x0, x1) -> the range that ends on the previous row
        for y in range(min(ys), max(ys) + 1):
            runs, x = [], min(xs)
            while x <= max(xs):
                if (x, y) in cores:
                    x0 = x
                    while (x, y) in cores:
                        x += 1
                    runs.append((x0, x - 1))
                x += 1
            still = {}
            for x0, x1 in runs:
                above = open_.pop((x0, x1), None)
                still[(x0, x1)] = CoreRange(above.start if above else CoreCoord(x0, y), CoreCoord(x1, y))
            done += open_.values()
            open_ = still
        return CoreRangeSet(sorted(done + list(open_.values())))

    def merge_ranges(self) -> CoreRangeSet:
        return self if len(self.ranges) <= 1 else CoreRangeSet().merge(self)

    def subtract(self, other: CoreRangeSet) -> CoreRangeSet:
        """The cores of this set not in other (ttnn: A - (A n B)), each range cut around what it shares."""
        mine, theirs = self.merge_ranges(), other.merge_ranges()
        if mine.empty() or theirs.empty() or not mine.intersects(theirs):
            return mine
        out = []
        for current in mine.ranges:
            remaining = [current]
            for cut in theirs.ranges:
                pieces = []
                for r in remaining:
                    i = r.intersection(cut)
                    if i is None:
                        pieces.append(r)
                        continue
                    x0, x1 = max(r.start.x, i.start.x), min(r.end.x, i.end.x)
                    if r.start.x < i.start.x:
                        pieces.append(CoreRange(r.start, CoreCoord(i.start.x - 1, r.end.y)))
                    if r.end.x > i.end.x:
                        pieces.append(CoreRange(CoreCoord(i.end.x + 1, r.start.y), r.end))
                    if r.start.y < i.start.y:
                        pieces.append(CoreRange(CoreCoord(x0, r.start.y), CoreCoord(x1, i.start.y - 1)))
                    if r.end.y > i.end.y:
                        pieces.append(CoreRange(CoreCoord(x0, i.end.y + 1), CoreCoord(x1, r.end.y)))
                remaining = pieces
            out += remaining
        return CoreRangeSet(out)

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.ranges)) + "}"


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


def num_cores_to_corerangeset(target_num_cores: int, grid_size: CoreCoord, row_wise: bool = False) -> CoreRangeSet:
    """ttnn.num_cores_to_corerangeset: the first cores of grid_size, column by column (row by row with row_wise),
    as whole columns (rows) and the rest of the next one. 0 cores is the empty set."""
    total = grid_size.x * grid_size.y
    if not 0 <= target_num_cores <= total:
        raise OpConfigError(f"Target number of cores {target_num_cores} is greater than total number of available cores "
                            f"{total}" if target_num_cores > 0 else f"Target number of cores {target_num_cores} is negative.")
    across = grid_size.x if row_wise else grid_size.y
    full, rest = divmod(target_num_cores, across)
    at = (lambda i, j: CoreCoord(i, j)) if row_wise else (lambda i, j: CoreCoord(j, i))
    ranges = [CoreRange(at(0, 0), at(across - 1, full - 1))] if full else []
    if rest:
        ranges.append(CoreRange(at(0, full), at(rest - 1, full)))
    return CoreRangeSet(tuple(ranges))

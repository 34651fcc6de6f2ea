"""Where a pyramid's work goes, before any of it runs (pure geometry): the base is cut into
regions, each owned by one task, which reads it once, tile by tile, and writes from that read s0
and every level whose chunks (or shards) the region covers whole ("direct" levels). Deeper
levels' chunks span several regions: each region writes its part of them into a staging array
whose chunks are exactly one region's part, and a second pass copies each staged level into
its own chunks. Tiles hold whole windows of the deepest level, so every level of a tile is exact."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.blockwise import sub_regions
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.geometry import downscale_shape
from bioimage_tasks.grid import BlockGrid

REGION_VOXELS = 2**24  # a region grows to make levels direct up to this size (256**3: regions
MIN_REGION_VOXELS = 2**21  # stay many, for parallel workers), and to at least this (128**3)
TILE_VOXELS = 2**23  # at most this much of the base is computed at once (the budget may say less)


@dataclass(frozen=True)
class PyramidPlan:
    """The geometry of a pyramid over a base of `shape`: `level_factors[k]` takes level k to
    k+1; `region` and `tile` are base shapes; levels in `staged` go through staging arrays."""

    shape: tuple[int, ...]
    level_factors: tuple[tuple[int, ...], ...]
    region: tuple[int, ...]
    tile: tuple[int, ...]
    staged: tuple[int, ...]

    @property
    def cumulative(self) -> list[tuple[int, ...]]:
        """Every level's factor relative to the base, s0 (all ones) first."""
        result = [(1,) * len(self.shape)]
        for factors in self.level_factors:
            result.append(tuple(a * b for a, b in zip(result[-1], factors)))
        return result

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [downscale_shape(self.shape, f) for f in self.cumulative]

    @property
    def grid(self) -> BlockGrid:
        """The regions: one task's block each."""
        return BlockGrid(self.shape, self.region)

    @property
    def direct(self) -> list[int]:
        """Levels >= 1 written straight from the regions."""
        return [k for k in range(1, len(self.cumulative)) if k not in self.staged]

    def staging_chunks(self, level: int) -> tuple[int, ...]:
        """Chunks of level `level`'s staging array: one region's part."""
        return tuple(
            min(r // f, n)
            for r, f, n in zip(self.region, self.cumulative[level], self.shapes[level])
        )

    def tiles(self, region_id: int) -> list[tuple[slice, ...]]:
        """The tiles of region `region_id`, in the order they are computed."""
        return sub_regions(self.grid.block_slices(region_id), self.tile)

    def level_key(self, level: int, base_key: tuple[slice, ...]) -> tuple[slice, ...]:
        """The part of level `level` that the base region `base_key` (window-aligned) determines."""
        return tuple(
            slice(s.start // f, -(-s.stop // f)) for s, f in zip(base_key, self.cumulative[level])
        )


def plan_pyramid(
    shape: Sequence[int],
    level_factors: Sequence[Sequence[int]],
    write_units: Sequence[Sequence[int]],
    bytes_per_voxel: float,
    budget: int,
    write_s0: bool = True,
    read_unit: Sequence[int] | None = None,
) -> PyramidPlan:
    """Regions, tiles and staged levels for a pyramid whose level k is written in `write_units[k]`
    (chunks, or shards) and whose tiles hold `bytes_per_voxel` per base voxel while computed.
    Regions and tiles cover whole `read_unit`s of the input (TIFF strips or tiles), so each is
    decoded once, unless one tile of them would not fit `budget`.
    Raises ValueError when even one window of the deepest level does not fit `budget`.

    >>> plan = plan_pyramid((1024,) * 3, [(2, 2, 2)] * 5, [(64,) * 3] * 6, 16.0, 2**30)
    >>> plan.region, plan.tile, plan.staged
    ((256, 256, 256), (128, 256, 256), (3, 4, 5))
    """
    shape = tuple(int(n) for n in shape)
    factors = tuple(tuple(int(f) for f in level) for level in level_factors)
    deepest = tuple(math.prod(level[a] for level in factors) for a in range(len(shape)))
    units = [tuple(int(u) for u in unit) for unit in write_units]
    reads = tuple(int(r) for r in read_unit) if read_unit is not None else (1,) * len(shape)
    granule = tuple(
        math.lcm(f, u, r) if write_s0 else math.lcm(f, r)
        for f, u, r in zip(deepest, units[0], reads)
    )
    cumulative = PyramidPlan(shape, factors, shape, shape, ()).cumulative
    region = _covering(granule, shape)
    for level in range(
        1, len(cumulative)
    ):  # make levels direct while the region stays small enough
        wanted = _covering(
            tuple(math.lcm(g, f * u) for g, f, u in zip(region, cumulative[level], units[level])),
            shape,
        )
        if math.prod(wanted) > max(REGION_VOXELS, math.prod(region)):
            break
        region = wanted
    region = _grown(region, shape, MIN_REGION_VOXELS)
    staged = tuple(
        k for k in range(1, len(cumulative)) if not _aligned(region, cumulative[k], units[k], shape)
    )
    tile_granule = tuple(
        min(math.lcm(d, u, g) if write_s0 else math.lcm(d, g), r)
        for d, u, g, r in zip(deepest, units[0], reads, region)
    )
    if math.prod(_covering(tile_granule, shape)) * bytes_per_voxel > budget:
        tile_granule = tuple(min(d, n) for d, n in zip(deepest, shape))
    if math.prod(_covering(tile_granule, shape)) * bytes_per_voxel > budget:
        raise ParameterError(
            f"the deepest level's windows of {deepest} voxels need about "
            f"{math.prod(tile_granule) * bytes_per_voxel / 2**30:.1f} GiB each to compute exactly, "
            f"more than the memory budget of {budget / 2**30:.1f} GiB: use fewer levels or raise "
            "job_config.memory_budget"
        )
    tile = _fitted(region, tile_granule, shape, min(budget / bytes_per_voxel, TILE_VOXELS))
    return PyramidPlan(shape, factors, region, tile, staged)


def _covering(block: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """`block` cut to the array: an axis it covers whole becomes the array's extent."""
    return tuple(min(b, n) for b, n in zip(block, shape))


def _grown(region: tuple[int, ...], shape: tuple[int, ...], voxels: int) -> tuple[int, ...]:
    """`region` doubled along its axes in turn (last first) until it holds `voxels` or the array."""
    region = list(region)
    while math.prod(region) < voxels and any(r < n for r, n in zip(region, shape)):
        for axis in reversed(range(len(region))):
            if region[axis] < shape[axis] and math.prod(region) < voxels:
                region[axis] = min(region[axis] * 2, shape[axis])
    return tuple(region)


def _aligned(
    region: tuple[int, ...], factors: tuple[int, ...], unit: tuple[int, ...], shape: tuple[int, ...]
) -> bool:
    """Whether every region's part of a level covers whole write units of it."""
    return all(r >= n or (r // f) % u == 0 for r, f, u, n in zip(region, factors, unit, shape))


def _fitted(
    region: tuple[int, ...], granule: tuple[int, ...], shape: tuple[int, ...], voxels: float
) -> tuple[int, ...]:
    """The largest tile of multiples of `granule` inside `region` (halving its largest axis) that
    holds at most `voxels` voxels of the array."""
    tile = list(_covering(region, shape))
    while math.prod(tile) > voxels:
        axis = max(range(len(tile)), key=lambda a: (tile[a] > granule[a], tile[a]))
        if tile[axis] <= granule[axis]:
            break
        tile[axis] = max(granule[axis], (tile[axis] // granule[axis] // 2) * granule[axis])
    return tuple(tile)


def tile_bytes_per_voxel(method: str, dtype: np.dtype) -> float:
    """What computing a tile holds per base voxel: the tile and the next one being read, the
    write of s0 in flight; where s0 copies the input's files, those of the tile (until written)
    and of the next one (twice while decoded); and the method's temporaries (mean: int64 window
    sums, 4 bytes per voxel at a factor of 2 along one axis; mode and median: window histograms,
    in the worst case one (value, int64 count) pair per voxel, twice while they grow)."""
    itemsize = np.dtype(dtype).itemsize
    extra = {"stride": 0.2, "min": 0.2, "max": 0.2, "mean": 1.0, "mode": 1.0, "median": 1.0}[
        method
    ] * itemsize
    if method == "mean":
        extra += 4
    if method in ("mode", "median"):
        extra += 2 * (itemsize + 8)
    if not np.dtype(dtype).isnative:  # the tile swapped to native byte order for the kernels
        extra += itemsize
    return 6 * itemsize + extra

"""Every level of a pyramid from one tile, exactly: level k of a tile equals
`window_reduce(tile, cumulative_factor_k, method)` (tensorstore's `downsample` of the base by the
cumulative factor), computed level after level from exact intermediate data instead of from the
base again. No I/O, no Prefect, no Dask.

The tile's origin must lie on the window grid of the deepest level; then each of its windows at
every level is a window of the whole array (cut only by the array's edge), so tiles reduced
independently and pasted give the whole array's levels.

How each method stays exact:
- `stride`, `min`, `max`: each level from the level above (the first voxel of first voxels, the
  min of mins).
- integer `mean`: exact window sums carried from level to level (in the narrowest integer type
  that holds them, `sums.py`), each level rounded from its own sums and counts (never from a
  rounded level).
- integer `mode`, `median`: a histogram per window (its distinct values and their counts;
  nothing but the value for a window of one value), merged from the children's histograms
  (`histogram.py`); the first level straight from the voxels (`voxel_histograms.py`), and for
  2x2x2 the first two levels fused: for the mode, 4x4x4 blocks sorted into one, two or more
  values by one scan (`cube_modes.py`), deeper levels merged (`cube_merge.py`); for the median,
  windows of at most two values kept densely (`cube_histograms.py`).
- A Fortran-ordered tile is reduced through its transpose for these (no copy).
- float `mean` (tensorstore sums in the float type, in window order), float `mode`/`median` and
  64-bit integer `mean`: from the tile at every level (exact, and slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioimage_tasks.kernels.cube_histograms import first_two_levels
from bioimage_tasks.kernels.cube_merge import merge_cubes
from bioimage_tasks.kernels.cube_modes import first_two_modes
from bioimage_tasks.kernels.histogram import LevelHistograms
from bioimage_tasks.kernels.sums import chained_means, parent_axis_counts
from bioimage_tasks.kernels.window import window_reduce


def pyramid_levels(
    tile: np.ndarray,
    level_factors: Sequence[Sequence[int]],
    method: str,
    array_shape: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Levels 1..L of `tile`, level k reduced by the product of `level_factors[:k]`, each exactly
    `window_reduce(tile, that product, method, array_shape)` (`array_shape`: of the base the tile
    is part of, by default the tile's), in the tile's dtype and byte order.

    >>> tile = np.array([[1, 1, 2, 5], [1, 3, 4, 4]], dtype=np.uint8)
    >>> [level.tolist() for level in pyramid_levels(tile, [(1, 2), (2, 2)], "mode")]
    [[[1, 2], [1, 4]], [[1]]]
    >>> [level.tolist() for level in pyramid_levels(tile, [(1, 2), (2, 2)], "mean")]
    [[[1, 4], [2, 4]], [[3]]]
    """
    tile = np.asarray(tile)
    if not tile.dtype.isnative:  # the compiled kernels take native byte order; levels as given
        native = tile.astype(tile.dtype.newbyteorder("="))
        levels = pyramid_levels(native, level_factors, method, array_shape)
        return [level.astype(tile.dtype) for level in levels]
    factors = [tuple(int(f) for f in level) for level in level_factors]
    kind = tile.dtype.kind
    if method in ("stride", "min", "max"):
        return _chained(tile, factors, method)
    if method == "mean" and (kind == "b" or (kind in "iu" and tile.dtype.itemsize < 8)):
        return chained_means(tile, factors)
    if method in ("mode", "median") and kind in "biu":
        return _chained_histograms(tile, factors, method)
    return [
        window_reduce(tile, cumulative, method, array_shape)
        for cumulative in cumulative_products(factors)
    ]


def cumulative_products(level_factors: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Factor of each level relative to the base.

    >>> cumulative_products([(1, 2), (2, 2)])
    [(1, 2), (2, 4)]
    """
    result, current = [], None
    for factors in level_factors:
        current = (
            tuple(factors) if current is None else tuple(a * b for a, b in zip(current, factors))
        )
        result.append(current)
    return result


def _chained(tile: np.ndarray, factors: list[tuple[int, ...]], method: str) -> list[np.ndarray]:
    levels, current = [], tile
    for level in factors:
        current = window_reduce(current, level, method)
        levels.append(current)
    return levels


def _chained_histograms(
    tile: np.ndarray, factors: list[tuple[int, ...]], method: str
) -> list[np.ndarray]:
    """mode/median of integers: the first level's window histograms from the voxels, each next
    level's merged from the level above's. A Fortran-ordered tile is reduced through its transpose
    (the values, not their order, decide an integer mode or median)."""
    if not factors:
        return []
    if tile.ndim > 1 and tile.flags.f_contiguous and not tile.flags.c_contiguous:
        levels = _chained_histograms(tile.T, [level[::-1] for level in factors], method)
        return [level.T for level in levels]
    voxels = np.ascontiguousarray(tile.view(np.uint8) if tile.dtype.kind == "b" else tile)
    cubic = _cubic(factors[:2], tile.ndim) and voxels.size > 0
    if cubic:  # the common pyramid: two levels fused
        current, first = _first_two_levels(voxels, factors[:2], method)
        levels = [first.view(tile.dtype), current.values.view(tile.dtype)]
    else:
        current = LevelHistograms.of_windows(voxels, factors[0], method)
        levels = [current.values.view(tile.dtype)]
    for level in factors[len(levels) :]:
        cubic = cubic and _cubic([level, level], tile.ndim)  # every level so far 2x2x2
        if cubic:
            current = merge_cubes(current, method == "median")
        else:
            current = current.merge(level, method)
        levels.append(current.values.view(tile.dtype))
    return levels


def _cubic(factors: list[tuple[int, ...]], ndim: int) -> bool:
    """Whether `factors` are two levels of 2x2x2 over the last three of `ndim` >= 3 axes."""
    return (
        ndim >= 3
        and len(factors) == 2
        and all(level[-3:] == (2, 2, 2) and set(level[:-3]) <= {1} for level in factors)
    )


def _first_two_levels(
    voxels: np.ndarray, factors: list[tuple[int, ...]], method: str
) -> tuple[LevelHistograms, np.ndarray]:
    """Level 2's histograms and level 1's values of a 2x2x2 pyramid (cube_modes.py for the mode,
    cube_histograms.py for the median)."""
    if method == "mode":
        first, second, offsets, pairs, counts = first_two_modes(voxels)
    else:
        first, second, offsets, pairs, counts = first_two_levels(voxels, True)
    axis_counts = np.ones((voxels.ndim, max(voxels.shape)), np.int64)
    shape = np.asarray(voxels.shape, np.int64)
    for level in factors:
        level_factors = np.asarray(level, np.int64)
        axis_counts = parent_axis_counts(axis_counts, shape, level_factors)
        shape = (shape + level_factors - 1) // level_factors
    return LevelHistograms(second, axis_counts, offsets, pairs, counts), first

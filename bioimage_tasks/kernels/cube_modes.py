"""The first two levels of an integer `mode` pyramid of 2x2x2 windows, exactly, fused per 4x4x4
block of voxels (one level 2 window, its eight level 1 windows as children).

Most blocks of a label volume hold one value, most others two. For each row of blocks, one pass
along its 16 input rows (compares, selects, min and max: loops the compiler vectorises) counts,
per column of each level 1 row, the voxels unlike the block's first voxel and keeps the smallest
and largest of those. A block with none is uniform; one whose smallest and largest agree holds
two values, and its level 1 modes, its mode and its histogram follow from those counts alone
(selects over pairs of columns, vectorised; a tie goes to the smaller value). Only the blocks of
three or more values and those cut by the array's edge are counted voxel by voxel: their
distinct values in ascending order, each the smallest voxel above the last.
Level 2 comes out as `histogram.LevelHistograms` holds it (CSR pairs of the mixed windows) for
the deeper levels (`cube_merge.py`). Compiled, the GIL released.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from bioimage_tasks.kernels.voxel_histograms import _grown


def first_two_modes(voxels: np.ndarray):
    """Levels 1 and 2 of the 2x2x2 `mode` of C-ordered integer `voxels` (at least three axes;
    the last three reduced, the leading ones kept): (level 1 values, level 2 values, its CSR
    offsets, pair values, pair counts), as `cube_histograms.first_two_levels` returns them."""
    shape = voxels.shape
    stacked = voxels.reshape(-1, *shape[-3:])
    first_shape = (stacked.shape[0], *(-(-n // 2) for n in shape[-3:]))
    second_shape = (stacked.shape[0], *(-(-n // 2) for n in first_shape[1:]))
    first = np.empty(first_shape, voxels.dtype)
    second = np.empty(second_shape, voxels.dtype)
    n_pairs = np.zeros(second.size + 1, np.int64)
    info = np.iinfo(voxels.dtype)
    bounds = np.array([info.min, info.max], voxels.dtype)
    pair_values, pair_counts = _two_levels(stacked, first, second, n_pairs[1:], bounds)
    return (
        first.reshape(*shape[:-3], *first_shape[1:]),
        second.reshape(*shape[:-3], *second_shape[1:]),
        np.cumsum(n_pairs),
        pair_values,
        pair_counts,
    )


@numba.njit(nogil=True, cache=True)
def _two_levels(voxels, first, second, n_pairs, bounds):
    """Fill `first`, `second` (stack, z, y, x) and `n_pairs` (pairs of each level 2 window, in
    C order) and return the pairs (distinct values ascending, their voxel counts) of the level 2
    windows of more than one value. `bounds`: the dtype's smallest and largest values."""
    depth, height, width = voxels.shape[1:]
    out_width = second.shape[3]
    full = width // 4  # level 2 windows along x whose 64 voxels are all inside
    pair_values = np.empty(max(1024, second.size), voxels.dtype)
    pair_counts = np.empty(pair_values.size, np.int64)
    scan = _scan_buffers(full, voxels.dtype)
    kinds = np.zeros(-(-out_width // 8) * 8, np.uint8)  # whole words: padding "uniform"
    words = kinds.view(np.uint64)
    hard = _Hard(
        np.empty(64, voxels.dtype),
        np.empty(64, np.uint8),
        np.empty(8, np.int64),
        np.empty(8, voxels.dtype),
    )
    used = 0
    parent = 0
    for stack in range(second.shape[0]):
        cube, modes = voxels[stack], first[stack]
        for out_z in range(second.shape[1]):
            for out_y in range(second.shape[2]):
                if used + out_width * 64 > pair_values.size:
                    capacity = 2 * pair_values.size + out_width * 64
                    pair_values = _grown(pair_values, used, capacity)
                    pair_counts = _grown(pair_counts, used, capacity)
                z, y = 4 * out_z, 4 * out_y
                inside = z + 4 <= depth and y + 4 <= height and full > 0
                out_row = second[stack, out_z, out_y]
                if inside:
                    _scan_blocks(cube, z, y, bounds, scan)
                    _block_modes(scan, modes, 2 * out_z, 2 * out_y, out_row, kinds)
                kinds[full if inside else 0 : out_width] = _HARD
                for word in range(words.size):
                    if words[word] == 0:  # eight uniform blocks: no pairs (`n_pairs` is 0)
                        continue
                    for out_x in range(8 * word, min(8 * word + 8, out_width)):
                        start = used
                        if kinds[out_x] == _HARD:  # or cut by the edge: counted voxel by voxel
                            n = _gather_block(cube, z, y, 4 * out_x, hard)
                            at = (2 * out_z, 2 * out_y, 2 * out_x)
                            out_row[out_x], used = _count_block(
                                hard, n, bounds[1], modes, at, pair_values, pair_counts, used
                            )
                        else:  # no branch: a uniform block's pairs are written, not kept
                            used = _two_pairs(
                                scan.low[out_x],
                                scan.other[out_x],
                                scan.n_other[out_x],
                                kinds[out_x],
                                pair_values,
                                pair_counts,
                                used,
                            )
                        n_pairs[parent + out_x] = used - start
                parent += out_width
    return pair_values[:used], pair_counts[:used]


_UNIFORM, _TWO, _HARD = 0, 1, 2  # level 2 windows: one value, two, more (or cut by the edge)

_Hard = namedtuple(
    "_Hard",
    [
        "block",  # a block's voxels, eight per level 1 window (C order of windows and voxels)
        "weights",  # 1 for a voxel inside the array, 0 outside (a copy of the first voxel)
        "child_counts",  # per level 1 window: the count of its mode so far
        "child_modes",  # and that mode
    ],
)

_Scan = namedtuple(
    "_Scan",
    [
        "differ",  # (quadrant, x): voxels of the quadrant's column at x unlike the block's first
        "first_x",  # at each x: its block's first voxel
        "smallest",  # at each x: the smallest and largest voxel of its 16 unlike the first
        "largest",  # (the dtype's largest and smallest if none)
        "low",  # per block: its first voxel,
        "other",  # the smallest voxel unlike it (the other value if the block holds two),
        "n_other",  # and how many voxels are unlike it
        "pair_small",  # per pair of x (level 1 window): `smallest`, `largest` of the two x,
        "pair_large",
        "pair_other",  # and how many of their 32 voxels are unlike the block's first
    ],
)


@numba.njit(nogil=True, cache=True)
def _scan_buffers(full, dtype):
    """`_Scan`'s arrays for rows of `full` whole blocks of `dtype`."""
    return _Scan(
        np.zeros((4, 4 * full), np.uint8),
        np.empty(4 * full, dtype),
        np.empty(4 * full, dtype),
        np.empty(4 * full, dtype),
        np.empty(full, dtype),
        np.empty(full, dtype),
        np.empty(full, np.uint8),
        np.empty(2 * full, dtype),
        np.empty(2 * full, dtype),
        np.empty(2 * full, np.uint8),
    )


@numba.njit(nogil=True, cache=True, inline="always")
def _scan_blocks(cube, z, y, bounds, scan):
    """The columns of the full blocks of input rows z..z+3, y..y+3: for each x and quadrant
    (level 1 row) how many voxels differ from the block's first voxel, and the smallest and
    largest of those. Loops along the rows: the compiler vectorises them."""
    first_x, smallest, largest = scan.first_x, scan.smallest, scan.largest
    corner = cube[z, y]
    for k in range(first_x.size):
        first_x[k] = corner[k & ~3]
        smallest[k], largest[k] = bounds[1], bounds[0]
    for quadrant in range(4):
        dz, dy = 2 * (quadrant // 2), 2 * (quadrant % 2)
        r0, r1 = cube[z + dz, y + dy], cube[z + dz, y + dy + 1]
        r2, r3 = cube[z + dz + 1, y + dy], cube[z + dz + 1, y + dy + 1]
        differ = scan.differ[quadrant]
        for k in range(first_x.size):
            low, v0, v1, v2, v3 = first_x[k], r0[k], r1[k], r2[k], r3[k]
            d0, d1, d2, d3 = v0 != low, v1 != low, v2 != low, v3 != low
            differ[k] = np.uint8(d0) + np.uint8(d1) + np.uint8(d2) + np.uint8(d3)
            high, small = bounds[1], smallest[k]
            small = min(small, v0 if d0 else high)
            small = min(small, v1 if d1 else high)
            small = min(small, v2 if d2 else high)
            smallest[k] = min(small, v3 if d3 else high)
            lowest, large = bounds[0], largest[k]
            large = max(large, v0 if d0 else lowest)
            large = max(large, v1 if d1 else lowest)
            large = max(large, v2 if d2 else lowest)
            largest[k] = max(large, v3 if d3 else lowest)


@numba.njit(nogil=True, cache=True, inline="always")
def _block_modes(scan, modes, z1, y1, out_row, kinds):
    """From `_scan_blocks`: each full block's kind, and for those of at most two values the
    modes of its eight level 1 windows and its own (`out_row`); the others' are wrong here and
    counted later. A two-valued block's other value is the smallest voxel unlike its first in
    any part of it that has one. Selects over pairs of x, then pairs of pairs, few arrays per
    loop (so that the compiler vectorises each)."""
    first_x, pair_small, pair_large, pair_other = (
        scan.first_x,
        scan.pair_small,
        scan.pair_large,
        scan.pair_other,
    )
    smallest, largest = scan.smallest, scan.largest
    for k in range(pair_small.size):
        pair_small[k] = min(smallest[2 * k], smallest[2 * k + 1])
        pair_large[k] = max(largest[2 * k], largest[2 * k + 1])
        pair_other[k] = 0
    for quadrant in range(4):
        differ = scan.differ[quadrant]
        row = modes[z1 + quadrant // 2, y1 + quadrant % 2]
        for k in range(pair_small.size):
            low, small = first_x[2 * k], pair_small[k]
            n = differ[2 * k] + differ[2 * k + 1]
            row[k] = small if (n > 4) | ((n == 4) & (small < low)) else low
            pair_other[k] += n
    for g in range(scan.low.size):
        low = first_x[4 * g]
        small = min(pair_small[2 * g], pair_small[2 * g + 1])
        large = max(pair_large[2 * g], pair_large[2 * g + 1])
        n_other = pair_other[2 * g] + pair_other[2 * g + 1]
        out_row[g] = small if (n_other > 32) | ((n_other == 32) & (small < low)) else low
        kinds[g] = _UNIFORM if n_other == 0 else (_TWO if small == large else _HARD)
        scan.low[g], scan.other[g], scan.n_other[g] = low, small, n_other


@numba.njit(nogil=True, cache=True, inline="always")
def _two_pairs(low, other, n_other, kind, pair_values, pair_counts, used):
    """Write the pairs of a block of two values (`kind` _TWO) at `used`, ascending; returns the
    new `used` (unchanged for a uniform block, whose pairs are written and then overwritten)."""
    n_other = np.int64(n_other)
    swap = other < low
    pair_values[used] = other if swap else low
    pair_counts[used] = n_other if swap else 64 - n_other
    pair_values[used + 1] = low if swap else other
    pair_counts[used + 1] = 64 - n_other if swap else n_other
    return used + 2 * np.int64(kind)


@numba.njit(nogil=True, cache=True, inline="always")
def _gather_block(cube, z, y, x, hard):
    """The voxels of the block at input (z, y, x) into `block`, eight per level 1 window (C
    order of windows and of voxels in each); a position outside the array holds the block's
    first voxel with weight 0. Returns how many voxels are inside."""
    block, weights = hard.block, hard.weights
    depth, height, width = cube.shape
    if z + 4 <= depth and y + 4 <= height and x + 4 <= width:
        for row in range(16):
            dz, dy = row // 4, row % 4
            at = 8 * (4 * (dz // 2) + 2 * (dy // 2)) + 4 * (dz % 2) + 2 * (dy % 2)
            block[at], block[at + 1] = cube[z + dz, y + dy, x], cube[z + dz, y + dy, x + 1]
            block[at + 8] = cube[z + dz, y + dy, x + 2]
            block[at + 9] = cube[z + dz, y + dy, x + 3]
        weights[:] = 1
        return 64
    corner, n = cube[z, y, x], 0
    for at in range(64):
        child, voxel = at // 8, at % 8
        vz = z + 2 * (child // 4) + voxel // 4
        vy = y + 2 * (child // 2 % 2) + voxel // 2 % 2
        vx = x + 2 * (child % 2) + voxel % 2
        inside = vz < depth and vy < height and vx < width
        block[at] = cube[vz, vy, vx] if inside else corner
        weights[at] = inside
        n += inside
    return n


@numba.njit(nogil=True, cache=True, inline="always")
def _count_block(hard, n, high, modes, at, pairs, counts, used):
    """The histogram of a block (`_gather_block`, `n` voxels inside) appended to `pairs`,
    `counts` at `used` (nothing if it holds one value), and the modes of its level 1 windows
    written to `modes` from `at` on. Its distinct values come in ascending order, each found as
    the smallest voxel above the last (a loop over all 64 that the compiler vectorises), so a
    count that beats the best so far wins and a tie keeps the smaller value. `high`: the
    dtype's largest value. Returns (the block's mode, the new `used`)."""
    block, weights = hard.block, hard.weights
    child_counts, child_modes = hard.child_counts, hard.child_modes
    start = used
    current = block[0]
    for i in range(64):
        current = min(current, block[i])
    child_counts[:] = 0
    pick, best, seen = current, 0, 0
    while seen < n:
        total = 0
        for child in range(8):
            count = 0
            for i in range(8 * child, 8 * child + 8):
                count += (block[i] == current) & weights[i]
            better = count > child_counts[child]
            child_counts[child] = count if better else child_counts[child]
            child_modes[child] = current if better else child_modes[child]
            total += count
        pairs[used], counts[used] = current, total
        used += 1
        if total > best:
            pick, best = current, total
        seen += total
        following = high
        for i in range(64):
            value = block[i]
            following = min(following, value if value > current else high)
        current = following
    depth, height, width = modes.shape
    for child in range(8):
        z, y, x = at[0] + child // 4, at[1] + child // 2 % 2, at[2] + child % 2
        if z < depth and y < height and x < width:
            modes[z, y, x] = child_modes[child]
    return pick, (start if used - start == 1 else used)

"""The first two levels of an integer `mode` pyramid of 2x2x2 windows, exactly, fused per 4x4x4
block of voxels (one level 2 window, its eight level 1 windows as children).

Most blocks of a label volume hold one value, most others two. For each row of blocks, one pass
along its 16 input rows at once (compares, selects, bitwise or and and: a loop the compiler
vectorises) counts, per column of each level 1 row, the voxels unlike the block's first voxel
and keeps the bitwise or and the bitwise and of those. A block with none is uniform; one whose or
equals its and holds two values (every voxel unlike the first is that one value; equality only,
no 64-bit min or max), and its level 1 modes, its mode and its histogram follow from those counts
alone (selects over pairs of columns, vectorised; a tie goes to the smaller value). Only the
blocks of three or more values and those cut by the array's edge are counted voxel by voxel:
their distinct values in ascending order, each the smallest voxel above the last (a block inside
the array with its eight level 1 windows side by side, fixed-length loops that vectorise).
Level 2 comes out as `histogram.LevelHistograms` holds it (CSR pairs of the mixed windows) for
the deeper levels (`cube_merge.py`): each window's pair offsets written by the kernel as it goes,
the pairs in room numpy allocates (huge pages). While a row of blocks is counted, the next row's
16 input rows are prefetched (`prefetch.py`): the hardware prefetchers stop at every 4 KB row of
a large volume, and the scan would otherwise wait for memory. Compiled, the GIL released.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from bioimage_tasks.kernels.prefetch import next_row_group, prefetch_rows
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
    offsets = np.empty(second.size + 1, np.int64)  # every entry written by the kernel
    offsets[0] = 0
    info = np.iinfo(voxels.dtype)
    bounds = np.array([info.min, info.max], voxels.dtype)
    room = max(1024, second.size)  # allocated by numpy: huge pages, a third of numba's faults
    pairs = (np.empty(room, voxels.dtype), np.empty(room, np.int64))
    pair_values, pair_counts = _two_levels(stacked, first, second, offsets[1:], bounds, pairs)
    return (
        first.reshape(*shape[:-3], *first_shape[1:]),
        second.reshape(*shape[:-3], *second_shape[1:]),
        offsets,
        pair_values,
        pair_counts,
    )


@numba.njit(nogil=True, cache=True)
def _two_levels(voxels, first, second, ends, bounds, room):
    """Fill `first`, `second` (stack, z, y, x) and `ends` (where the pairs of each level 2
    window end, in C order) and return the pairs (distinct values ascending, their voxel
    counts) of the level 2 windows of more than one value, in `room` (values, counts) or larger
    copies. `bounds`: the dtype's smallest and largest values."""
    out_width = second.shape[3]
    pair_values, pair_counts = room
    scan = _scan_buffers(voxels.shape[3] // 4, voxels.dtype)
    kinds = np.zeros(out_width, np.uint8)
    hard = _Hard(
        np.empty(64, voxels.dtype),
        np.empty(64, np.uint8),
        np.empty(8, np.int64),
        np.empty(8, voxels.dtype),
        np.empty(8, np.int64),
    )
    work = (scan, kinds, hard)
    used = 0
    parent = 0
    for stack in range(second.shape[0]):
        for out_z in range(second.shape[1]):
            for out_y in range(second.shape[2]):
                if used + out_width * 64 > pair_values.size:
                    capacity = 2 * pair_values.size + out_width * 64
                    pair_values = _grown(pair_values, used, capacity)
                    pair_counts = _grown(pair_counts, used, capacity)
                row, row_ends = (stack, out_z, out_y), ends[parent : parent + out_width]
                pairs = (pair_values, pair_counts)
                used = _block_row(voxels, first, second, row, bounds, work, row_ends, pairs, used)
                parent += out_width
    return pair_values[:used], pair_counts[:used]


@numba.njit(nogil=True, cache=True, inline="always")
def _block_row(voxels, first, second, block_row, bounds, work, row_ends, pairs, used):
    """One row of 4x4x4 blocks (`block_row`: stack, z, y of level 2): the full blocks scanned
    together, then each block of more than one value's pairs appended to `pairs` (values,
    counts) at `used`, where they end in `row_ends`. Returns the new `used`."""
    (stack, out_z, out_y), (scan, kinds, hard), (pairs, counts) = block_row, work, pairs
    cube, modes, out_row = voxels[stack], first[stack], second[stack, out_z, out_y]
    depth, height, width = cube.shape
    full = width // 4  # level 2 windows along x whose 64 voxels are all inside
    z, y = 4 * out_z, 4 * out_y
    inside = z + 4 <= depth and y + 4 <= height and full > 0
    if inside:
        _scan_blocks(cube, z, y, bounds, scan)
        _block_modes(scan, modes, 2 * out_z, 2 * out_y, out_row, kinds)
    out_width = out_row.size
    kinds[full if inside else 0 : out_width] = _HARD
    full_hard = full if inside else 0  # hard blocks before it are inside the array
    low, other, n_other = scan.low, scan.other, scan.n_other
    ahead = next_row_group(cube.shape, z, y, 4)
    step = max(1, 16 // cube.itemsize)  # blocks per cache line of a row
    for out_x in range(out_width):
        if ahead >= 0 and out_x % step == 0:  # the next row of blocks, while this one is counted
            prefetch_rows(cube, ahead, 4 * out_x, 4)
        kind = kinds[out_x]
        if kind != _HARD:  # no branch: a uniform block's pairs are written, not kept
            added = _two_pairs(low[out_x], other[out_x], n_other[out_x], kind, pairs, counts, used)
            row_ends[out_x] = used = added
            continue
        at = (2 * out_z, 2 * out_y, 2 * out_x)
        if out_x < full_hard:  # three or more values
            _gather_inside(cube, z, y, 4 * out_x, hard.block)
            out_row[out_x], used = _count_inside(hard, bounds[1], modes, at, pairs, counts, used)
        else:  # cut by the edge: counted voxel by voxel
            n = _gather_block(cube, z, y, 4 * out_x, hard)
            out_row[out_x], used = _count_block(hard, n, bounds[1], modes, at, pairs, counts, used)
        row_ends[out_x] = used
    return used


_UNIFORM, _TWO, _HARD = 0, 1, 2  # level 2 windows: one value, two, more (or cut by the edge)

_Hard = namedtuple(
    "_Hard",
    [
        "block",  # a block's voxels, eight per level 1 window (C order of windows and voxels)
        "weights",  # 1 for a voxel inside the array, 0 outside (a copy of the first voxel)
        "child_counts",  # per level 1 window: the count of its mode so far
        "child_modes",  # and that mode
        "now",  # per level 1 window: the count of the current value (`_count_inside`)
    ],
)

_Scan = namedtuple(
    "_Scan",
    [
        "differ",  # (quadrant, x): voxels of the quadrant's column at x unlike the block's first
        "first_x",  # at each x: its block's first voxel
        "ored",  # at each x: the bitwise or and the bitwise and of its 16 voxels unlike the
        "anded",  # first (0 and all ones if none): equal if those voxels are one value
        "low",  # per block: its first voxel,
        "other",  # the or of the voxels unlike it (the other value if the block holds two),
        "n_other",  # and how many voxels are unlike it
        "pair_ored",  # per pair of x (level 1 window): `ored`, `anded` of the two x,
        "pair_anded",
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
    (level 1 row) how many voxels differ from the block's first voxel, and the bitwise or and
    and of those over all 16 rows. One loop along the rows, reading the 16 at once (each
    result stored once; the compiler vectorises it)."""
    first_x, ored, anded = scan.first_x, scan.ored, scan.anded
    corner = cube[z, y]
    none = bounds[0] ^ bounds[0]
    for k in range(first_x.size):
        first_x[k] = corner[k & ~3]
    a0, a1, a2, a3 = cube[z, y], cube[z, y + 1], cube[z + 1, y], cube[z + 1, y + 1]
    b0, b1, b2, b3 = cube[z, y + 2], cube[z, y + 3], cube[z + 1, y + 2], cube[z + 1, y + 3]
    c0, c1, c2, c3 = cube[z + 2, y], cube[z + 2, y + 1], cube[z + 3, y], cube[z + 3, y + 1]
    e0, e1, e2, e3 = cube[z + 2, y + 2], cube[z + 2, y + 3], cube[z + 3, y + 2], cube[z + 3, y + 3]
    q0, q1, q2, q3 = scan.differ[0], scan.differ[1], scan.differ[2], scan.differ[3]
    for k in range(first_x.size):
        low = first_x[k]
        q0[k], or0, and0 = _unlike(low, a0[k], a1[k], a2[k], a3[k], none)
        q1[k], or1, and1 = _unlike(low, b0[k], b1[k], b2[k], b3[k], none)
        q2[k], or2, and2 = _unlike(low, c0[k], c1[k], c2[k], c3[k], none)
        q3[k], or3, and3 = _unlike(low, e0[k], e1[k], e2[k], e3[k], none)
        ored[k], anded[k] = or0 | or1 | or2 | or3, and0 & and1 & and2 & and3


@numba.njit(nogil=True, cache=True, inline="always")
def _unlike(low, v0, v1, v2, v3, none):
    """Of four voxels, those unlike `low`: how many (uint8), their bitwise or and their bitwise
    and (`none`, 0, and all ones if none)."""
    every = ~none
    d0, d1, d2, d3 = v0 != low, v1 != low, v2 != low, v3 != low
    count = np.uint8(d0) + np.uint8(d1) + np.uint8(d2) + np.uint8(d3)
    ored = (v0 if d0 else none) | (v1 if d1 else none) | (v2 if d2 else none)
    anded = (v0 if d0 else every) & (v1 if d1 else every) & (v2 if d2 else every)
    return count, ored | (v3 if d3 else none), anded & (v3 if d3 else every)


@numba.njit(nogil=True, cache=True, inline="always")
def _block_modes(scan, modes, z1, y1, out_row, kinds):
    """From `_scan_blocks`: each full block's kind, and for those of at most two values the
    modes of its eight level 1 windows and its own (`out_row`); the others' are wrong here and
    counted later. A two-valued block's other value is the or of its voxels unlike its first
    (they are all that value), in any part of it that has one. Selects over pairs of x, then
    pairs of pairs, few arrays per loop (so that the compiler vectorises each)."""
    first_x, pair_ored, pair_anded, pair_other = (
        scan.first_x,
        scan.pair_ored,
        scan.pair_anded,
        scan.pair_other,
    )
    ored, anded = scan.ored, scan.anded
    for k in range(pair_ored.size):
        pair_ored[k] = ored[2 * k] | ored[2 * k + 1]
        pair_anded[k] = anded[2 * k] & anded[2 * k + 1]
        pair_other[k] = 0
    for quadrant in range(4):
        differ = scan.differ[quadrant]
        row = modes[z1 + quadrant // 2, y1 + quadrant % 2]
        for k in range(pair_ored.size):
            low, other = first_x[2 * k], pair_ored[k]
            n = differ[2 * k] + differ[2 * k + 1]
            row[k] = other if (n > 4) | ((n == 4) & (other < low)) else low
            pair_other[k] += n
    for g in range(scan.low.size):
        low = first_x[4 * g]
        other = pair_ored[2 * g] | pair_ored[2 * g + 1]
        all_of = pair_anded[2 * g] & pair_anded[2 * g + 1]
        n_other = pair_other[2 * g] + pair_other[2 * g + 1]
        out_row[g] = other if (n_other > 32) | ((n_other == 32) & (other < low)) else low
        kinds[g] = _UNIFORM if n_other == 0 else (_TWO if other == all_of else _HARD)
        scan.low[g], scan.other[g], scan.n_other[g] = low, other, n_other


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


@numba.njit(nogil=True, cache=True, inline="always")
def _gather_inside(cube, z, y, x, block):
    """The 64 voxels of the block at input (z, y, x), all inside the array, into `block` as
    [voxel * 8 + child] (child, voxel: C order of the level 1 windows and of their voxels)."""
    for row in range(16):
        dz, dy = row // 4, row % 4
        child = 4 * (dz // 2) + 2 * (dy // 2)
        at = 8 * (4 * (dz % 2) + 2 * (dy % 2)) + child
        line = cube[z + dz, y + dy]
        block[at], block[at + 8] = line[x], line[x + 1]
        block[at + 1], block[at + 9] = line[x + 2], line[x + 3]


@numba.njit(nogil=True, cache=True, inline="always")
def _count_inside(hard, high, modes, at, pairs, counts, used):
    """`_count_block` for a block all inside the array, its voxels as `_gather_inside` lays them
    out: the eight level 1 windows counted side by side (fixed-length loops, vectorised)."""
    block, now = hard.block, hard.now
    child_counts, child_modes = hard.child_counts, hard.child_modes
    current = block[0]
    for i in range(64):
        current = min(current, block[i])
    for child in range(8):
        child_counts[child] = 0
    pick, best, seen = current, 0, 0
    while True:
        for child in range(8):
            now[child] = 0
        for voxel in range(8):
            for child in range(8):
                now[child] += block[8 * voxel + child] == current
        total = 0
        for child in range(8):
            count = now[child]
            better = count > child_counts[child]
            child_counts[child] = count if better else child_counts[child]
            child_modes[child] = current if better else child_modes[child]
            total += count
        pairs[used], counts[used] = current, total
        used += 1
        if total > best:
            pick, best = current, total
        seen += total
        if seen == 64:
            break
        following = high
        for i in range(64):
            value = block[i]
            following = min(following, value if value > current else high)
        current = following
    z, y, x = at
    for child in range(8):
        modes[z + child // 4, y + child // 2 % 2, x + child % 2] = child_modes[child]
    return pick, used

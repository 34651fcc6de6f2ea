"""The deeper levels of an integer `mode`/`median` pyramid of 2x2x2 windows: each parent's
histogram merged from its eight children's (`histogram.LevelHistograms`), exactly as
`LevelHistograms.merge` does, with the 2x2x2 layout spelled out.

For each row of parents, one pass along its four rows of children (compares only, vectorised)
finds the parents whose children are all uniform with one value. Every other parent gathers its
children's (value, voxel count) entries and finds its distinct values in ascending order, each
the smallest entry above the last (loops over the entries that the compiler vectorises, no sort,
few branches; the entries padded to whole vectors): the histogram comes out sorted, and the mode
is picked on the way (a count that beats the best so far wins, a tie keeps the smaller value).
The pairs go to room numpy allocates once (a parent has at most as many values as its children
have entries), the offsets are written as the parents are merged. Compiled, the GIL released.
"""

from __future__ import annotations

import numba
import numpy as np

from bioimage_tasks.kernels.histogram import LevelHistograms, _pick
from bioimage_tasks.kernels.sums import parent_axis_counts


def merge_cubes(level: LevelHistograms, median: bool) -> LevelHistograms:
    """`level.merge((1, ..., 1, 2, 2, 2), "median" if median else "mode")` of a level with
    histograms (not the voxels) whose leading axes were never reduced."""
    values = level.values
    shape = values.shape
    stacked = values.reshape(-1, *shape[-3:])
    out_shape = (stacked.shape[0], *(-(-n // 2) for n in shape[-3:]))
    out = np.empty(out_shape, values.dtype)
    offsets = np.empty(out.size + 1, np.int64)  # every entry written by the kernel
    offsets[0] = 0
    bounds = np.array([np.iinfo(values.dtype).max], values.dtype)
    # a parent has at most as many values as its children have entries: room that never grows,
    # allocated by numpy (huge pages, lazily touched)
    room = level.pair_values.size + values.size
    pairs = (np.empty(room, values.dtype), np.empty(room, level.pair_counts.dtype))
    child_pairs = level.pair_values if level.pair_values.size else np.zeros(1, values.dtype)
    child_counts = level.pair_counts if level.pair_counts.size else np.zeros(1, np.int64)
    used = _merge_cubes(
        stacked,
        (level.offsets, child_pairs, child_counts),
        level.axis_counts[-3:],
        median,
        bounds,
        out,
        offsets[1:],
        pairs,
    )
    factors = np.array((1,) * (len(shape) - 3) + (2, 2, 2), np.int64)
    return LevelHistograms(
        out.reshape(*shape[:-3], *out_shape[1:]),
        parent_axis_counts(level.axis_counts, np.asarray(shape, np.int64), factors),
        offsets,
        pairs[0][:used],
        pairs[1][:used],
    )


@numba.njit(nogil=True, cache=True)
def _merge_cubes(values, children, axis_counts, median, bounds, out, ends, pairs):
    """Fill `out` (stack, z, y, x), `ends` (where each parent's pairs end, C order) and
    `pairs` (ascending values, voxel counts of the parents of more than one value) from the
    children's `values` and `children` (offsets, pair values, pair counts; at least one pair).
    Returns how many pairs."""
    offsets = children[0]
    depth, height, width = values.shape[1:]
    full = width // 2  # parents along x with both children inside
    longest = 1
    for child in range(offsets.size - 1):
        longest = max(longest, offsets[child + 1] - offsets[child])
    entries = (np.empty(8 * longest + 16, values.dtype), np.empty(8 * longest + 16, np.int64))
    same = np.zeros(2 * full, np.uint8)
    odd = np.arange(2 * full).astype(np.uint8) & 1
    used = 0
    parent = 0
    for stack in range(out.shape[0]):
        cube = values[stack]
        for out_z in range(out.shape[1]):
            for out_y in range(out.shape[2]):
                z, y = 2 * out_z, 2 * out_y
                inside = z + 2 <= depth and y + 2 <= height and full > 0
                first_child = ((stack * depth + z) * height + y) * width
                if inside:
                    _flag_uniform(cube, offsets, first_child, z, y, same, odd)
                row = (z, y, first_child, full if inside else 0)
                parents = (out[stack, out_z, out_y], ends[parent : parent + out.shape[3]])
                work = (same, entries, median, bounds[0])
                used = _merge_row(cube, children, axis_counts, row, work, parents, pairs, used)
                parent += out.shape[3]
    return used


@numba.njit(nogil=True, cache=True, inline="always")
def _merge_row(cube, children, axis_counts, row, work, parents, pairs, used):
    """One row of parents (`row`: z, y of its first children, the first child's index, how many
    parents of the row have all eight children inside and flags in `same`): their values and
    pair ends into `parents`, their pairs appended to `pairs` at `used`. Returns the new
    `used`."""
    z, y, first_child, full = row
    same, entries, median, high = work
    out_row, row_ends = parents
    both = same.view(np.uint16)
    for out_x in range(out_row.size):
        x = 2 * out_x
        if out_x < full and both[out_x] == 0x0101:  # eight uniform children, one value
            out_row[out_x] = cube[z, y, x]
            row_ends[out_x] = used
            continue
        n = _gather_entries(cube, children, axis_counts, first_child, z, y, x, entries)
        start = used
        used, total, mode = _distinct(entries, n, high, pairs, used)
        if median:
            mode = _pick(pairs[0], pairs[1], start, used, total, True)
        out_row[out_x] = mode
        used = start if used - start == 1 else used  # one value (children cut by the edge)
        row_ends[out_x] = used
    return used


@numba.njit(nogil=True, cache=True, inline="always")
def _flag_uniform(cube, offsets, first_child, z, y, same, odd):
    """`same` as uint16 = 0x0101 for each full parent of a row whose eight children are
    uniform (no pairs) with one value: each child compared with the three below it and its
    right neighbour, in loops along the rows (vectorised)."""
    width = cube.shape[2]
    r0, r1, r2, r3 = cube[z, y], cube[z, y + 1], cube[z + 1, y], cube[z + 1, y + 1]
    n = same.size
    o0 = offsets[first_child : first_child + n + 1]
    o1 = offsets[first_child + width : first_child + width + n + 1]
    plane = first_child + cube.shape[1] * width
    o2 = offsets[plane : plane + n + 1]
    o3 = offsets[plane + width : plane + width + n + 1]
    for x in range(n):
        a = r0[x]
        same[x] = (r1[x] == a) & (r2[x] == a) & (r3[x] == a)
    for x in range(n - 1):
        same[x] &= (r0[x + 1] == r0[x]) | odd[x]
    for x in range(n):
        same[x] &= (o0[x + 1] == o0[x]) & (o1[x + 1] == o1[x])
    for x in range(n):
        same[x] &= (o2[x + 1] == o2[x]) & (o3[x + 1] == o3[x])


@numba.njit(nogil=True, cache=True, inline="always")
def _gather_entries(cube, children, axis_counts, first_child, z, y, x, entries):
    """The (value, voxel count) entries of the parent whose first child is at (z, y, x): a
    uniform child's value and voxel count (written always, kept if it has no pairs), a mixed
    one's pairs (those of two neighbours along x copied in one loop: they are contiguous).
    Returns how many."""
    offsets, child_pairs, child_counts = children
    values, counts = entries
    depth, height, width = cube.shape
    n = 0
    for dz in range(min(2, depth - z)):
        for dy in range(min(2, height - y)):
            row = first_child + (dz * height + dy) * width + x
            rows = axis_counts[0, z + dz] * axis_counts[1, y + dy]
            start = end = offsets[row + 1]
            values[n], counts[n] = cube[z + dz, y + dy, x], rows * axis_counts[2, x]
            n += offsets[row] == start
            if x + 1 < width:
                end = offsets[row + 2]
                values[n], counts[n] = cube[z + dz, y + dy, x + 1], rows * axis_counts[2, x + 1]
                n += start == end
            for pair in range(offsets[row], end):
                values[n], counts[n] = child_pairs[pair], child_counts[pair]
                n += 1
    return n


@numba.njit(nogil=True, cache=True, inline="always")
def _distinct(entries, n, high, pairs, used):
    """Append the distinct values of the `n` entries (values, counts), ascending, with their
    summed counts to `pairs` at `used`: each the smallest entry above the last (`high`: the
    dtype's largest value; the entries padded to a multiple of eight with a count of 0, so that
    the loops run whole vectors). Returns (the new `used`, the total count, the mode: the first
    value of the highest count)."""
    values, counts = entries
    pair_values, pair_counts = pairs
    current = values[0]
    for k in range(8):
        values[n + k], counts[n + k] = current, 0
    padded = (n + 7) // 8 * 8
    total = 0
    for i in range(padded):
        current = min(current, values[i])
        total += counts[i]
    seen, mode, best = 0, current, 0
    while seen < total:
        count = 0
        following = high
        for i in range(padded):
            value = values[i]
            count += counts[i] if value == current else 0
            following = min(following, value if value > current else high)
        pair_values[used], pair_counts[used] = current, count
        used += 1
        seen += count
        mode, best = (current, count) if count > best else (mode, best)
        current = following
    return used, total, mode

"""The deeper levels of an integer `mode`/`median` pyramid of 2x2x2 windows: each parent's
histogram merged from its eight children's (`histogram.LevelHistograms`), exactly as
`LevelHistograms.merge` does, with the 2x2x2 layout spelled out.

For each row of parents, one pass along its four rows of children (compares only, vectorised)
finds the parents whose children are all uniform with one value. Every other parent gathers its
children's (value, voxel count) entries and finds its distinct values in ascending order, each
the smallest entry above the last (loops over the entries that the compiler vectorises, no sort,
few branches): the histogram comes out sorted, a count that beats the best so far wins the mode
and a tie keeps the smaller value. Compiled, the GIL released.
"""

from __future__ import annotations

import numba
import numpy as np

from bioimage_tasks.kernels.histogram import LevelHistograms, _pick
from bioimage_tasks.kernels.sums import parent_axis_counts
from bioimage_tasks.kernels.voxel_histograms import _grown


def merge_cubes(level: LevelHistograms, median: bool) -> LevelHistograms:
    """`level.merge((1, ..., 1, 2, 2, 2), "median" if median else "mode")` of a level with
    histograms (not the voxels) whose leading axes were never reduced."""
    values = level.values
    shape = values.shape
    stacked = values.reshape(-1, *shape[-3:])
    out_shape = (stacked.shape[0], *(-(-n // 2) for n in shape[-3:]))
    out = np.empty(out_shape, values.dtype)
    n_pairs = np.zeros(out.size + 1, np.int64)
    bounds = np.array([np.iinfo(values.dtype).max], values.dtype)
    pairs, counts = _merge_cubes(
        stacked,
        level.offsets,
        level.pair_values,
        level.pair_counts,
        level.axis_counts[-3:],
        median,
        bounds,
        out,
        n_pairs[1:],
    )
    factors = np.array((1,) * (len(shape) - 3) + (2, 2, 2), np.int64)
    return LevelHistograms(
        out.reshape(*shape[:-3], *out_shape[1:]),
        parent_axis_counts(level.axis_counts, np.asarray(shape, np.int64), factors),
        np.cumsum(n_pairs),
        pairs,
        counts,
    )


@numba.njit(nogil=True, cache=True)
def _merge_cubes(
    values, offsets, child_pairs, child_counts, axis_counts, median, bounds, out, n_pairs
):
    """Fill `out` (stack, z, y, x) and `n_pairs` (of each parent, C order) and return the pairs
    (ascending values, voxel counts) of the parents of more than one value."""
    depth, height, width = values.shape[1:]
    out_width = out.shape[3]
    full = width // 2  # parents along x with both children inside
    longest = 1
    for child in range(offsets.size - 1):
        longest = max(longest, offsets[child + 1] - offsets[child])
    per_parent = 8 * longest
    pair_values = np.empty(max(1024, out.size + per_parent), values.dtype)
    pair_counts = np.empty(pair_values.size, np.int64)
    entry_values = np.empty(per_parent, values.dtype)
    entry_counts = np.empty(per_parent, np.int64)
    same = np.zeros(2 * full, np.uint8)
    odd = np.arange(2 * full).astype(np.uint8) & 1
    used = 0
    parent = 0
    for stack in range(out.shape[0]):
        cube = values[stack]
        for out_z in range(out.shape[1]):
            for out_y in range(out.shape[2]):
                if used + out_width * per_parent > pair_values.size:
                    capacity = 2 * pair_values.size + out_width * per_parent
                    pair_values = _grown(pair_values, used, capacity)
                    pair_counts = _grown(pair_counts, used, capacity)
                z, y = 2 * out_z, 2 * out_y
                inside = z + 2 <= depth and y + 2 <= height and full > 0
                first_child = ((stack * depth + z) * height + y) * width
                if inside:
                    _flag_uniform(cube, offsets, first_child, z, y, same, odd)
                out_row = out[stack, out_z, out_y]
                both = same.view(np.uint16)
                for out_x in range(out_width):
                    if inside and out_x < full and both[out_x] == 0x0101:
                        out_row[out_x] = cube[z, y, 2 * out_x]
                        continue
                    n = _gather_entries(
                        cube,
                        offsets,
                        child_pairs,
                        child_counts,
                        axis_counts,
                        first_child,
                        z,
                        y,
                        2 * out_x,
                        entry_values,
                        entry_counts,
                    )
                    start = used
                    used, total = _distinct(
                        entry_values, entry_counts, n, bounds[0], pair_values, pair_counts, used
                    )
                    out_row[out_x] = _pick(pair_values, pair_counts, start, used, total, median)
                    if used - start == 1:  # one value (children cut by the edge)
                        used = start
                    n_pairs[parent + out_x] = used - start
                parent += out_width
    return pair_values[:used], pair_counts[:used]


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
def _gather_entries(
    cube, offsets, child_pairs, child_counts, axis_counts, first_child, z, y, x, values, counts
):
    """The (value, voxel count) entries of the parent whose first child is at (z, y, x) (cut by
    the edge): a uniform child's value and voxel count, a mixed one's pairs. Returns how many."""
    depth, height, width = cube.shape
    n = 0
    for dz in range(min(2, depth - z)):
        for dy in range(min(2, height - y)):
            row = first_child + (dz * height + dy) * width
            for dx in range(min(2, width - x)):
                child = row + x + dx
                start, end = offsets[child], offsets[child + 1]
                if start == end:
                    values[n] = cube[z + dz, y + dy, x + dx]
                    counts[n] = axis_counts[0, z + dz] * axis_counts[1, y + dy]
                    counts[n] *= axis_counts[2, x + dx]
                    n += 1
                for pair in range(start, end):
                    values[n], counts[n] = child_pairs[pair], child_counts[pair]
                    n += 1
    return n


@numba.njit(nogil=True, cache=True, inline="always")
def _distinct(values, counts, n, high, pair_values, pair_counts, used):
    """Append the distinct values of the `n` entries, ascending, with their summed counts at
    `used`: each the smallest entry above the last (`high`: the dtype's largest value). Returns
    (the new `used`, the total count)."""
    current = values[0]
    total = 0
    for i in range(n):
        current = min(current, values[i])
        total += counts[i]
    seen = 0
    while seen < total:
        count = 0
        following = high
        for i in range(n):
            value = values[i]
            count += counts[i] if value == current else 0
            following = min(following, value if value > current else high)
        pair_values[used], pair_counts[used] = current, count
        used += 1
        seen += count
        current = following
    return used, total

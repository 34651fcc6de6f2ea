"""The first level of integer `mode`/`median` pyramids, straight from the voxels: each window's
value and, for a mixed window (more than one distinct value), its histogram in the CSR form of
`histogram.LevelHistograms`. Most windows of a label volume hold one value: for each output row
every window is first tested for that in a loop over its input rows that the compiler vectorises
(no gather, no sort); only the mixed windows are gathered, sorted (at most a few voxels) and
counted. Three axes, or more when the leading factors are 1 (stacked); compiled, the GIL released.
"""

from __future__ import annotations

import numba
import numpy as np

_SORT_BY_INSERTION = 24  # longer windows are sorted with numpy's sort
_ALL_UNIFORM = np.uint64(0x0101010101010101)  # eight flags of `same`, all set


def first_level_histograms(voxels: np.ndarray, factors: tuple[int, ...], median: bool):
    """(values, offsets, pair_values, pair_counts) of the `factors` windows of C-ordered integer
    `voxels` (at most three axes with factors above 1, the leading ones first): values in the
    output's shape, the histograms of the mixed windows as `LevelHistograms` keeps them."""
    shape, ndim = voxels.shape, voxels.ndim
    out_shape = tuple(-(-n // f) for n, f in zip(shape, factors))
    stacked = voxels.reshape((-1, *shape[-3:]) if ndim >= 3 else (1,) * (4 - ndim) + shape)
    cube_factors = ((1,) * (3 - ndim) + tuple(factors))[-3:]
    values = np.empty(out_shape, voxels.dtype)
    offsets = np.empty(values.size + 1, np.int64)
    stacked_values = values.reshape(
        (-1, *out_shape[-3:]) if ndim >= 3 else (1,) * (4 - ndim) + out_shape
    )
    pair_values, pair_counts = _first_level(stacked, *cube_factors, median, stacked_values, offsets)
    return values, offsets, pair_values, pair_counts


@numba.njit(nogil=True, cache=True)
def _first_level(voxels, factor_z, factor_y, factor_x, median, values, offsets):
    """Fill `values` (stack, out z, out y, out x) and `offsets` (one per window, then the end) and
    return the pairs (distinct values ascending, their voxel counts) of the mixed windows."""
    depth, height, width = voxels.shape[1:]
    out_width = values.shape[3]
    most = factor_z * factor_y * factor_x
    pair_values = np.empty(max(1024, values.size // 4), voxels.dtype)
    pair_counts = np.empty(pair_values.size, np.int64)
    same = np.ones(-(-out_width // 8) * 8, np.uint8)  # whole words: padding "uniform"
    words = same.view(np.uint64)
    full = width // factor_x
    rows = np.empty((8, full), voxels.dtype)  # 2x2x2: the four rows' even and odd voxels
    lows, others = np.empty(full, voxels.dtype), np.empty(full, voxels.dtype)
    n_lows, n_others = np.zeros(full, np.uint8), np.zeros(full, np.uint8)
    window = np.empty(most, voxels.dtype)
    used = 0
    parent = 0
    for stack in range(values.shape[0]):
        cube = voxels[stack]
        for out_z in range(values.shape[1]):
            z, n_z = out_z * factor_z, min(factor_z, depth - out_z * factor_z)
            for out_y in range(values.shape[2]):
                y, n_y = out_y * factor_y, min(factor_y, height - out_y * factor_y)
                if used + out_width * most > pair_values.size:  # room for this row's pairs
                    capacity = 2 * pair_values.size + out_width * most
                    pair_values = _grown(pair_values, used, capacity)
                    pair_counts = _grown(pair_counts, used, capacity)
                cubic = n_z == 2 and n_y == 2 and factor_x == 2
                if cubic:
                    _two_values(cube, z, y, full, rows, lows, others, n_lows, n_others, same)
                else:
                    _flag_uniform(cube, z, n_z, y, n_y, factor_x, full, lows, same)
                out_row = values[stack, out_z, out_y]
                out_row[:full] = lows  # every full window its first voxel; mixed ones fixed below
                same[full:out_width] = 0  # the partial window at the row's end, if any
                last = 0  # windows before `last` have their offsets
                for word in range(words.size):
                    if words[word] == _ALL_UNIFORM:  # eight uniform windows skipped at once
                        continue
                    for out_x in range(8 * word, min(8 * word + 8, out_width)):
                        if same[out_x]:
                            continue
                        for index in range(parent + last, parent + out_x + 1):
                            offsets[index] = used
                        last = out_x + 1
                        if cubic and out_x < full and n_lows[out_x] + n_others[out_x] == 8:
                            out_row[out_x], used = _two_pairs(
                                lows[out_x],
                                n_lows[out_x],
                                others[out_x],
                                n_others[out_x],
                                median,
                                pair_values,
                                pair_counts,
                                used,
                            )
                            continue
                        x = out_x * factor_x
                        n = _gather(cube, z, n_z, y, n_y, x, min(factor_x, width - x), window)
                        out_row[out_x], used = _count_pairs(
                            window, n, median, pair_values, pair_counts, used
                        )
                for index in range(parent + last, parent + out_width):
                    offsets[index] = used
                parent += out_width
    offsets[parent] = used
    return pair_values[:used], pair_counts[:used]


@numba.njit(nogil=True, cache=True, inline="always")
def _two_values(cube, z, y, full, rows, lows, others, n_lows, n_others, same):
    """For the full 2x2x2 windows of a row: the first voxel (`lows`), another value if any
    (`others`), how many voxels hold each and whether the window is uniform (`same`). The four
    input rows are split into even and odd voxels first, so the main loop reads eight contiguous
    rows and compiles to selects and compares over vectors."""
    for source in range(4):
        row = cube[z + source // 2, y + source % 2]
        even, odd = rows[2 * source], rows[2 * source + 1]
        for k in range(full):
            even[k] = row[2 * k]
            odd[k] = row[2 * k + 1]
    r0, r1, r2, r3, r4, r5, r6, r7 = (
        rows[0],
        rows[1],
        rows[2],
        rows[3],
        rows[4],
        rows[5],
        rows[6],
        rows[7],
    )
    for k in range(full):  # written out: a loop over a tuple would not vectorise
        low, v1, v2, v3, v4, v5, v6, v7 = r0[k], r1[k], r2[k], r3[k], r4[k], r5[k], r6[k], r7[k]
        other = v1 if v1 != low else low
        other = v2 if v2 != low else other
        other = v3 if v3 != low else other
        other = v4 if v4 != low else other
        other = v5 if v5 != low else other
        other = v6 if v6 != low else other
        other = v7 if v7 != low else other
        n_low = (
            np.uint8(1)
            + np.uint8(v1 == low)
            + np.uint8(v2 == low)
            + np.uint8(v3 == low)
            + np.uint8(v4 == low)
            + np.uint8(v5 == low)
            + np.uint8(v6 == low)
            + np.uint8(v7 == low)
        )
        n_other = (
            np.uint8(low == other)
            + np.uint8(v1 == other)
            + np.uint8(v2 == other)
            + np.uint8(v3 == other)
            + np.uint8(v4 == other)
            + np.uint8(v5 == other)
            + np.uint8(v6 == other)
            + np.uint8(v7 == other)
        )
        lows[k], others[k], n_lows[k], n_others[k] = low, other, n_low, n_other
        same[k] = n_low == 8


@numba.njit(nogil=True, cache=True, inline="always")
def _two_pairs(first, n_first, second, n_second, median, pair_values, pair_counts, used):
    """Append the two distinct values of a window (ascending) with their counts at `used`;
    returns (the mode or median, the new `used`)."""
    swap = second < first
    low, n_low = (second, n_second) if swap else (first, n_first)
    high, n_high = (first, n_first) if swap else (second, n_second)
    pair_values[used], pair_counts[used] = low, n_low
    pair_values[used + 1], pair_counts[used + 1] = high, n_high
    take_high = (2 * n_low <= n_low + n_high - 1) if median else (n_high > n_low)
    return (high if take_high else low), used + 2


@numba.njit(nogil=True, cache=True, inline="always")
def _flag_uniform(cube, z, n_z, y, n_y, factor_x, full, firsts, same):
    """`same[k]` = 1 iff every voxel of the full window k along the row equals its first voxel,
    which goes to `firsts[k]`. Branch-free loops over whole rows."""
    first = cube[z, y]
    for k in range(full):
        firsts[k] = first[k * factor_x]
        same[k] = 1
    for dz in range(n_z):
        for dy in range(n_y):
            row = cube[z + dz, y + dy]
            for k in range(full):
                value = firsts[k]
                for offset in range(factor_x):
                    same[k] &= row[k * factor_x + offset] == value


@numba.njit(nogil=True, cache=True, inline="always")
def _gather(cube, z, n_z, y, n_y, x, n_x, window):
    """Copy the window's voxels into `window`; returns how many (fewer at the edge)."""
    n = 0
    for dz in range(n_z):
        for dy in range(n_y):
            row = cube[z + dz, y + dy]
            for dx in range(n_x):
                window[n] = row[x + dx]
                n += 1
    return n


@numba.njit(nogil=True, cache=True, inline="always")
def _count_pairs(window, n, median, pair_values, pair_counts, used):
    """Sort `window[:n]`; a window of one value is uniform (no pairs), any other appends its
    distinct values with their counts at `used`. Returns (its mode or median, the new `used`):
    the mode is the highest count, the lowest value on a tie; the median the value at position
    (n - 1) // 2. Two distinct values (most mixed windows of labels) are counted without a sort."""
    low, other = window[0], window[0]
    n_low = 0
    for i in range(n):  # branch-free (selects): mixed windows come in no predictable order
        value = window[i]
        n_low += value == low
        other = value if value != low else other
    n_other = 0
    for i in range(n):
        n_other += window[i] == other
    if n_low == n:
        return low, used
    if n_low + n_other == n:  # selects, not branches
        swap = other < low
        high, n_high = (low, n_low) if swap else (other, n_other)
        low, n_low = (other, n_other) if swap else (low, n_low)
        pair_values[used], pair_counts[used] = low, n_low
        pair_values[used + 1], pair_counts[used + 1] = high, n_high
        take_high = (2 * n_low <= n - 1) if median else (n_high > n_low)
        return (high if take_high else low), used + 2
    return _sorted_pairs(window, n, median, pair_values, pair_counts, used)


@numba.njit(nogil=True, cache=True)
def _sorted_pairs(window, n, median, pair_values, pair_counts, used):
    """`_count_pairs` of a window of three or more distinct values: sorted, then counted. Not
    inlined: kept out of the hot loop, it leaves that loop's registers alone."""
    if n <= _SORT_BY_INSERTION:
        for i in range(1, n):
            value = window[i]
            j = i - 1
            while j >= 0 and window[j] > value:
                window[j + 1] = window[j]
                j -= 1
            window[j + 1] = value
    else:
        window[:n] = np.sort(window[:n])
    if window[0] == window[n - 1]:
        return window[0], used
    pick = window[(n - 1) // 2]
    best = 0
    start = 0
    for i in range(1, n + 1):
        if i == n or window[i] != window[start]:
            pair_values[used] = window[start]
            pair_counts[used] = i - start
            used += 1
            if not median and i - start > best:
                best = i - start
                pick = window[start]
            start = i
    return pick, used


@numba.njit(nogil=True, cache=True)
def _grown(array, used, capacity):
    """`array` with room for `capacity` elements, its first `used` kept."""
    grown = np.empty(capacity, array.dtype)
    grown[:used] = array[:used]
    return grown


@numba.njit(nogil=True, cache=True, inline="always")
def _dense_entries(lows, n_lows, others, n_others, median, modes, n_a, b, n_b, kind, simple):
    """A row of full 2x2x2 windows from `_two_values`: dense entries, mode or median of the
    windows of at most two values (selects: vectorised); `simple[k]` 0 for three or more."""
    for k in range(lows.size):
        low, other = lows[k], others[k]
        n_low = n_lows[k]
        n_other = n_others[k] if other != low else np.uint8(0)
        few = n_low + n_other == 8
        kind[k] = -1  # three or more values: set when counted
        simple[k] = few
        smaller, n_smaller = (other, n_other) if other < low else (low, n_low)
        larger, n_larger = (low, n_low) if other < low else (other, n_other)
        take_larger = (2 * n_smaller <= 7) if median else (n_larger > n_smaller)
        modes[k] = larger if take_larger else smaller
        n_a[k] = n_larger if take_larger else n_smaller
        b[k] = smaller if take_larger else larger
        n_b[k] = n_smaller if take_larger else n_larger


@numba.njit(nogil=True, cache=True, inline="always")
def _entries_of_window(
    window, n, n_pairs, pair_values, pair_counts, start, k, modes, n_a, b, n_b, kind
):
    """Dense entries of a gathered window whose mode or median is in `modes[k]` (`window[:n]`
    sorted; `n_pairs` pairs at `start`, none when uniform)."""
    kind[k] = -1  # three or more values: set by the caller
    if n_pairs == 0:
        n_a[k], b[k], n_b[k] = n, window[0], 0
    elif n_pairs == 2:
        picked = 0 if pair_values[start] == modes[k] else 1
        n_a[k] = pair_counts[start + picked]
        b[k], n_b[k] = pair_values[start + 1 - picked], pair_counts[start + 1 - picked]

"""Float `median` and `mode` of windows that hold NaN or zeros of both signs, exactly as
tensorstore's `downsample` driver computes them.

tensorstore copies a window's voxels into a buffer and runs libstdc++'s `std::nth_element`
(median) or `std::sort` (mode) on it with `operator<`. NaN compares false both ways, so where a
NaN lands, and so the value picked, depends on that algorithm and on the buffer's order; of
+0.0 and -0.0 (equal under `<` and `==`), which one is picked depends on them too. Elsewhere the
values alone fix the answer and the vectorised kernels of window.py apply; here both are replayed:
the buffer order (`window_axis_order`) and libstdc++'s introselect / introsort, heap fallbacks
and insertion sorts included (GCC's headers, which tensorstore's wheels are built with).

The loops are compiled by numba, release the GIL and cache their machine code on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

_THRESHOLD = 16  # libstdc++'s _S_threshold: introsort leaves runs this short to insertion sort
_POSITIVE_ZERO, _NEGATIVE_ZERO, _NAN = 1, 2, 4  # what a window holds, flags of `_flag_windows`


def window_axis_order(array_shape: Sequence[int], factors: Sequence[int]) -> np.ndarray:
    """The axes in the order tensorstore's buffer holds a window's voxels, slowest first:
    tensorstore iterates the array's axes longer than 1 in C order, and when the innermost of them
    is downsampled, its window offset varies slowest (`DownsampledNDIterator`); otherwise the
    window is in C order. Axes of extent 1 in a window do not change the order."""
    ndim = len(array_shape)
    longer = [axis for axis in range(ndim) if array_shape[axis] > 1]
    if longer and factors[longer[-1]] > 1:
        inner = longer[-1]
        return np.array([inner, *(axis for axis in range(ndim) if axis != inner)], np.int64)
    return np.arange(ndim, dtype=np.int64)


def special_windows(columns: np.ndarray) -> np.ndarray:
    """Indices of the columns (windows, see window.py's `_window_columns`) of float `columns`
    that hold a NaN or both +0.0 and -0.0: those whose median or mode depends on more than the
    values. One compiled pass over the bits."""
    bits = np.ascontiguousarray(columns).view(f"u{columns.dtype.itemsize}")
    finfo = np.finfo(columns.dtype)
    magnitude = bits.dtype.type((1 << (finfo.bits - 1)) - 1)  # all bits but the sign
    infinity = np.array(np.inf, columns.dtype).view(bits.dtype)[()]
    flags = np.zeros(bits.shape[1], np.uint8)
    _flag_windows(bits, magnitude, infinity, flags)
    return np.flatnonzero((flags >= _NAN) | (flags == _POSITIVE_ZERO + _NEGATIVE_ZERO))


@numba.njit(nogil=True, cache=True)
def _flag_windows(bits, magnitude, infinity, flags):
    """flags[w] |= what window (column) w holds: NaN, +0.0, -0.0. Branch-free, so it vectorises."""
    sign = ~magnitude
    for row in range(bits.shape[0]):
        values = bits[row]
        for window in range(bits.shape[1]):
            value = values[window]
            flags[window] |= (
                (np.uint8((value & magnitude) > infinity) << np.uint8(2))
                | np.uint8(value == 0)
                | (np.uint8(value == sign) << np.uint8(1))
            )


def replay_windows(
    block: np.ndarray,
    factors: Sequence[int],
    axis_order: np.ndarray,
    windows: np.ndarray,
    method: str,
) -> np.ndarray:
    """tensorstore's `method` ("median" or "mode") of the windows of `block` at flat output
    indices `windows`, the voxels of each taken in `axis_order` (`window_axis_order`)."""
    block = np.ascontiguousarray(block)
    out = np.empty(windows.size, block.dtype)
    _replay(
        block.reshape(-1),
        np.asarray(block.shape, np.int64),
        np.asarray(factors, np.int64),
        axis_order,
        windows.astype(np.int64),
        method == "median",
        out,
    )
    return out


@numba.njit(nogil=True, cache=True)
def _replay(values, shape, factors, axis_order, windows, median, out):
    """out[i]: median or mode of window windows[i] of `values` (C order, `shape`), its voxels
    gathered in tensorstore's order (whole windows through offsets computed once)."""
    ndim = shape.size
    out_shape = (shape + factors - 1) // factors
    strides = np.ones(ndim, np.int64)
    for axis in range(ndim - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    size = max(1, factors.prod())
    buffer = np.empty(size, values.dtype)
    whole, cut = np.empty(size, np.int64), np.empty(size, np.int64)
    _offsets(factors, strides, axis_order, whole)
    extent = np.empty(ndim, np.int64)
    for i in range(windows.size):
        rest, corner, partial = windows[i], 0, False
        for axis in range(ndim - 1, -1, -1):
            start = rest % out_shape[axis] * factors[axis]
            rest //= out_shape[axis]
            extent[axis] = min(factors[axis], shape[axis] - start)
            partial |= extent[axis] < factors[axis]
            corner += start * strides[axis]
        offsets = whole
        n = size
        if partial:
            n = _offsets(extent, strides, axis_order, cut)
            offsets = cut
        for k in range(n):
            buffer[k] = values[corner + offsets[k]]
        out[i] = _median(buffer, n) if median else _mode(buffer, n)


@numba.njit(nogil=True, cache=True)
def _offsets(extent, strides, axis_order, out):
    """The flat offsets (from its corner) of a window of `extent` in tensorstore's order: an
    odometer over `axis_order`, its last axis fastest. Returns their number."""
    ndim = extent.size
    offset = np.zeros(ndim, np.int64)
    n, position = 0, 0
    while True:
        out[n] = position
        n += 1
        level = ndim - 1
        while level >= 0:
            axis = axis_order[level]
            offset[axis] += 1
            position += strides[axis]
            if offset[axis] < extent[axis]:
                break
            position -= offset[axis] * strides[axis]
            offset[axis] = 0
            level -= 1
        if level < 0:
            return n


@numba.njit(nogil=True, cache=True)
def _median(a, n):
    """`std::nth_element(a, a + (n - 1) / 2, a + n)`, then that element."""
    nth = (n - 1) // 2
    first, last = 0, n
    depth = 2 * _lg(n)
    while last - first > 3:
        if depth == 0:
            _heap_select(a, first, nth + 1, last)
            a[first], a[nth] = a[nth], a[first]
            return a[nth]
        depth -= 1
        cut = _partition_pivot(a, first, last)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(a, first, last)
    return a[nth]


@numba.njit(nogil=True, cache=True)
def _mode(a, n):
    """`std::sort(a, a + n)`, then the last element of the first longest run of `==` values."""
    _sort(a, n)
    best, best_length, length = 0, 1, 1
    for i in range(1, n):
        if a[i] == a[i - 1]:
            length += 1
        else:
            if length > best_length:
                best_length, best = length, i - 1
            length = 1
    if length > best_length:
        best = n - 1
    return a[best]


@numba.njit(nogil=True, cache=True)
def _sort(a, n):
    """libstdc++'s `std::sort`: introsort down to runs of `_THRESHOLD`, then insertion sort.
    Its recursion on the right part is a stack here (the parts are disjoint, so the order in
    which they are sorted changes nothing)."""
    stack = np.empty((2 * _lg(n) + 2, 3), np.int64)
    top = 0
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, 2 * _lg(n)
    while top >= 0:
        first, last, depth = stack[top, 0], stack[top, 1], stack[top, 2]
        top -= 1
        while last - first > _THRESHOLD:
            if depth == 0:
                _heap_select(a, first, last, last)
                _sort_heap(a, first, last)
                break
            depth -= 1
            cut = _partition_pivot(a, first, last)
            top += 1
            stack[top, 0], stack[top, 1], stack[top, 2] = cut, last, depth
            last = cut
    if n > _THRESHOLD:
        _insertion_sort(a, 0, _THRESHOLD)
        for i in range(_THRESHOLD, n):
            _linear_insert(a, i)
    else:
        _insertion_sort(a, 0, n)


@numba.njit(nogil=True, cache=True, inline="always")
def _lg(n):
    """floor(log2(n)) for n >= 1 (`std::__lg`)."""
    k = 0
    while n > 1:
        n >>= 1
        k += 1
    return k


@numba.njit(nogil=True, cache=True)
def _partition_pivot(a, first, last):
    """`__unguarded_partition_pivot`: median of three to `first`, then Hoare's partition."""
    middle = first + (last - first) // 2
    x, y, z = first + 1, middle, last - 1
    if a[x] < a[y]:
        pick = y if a[y] < a[z] else (z if a[x] < a[z] else x)
    elif a[x] < a[z]:
        pick = x
    else:
        pick = z if a[y] < a[z] else y
    a[first], a[pick] = a[pick], a[first]
    pivot, low, high = a[first], first + 1, last
    while True:
        while a[low] < pivot:
            low += 1
        high -= 1
        while pivot < a[high]:
            high -= 1
        if not low < high:
            return low
        a[low], a[high] = a[high], a[low]
        low += 1


@numba.njit(nogil=True, cache=True)
def _insertion_sort(a, first, last):
    for i in range(first + 1, last):
        if a[i] < a[first]:
            value = a[i]
            for j in range(i, first, -1):
                a[j] = a[j - 1]
            a[first] = value
        else:
            _linear_insert(a, i)


@numba.njit(nogil=True, cache=True, inline="always")
def _linear_insert(a, last):
    """`__unguarded_linear_insert`: move a[last] left past the elements it is `<`."""
    value = a[last]
    while value < a[last - 1]:
        a[last] = a[last - 1]
        last -= 1
    a[last] = value


@numba.njit(nogil=True, cache=True)
def _adjust_heap(a, first, hole, length, value):
    top, child = hole, hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if a[first + child] < a[first + child - 1]:
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2  # __push_heap
    while hole > top and a[first + parent] < value:
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value


@numba.njit(nogil=True, cache=True)
def _heap_select(a, first, middle, last):
    """`__heap_select`: a max-heap of [first, middle) holding the smallest elements seen."""
    length = middle - first
    if length >= 2:
        for parent in range((length - 2) // 2, -1, -1):
            _adjust_heap(a, first, parent, length, a[first + parent])
    for i in range(middle, last):
        if a[i] < a[first]:
            value = a[i]
            a[i] = a[first]
            _adjust_heap(a, first, 0, length, value)


@numba.njit(nogil=True, cache=True)
def _sort_heap(a, first, last):
    while last - first > 1:
        last -= 1
        value = a[last]
        a[last] = a[first]
        _adjust_heap(a, first, 0, last - first, value)

"""Pure per-block resize: scikit-image's `resize(..., mode="reflect", preserve_range=True)`
evaluated for one output block from a halo'd input region. No I/O, no Prefect, no Dask.

`skimage.transform.resize` is a Gaussian pre-filter (`anti_aliasing`) followed by
`scipy.ndimage.zoom(..., grid_mode=True, mode="mirror")`, which samples output index `i` at input
coordinate `(i + 0.5) * in / out - 0.5` (centre-aligned). We reproduce that coordinate bit for bit,
read every input voxel the Gaussian and the spline taps can reach (mirrored at the array edges,
which is what mode "mirror" means), and evaluate the same filters on that region:
- the Gaussian is scipy's own, one axis after the other as gaussian_filter runs it;
- order 0 is a pure gather, so every dtype (uint64 ids above 2**53, bool) comes back unchanged;
- orders 1-5 interpolate separably with scipy's own B-spline weights, summed in zoom's order; the
  spline pre-filter of orders >= 2 is recursive (infinite support), so its halo is sized until the
  boundary error has decayed below 1e-13 of the data range;
- order 1 with anti-aliasing on integer data (image pyramids) is ~6x faster another way: Gaussian
  and interpolation fused into one banded matrix per axis (BLAS) give every voxel to within a
  proven rounding bound of scikit-image's value, and the few voxels that bound leaves in reach of
  a rounding tie (x.5) are recomputed the exact way, so the integers written are still skimage's;
- complex data is resized part by part: the real and the imaginary part each exactly as
  scikit-image resizes that part alone, clipped to that part's own range (scikit-image's own
  call drops the imaginary part for orders >= 1, and scipy's complex zoom ignores `grid_mode`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bioimage_tasks.kernels.resize_fused import resize_fused
from bioimage_tasks.kernels.smoothing import (
    cast_to,
    gaussian_radius,
    scipy_ndimage,
    smooth,
    working_dtype,
)

# Slowest-decaying pole of the B-spline pre-filter of each order (Unser 1999).
_SPLINE_POLES = {
    2: math.sqrt(8.0) - 3.0,
    3: math.sqrt(3.0) - 2.0,
    4: -0.361341225900220,
    5: -0.430575347099973,
}
_PREFILTER_TOLERANCE = 1e-13


def source_coordinates(in_size: int, out_size: int, start: int, stop: int) -> np.ndarray:
    """Input coordinates sampled by output indices [start, stop), exactly as scipy's zoom computes
    them with grid_mode=True, including how mode "mirror" folds coordinates that fall outside
    the array (when upsampling) back into it before it picks the taps: -0.25 becomes 0.25.

    >>> source_coordinates(8, 4, 0, 4)
    array([0.5, 2.5, 4.5, 6.5])
    >>> source_coordinates(2, 4, 0, 4)
    array([0.25, 0.25, 0.75, 1.25])
    """
    zoom = np.divide(float(in_size), float(out_size))
    coords = (np.arange(start, stop, dtype=np.float64) + 0.5) * zoom - 0.5
    if in_size == 1:
        return np.zeros_like(coords)
    period = 2 * in_size - 2
    below = period * np.trunc(-coords / period) + coords
    below = np.where(below <= 1 - in_size, below + period, -below)
    above = coords - period * np.trunc(coords / period)
    above = np.where(above >= in_size, period - above, above)
    return np.where(coords < 0, below, np.where(coords > in_size - 1, above, coords))


def anti_aliasing_sigma(in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[float, ...]:
    """scikit-image's default anti-aliasing sigma, `max(0, (in/out - 1) / 2)` per axis."""
    factors = np.divide(in_shape, out_shape)
    return tuple(float(s) for s in np.maximum(0, (factors - 1) / 2))


def prefilter_margin(order: int) -> int:
    """Extra halo for the recursive spline pre-filter of `order` (0 for orders 0 and 1)."""
    if order < 2:
        return 0
    return math.ceil(math.log(_PREFILTER_TOLERANCE) / math.log(abs(_SPLINE_POLES[order]))) + 2


def first_tap(coords: np.ndarray, order: int) -> np.ndarray:
    """Index of the first spline tap for each coordinate (scipy's convention; order 0 rounds
    half up, which is what makes factor 2 pick voxels 1, 3, 5, ...)."""
    if order % 2:
        return np.floor(coords).astype(np.int64) - order // 2
    return np.floor(coords + 0.5).astype(np.int64) - order // 2


@dataclass(frozen=True)
class AxisPlan:
    """What one axis of one output block needs: the input coordinates it samples and the input
    index range [read_start, read_stop) to read (it may extend past the array: mirror it)."""

    coords: np.ndarray
    read_start: int
    read_stop: int


def plan_axis(
    in_size: int, out_size: int, start: int, stop: int, order: int, sigma: float
) -> AxisPlan:
    """Plan the input region for output indices [start, stop) along one axis."""
    coords = source_coordinates(in_size, out_size, start, stop)
    taps = first_tap(coords, order)
    halo = gaussian_radius(sigma) + prefilter_margin(order)
    return AxisPlan(coords, int(taps.min()) - halo, int(taps.max()) + order + 1 + halo)


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices [start, stop) folded into [0, size) the way scipy.ndimage's mode "mirror" (numpy's
    pad mode "reflect") extends an array: ... 2 1 | 0 1 2 ... n-1 | n-2 ...

    >>> mirror_indices(-3, 7, 4)
    array([3, 2, 1, 0, 1, 2, 3, 2, 1, 0])
    """
    indices = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(indices)
    period = 2 * (size - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= size, period - folded, folded)


def spline_weights(coords: np.ndarray, order: int) -> np.ndarray:
    """B-spline weights (n, order + 1) of the taps `first_tap(coords) + [0..order]`, evaluated
    by scipy itself on unit impulses so they are the weights its zoom uses. The weights depend
    only on the position within the knot interval, so coordinates are moved by a whole number
    next to a short impulse signal; the move is exact for coordinates >= offset + 1, smaller
    ones are used as they are unless their taps would fold over the edge (orders >= 2 only,
    whose recursive pre-filter is not bit-exact anyway)."""
    if order == 0:
        return np.ones((len(coords), 1))
    offset = order // 2 + 1
    knot = np.floor(coords) if order % 2 else np.floor(coords + 0.5)
    usable_as_is = (coords < offset + 1) & (first_tap(coords, order) >= 0)
    near = np.where(usable_as_is, coords, (coords - knot) + offset)
    starts = first_tap(near, order)
    impulse = np.zeros(2 * offset + order + 3)
    weights = np.empty((len(coords), order + 1))
    for start in np.unique(starts):
        rows = starts == start
        for tap in range(order + 1):
            impulse[:] = 0.0
            impulse[start + tap] = 1.0
            weights[rows, tap] = scipy_ndimage().map_coordinates(
                impulse, [near[rows]], order=order, prefilter=False, mode="mirror"
            )
    return weights


def tap_index(taps: np.ndarray) -> slice | np.ndarray:
    """`taps` as a slice when evenly spaced (integer zoom factors: read as a view), else as they
    are."""
    step = int(taps[1] - taps[0]) if len(taps) > 1 else 1
    if step > 0 and np.all(np.diff(taps) == step):
        return slice(int(taps[0]), int(taps[-1]) + 1, step)
    return taps


def interpolate(
    coefficients: np.ndarray,
    taps: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    integer_data: bool,
) -> np.ndarray:
    """Tensor-product spline sum over the taps in C order, multiplying each coefficient by the
    weight of axis 0, then axis 1, ...: the operation order of scipy's zoom, so that values that
    land exactly on a rounding tie (common for integer images) round the same way.

    Integer zoom factors weigh the taps of every output alike, by 1 or 1/2 (or 0) per axis, and
    scaling by a power of two is exact unless a value is subnormal or overflows, which neither
    integers nor float32 values can in float64: the sum is then the plain sum of the taps, in the
    same order, scaled once. Taps of weight 0 only add signed zeros (NaN for a NaN tap), so they
    are skipped for `integer_data`: coefficients from integers, result rounded to integers."""
    ndim = coefficients.ndim
    n_taps = weights[0].shape[1]
    indices = [[tap_index(t + c) for c in range(n_taps)] for t in taps]

    def taps_of(combination: tuple[int, ...]) -> np.ndarray:
        term = coefficients
        for axis, c in enumerate(combination):
            index = indices[axis][c]
            term = (
                term[(slice(None),) * axis + (index,)]
                if isinstance(index, slice)
                else term.take(index, axis)
            )
        return term

    result = np.zeros(tuple(len(t) for t in taps))
    scales = [power_of_two_weight(w) for w in weights]
    no_zero_weight = all(w.all() for w in weights)
    if all(scales) and (integer_data or (coefficients.dtype == np.float32 and no_zero_weight)):
        for combination in np.ndindex(*(n_taps,) * ndim):
            if all(w[0, c] for w, c in zip(weights, combination)):
                result += taps_of(combination)
        result *= math.prod(scales)
        return result
    columns = [
        [w[:, c].reshape((1,) * axis + (len(w),) + (1,) * (ndim - axis - 1)) for c in range(n_taps)]
        for axis, w in enumerate(weights)
    ]
    for combination in np.ndindex(*(n_taps,) * ndim):
        term = taps_of(combination) * columns[0][combination[0]]
        for axis in range(1, ndim):
            term *= columns[axis][combination[axis]]
        result += term
    return result


def power_of_two_weight(weights: np.ndarray) -> float:
    """The weight every output gives each of its taps, when that is the same for all outputs and
    one power of two for all non-zero weights (integer zoom factors); 0 otherwise."""
    first = weights[0]
    nonzero = first[first != 0]
    if not (weights == first).all() or len(nonzero) == 0 or not (nonzero == nonzero[0]).all():
        return 0.0
    return float(nonzero[0]) if np.frexp(nonzero[0])[0] == 0.5 else 0.0


def resize_region(
    region: np.ndarray,
    plans: Sequence[AxisPlan],
    order: int,
    sigma: Sequence[float],
    value_range: tuple[float, float] | None,
    out_dtype: np.dtype,
) -> np.ndarray:
    """Resize one block. `region` holds input indices [plan.read_start, plan.read_stop) of every
    axis (mirrored past the array edges); `sigma` is the anti-aliasing sigma per axis (zeros for
    none); `value_range` is the whole input's (min, max) that scikit-image clips every result to,
    given where that clip can change a value (None elsewhere)."""
    if region.dtype.kind == "c":
        return resize_parts(region, plans, order, sigma, value_range, out_dtype)
    taps = [first_tap(plan.coords, order) - plan.read_start for plan in plans]
    weights = [spline_weights(plan.coords, order) for plan in plans]
    radii = [gaussian_radius(s) for s in sigma]
    integers = region.dtype.kind in "iu" and np.dtype(out_dtype).kind in "iu"
    if order == 1 and any(radii) and integers and value_range is None:
        resized = resize_fused(region, taps, weights, sigma, out_dtype)
        if resized is not None:
            return resized
    zoom_dtype = working_dtype(region.dtype, order)
    data = smooth(region, sigma, zoom_dtype)
    taps = [t - r for t, r in zip(taps, radii)]
    if order == 0:
        picked = data[np.ix_(*taps)]
        return cast_to(picked if value_range is None else np.clip(picked, *value_range), out_dtype)
    if order >= 2:
        data = scipy_ndimage().spline_filter(data, order, output=np.float64, mode="mirror")
    data = interpolate(data, taps, weights, integers)
    data = data.astype(zoom_dtype, copy=False)
    if value_range is not None:
        np.clip(data, value_range[0], value_range[1], out=data)
    return cast_to(data, out_dtype)


def resize_parts(
    region: np.ndarray,
    plans: Sequence[AxisPlan],
    order: int,
    sigma: Sequence[float],
    value_range: tuple[complex, complex] | None,
    out_dtype: np.dtype,
) -> np.ndarray:
    """`resize_region` of complex data: the real and imaginary parts one after the other, each
    clipped to its own range (`value_range`: the real parts' min and max in the real parts of its
    two numbers, the imaginary parts' in the imaginary ones)."""
    out = np.empty(tuple(len(plan.coords) for plan in plans), out_dtype)
    for part, target, pick in ((region.real, out.real, np.real), (region.imag, out.imag, np.imag)):
        part_range = None if value_range is None else tuple(float(pick(v)) for v in value_range)
        target[...] = resize_region(part, plans, order, sigma, part_range, target.dtype)
    return out


def value_range(block: np.ndarray) -> tuple[float, float] | tuple[complex, complex]:
    """(min, max) of a block as scikit-image's clipping sees it: NaNs ignored. For complex data,
    each part's own: (min of real + 1j * min of imag, max of real + 1j * max of imag)."""
    if block.dtype.kind == "c":
        real, imag = value_range(block.real), value_range(block.imag)
        return complex(real[0], imag[0]), complex(real[1], imag[1])
    values = block.astype(working_dtype(block.dtype, 1), copy=False)
    return float(np.nanmin(values)), float(np.nanmax(values))

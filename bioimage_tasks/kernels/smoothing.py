"""scipy.ndimage's Gaussian as scikit-image's resize runs it, and the dtypes it works in and casts
to: what both the exact resize and its fused fast path (`resize_fused`) share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def scipy_ndimage():
    """scipy.ndimage, imported on first use: it costs ~0.3 s, which only resize needs."""
    from scipy import ndimage

    return ndimage


def gaussian_radius(sigma: float) -> int:
    """How far scipy's gaussian_filter reaches for `sigma` (0 where the axis is not filtered)."""
    return int(_GAUSSIAN_TRUNCATE * sigma + 0.5) if sigma > 1e-15 else 0


def gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy's gaussian_filter1d weights for `sigma` (length 2 * radius + 1; [1] when
    unfiltered)."""
    radius = gaussian_radius(sigma)
    if radius == 0:
        return np.ones(1)
    phi = np.exp(-0.5 / (sigma * sigma) * np.arange(-radius, radius + 1) ** 2)
    return phi / phi.sum()


def smooth(region: np.ndarray, sigma: Sequence[float], dtype: np.dtype) -> np.ndarray:
    """scipy's `gaussian_filter(region, sigma, mode="mirror")` in `dtype`, run one axis at a time as
    it runs, minus the kernel radius at both ends of every filtered axis: those values depend on
    where the region ends, the rest is bit-identical to the whole-array filter, and cropping after
    each pass spares the next ones the halo. Integers are read as they are (scipy and numpy widen
    them exactly, as `astype` would), so an unfiltered integer region comes back unchanged; floats
    are cast to `dtype` first (scipy has no float16)."""
    data = region if region.dtype.kind in "biu" else region.astype(dtype, copy=False)
    for axis, s in enumerate(sigma):
        if s > 1e-15:
            data = scipy_ndimage().gaussian_filter1d(
                data, s, axis, mode="mirror", truncate=_GAUSSIAN_TRUNCATE, output=dtype
            )
            radius = gaussian_radius(s)
            data = data[(slice(None),) * axis + (slice(radius, data.shape[axis] - radius),)]
    return data


def working_dtype(dtype: np.dtype, order: int) -> np.dtype:
    """The dtype scikit-image resizes in: the input's own for order 0 (float16 widened to float32),
    float32 for float32/float16 input, float64 for everything else."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if order == 0 or dtype.char in "df":
        return dtype
    return np.dtype(np.float64)


def cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast resampled values to `dtype`: integers are rounded to nearest (not truncated) and
    clipped to the dtype's range; no float round-trip when the dtype already matches."""
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu" and values.dtype.kind == "f":
        info = np.iinfo(dtype)
        # float(info.max) may round up past the range (2**64 for uint64): step back inside.
        high = (
            np.nextafter(float(info.max), -np.inf)
            if float(info.max) > info.max
            else float(info.max)
        )
        return np.clip(np.rint(values), float(info.min), high).astype(dtype)
    return values.astype(dtype)

"""Synthetic sample volumes (no downloads): a microscopy-like image and a label volume of blobs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def smooth_image(shape: Sequence[int], seed: int = 0, dtype: np.dtype = np.uint8) -> np.ndarray:
    """A smooth random field plus noise, scaled to the integer dtype's range (or [0, 1] for floats):
    structure at several scales, so it compresses like real data, not like noise or zeros."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=4.0)
    field += 0.1 * field.std() * rng.standard_normal(shape, dtype=np.float32)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-12)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return field.astype(dtype)
    return np.rint(field * min(np.iinfo(dtype).max, 2**16)).astype(dtype)


def blob_labels(
    shape: Sequence[int], seed: int = 0, n_blobs: int = 64, dtype: np.dtype = np.uint32
) -> np.ndarray:
    """Label volume: the nearest of `n_blobs` random seed points inside a thresholded smooth field,
    background 0; ids are 1..n_blobs."""
    rng = np.random.default_rng(seed)
    points = np.zeros(shape, dtype=np.int32)
    coordinates = tuple(rng.integers(0, s, n_blobs) for s in shape)
    points[coordinates] = np.arange(1, n_blobs + 1)
    _, nearest = ndimage.distance_transform_edt(points == 0, return_indices=True)
    labels = points[tuple(nearest)]
    foreground = smooth_image(shape, seed + 1, np.float32) > 0.4
    return np.where(foreground, labels, 0).astype(dtype)

"""Pure masked-write kernel."""

from __future__ import annotations

import numpy as np


def merge_masked(new: np.ndarray, old: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxels of `new` where `mask` is set, `old` elsewhere: a masked write never touches
    out-of-mask voxels.

    >>> merge_masked(np.array([1, 2, 3]), np.array([7, 8, 9]), np.array([True, False, True]))
    array([1, 8, 3])
    """
    return np.where(mask.astype(bool, copy=False), new, old)

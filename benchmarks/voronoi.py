"""Voronoi-like label volumes for the benchmarks (kernels.py, igneous.py): one seed jittered inside
each `cell`^3 grid cell, every voxel labelled with its nearest seed's id. Ids are distinct,
random and scattered over a wide range (uint64 ids exceed 2**32), as in a segmentation. The
volume is the same whatever slabs it is made in; compiled, a few seconds at 512^3."""

from __future__ import annotations

import numba
import numpy as np


def voronoi_slab(
    z0: int,
    depth: int,
    size: int,
    cell: int = 32,
    dtype: str = "uint32",
    id_count: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Planes [z0, z0 + depth) of the Voronoi labels of a `size`^3 volume, of `dtype`, ids
    drawn without repeats from 1..`id_count` (default: the dtype's largest value, at most
    2**62)."""
    cells = -(-size // cell)
    rng = np.random.default_rng(seed)
    seeds = (
        np.indices((cells,) * 3).reshape(3, -1).T * cell + rng.random((cells**3, 3)) * cell
    ).astype(np.float32)
    if id_count is None:
        id_count = min(int(np.iinfo(dtype).max), 2**62)
    ids = rng.choice(id_count, size=cells**3, replace=False).astype(dtype) + 1
    out = np.empty((depth, size, size), dtype)
    _label(out, z0, seeds, ids, cell, cells)
    return out


def voronoi_labels(size: int, cell: int = 32, dtype: str = "uint32", seed: int = 0) -> np.ndarray:
    """The whole `size`^3 volume of `voronoi_slab`."""
    return voronoi_slab(0, size, size, cell, dtype, seed=seed)


@numba.njit(cache=True)
def _label(out, z0, seeds, ids, cell, cells):
    """Each voxel of `out` (planes from z0 on) gets the id of the nearest seed among the 27
    grid cells around its own."""
    depth, n = out.shape[0], out.shape[1]
    for zz in range(depth):
        z = z0 + zz
        for y in range(n):
            for x in range(n):
                cz, cy, cx = z // cell, y // cell, x // cell
                best, best_id = np.inf, ids[0]
                for dz in range(max(0, cz - 1), min(cells, cz + 2)):
                    for dy in range(max(0, cy - 1), min(cells, cy + 2)):
                        for dx in range(max(0, cx - 1), min(cells, cx + 2)):
                            k = (dz * cells + dy) * cells + dx
                            d = (
                                (seeds[k, 0] - z) ** 2
                                + (seeds[k, 1] - y) ** 2
                                + (seeds[k, 2] - x) ** 2
                            )
                            if d < best:
                                best, best_id = d, ids[k]
                out[zz, y, x] = best_id

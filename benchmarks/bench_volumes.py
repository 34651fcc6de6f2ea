"""The benchmark volumes: a SIZE^3 uint8 image and uint32 labels as zarr v3 with 64^3 chunks,
generated once per size and kept."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

CHUNK = 64
GENERATED_UP_TO = 512  # larger volumes are mirror-tiled from the 512^3 ones (make_volumes)


def split_path(path: str) -> tuple[str, str]:
    """'dir/x.zarr/key' -> ('dir/x.zarr', 'key')."""
    container, _, key = path.rpartition(".zarr/")
    return container + ".zarr", key


def make_volumes(
    data_dir: Path, size: int, names: tuple[str, ...] = ("image", "labels")
) -> dict[str, str]:
    """The SIZE^3 uint8 image and uint32 labels (or those of `names`) as zarr v3, 64^3 chunks,
    generated once per size: by `sample_data` up to 512^3, mirror-tiled from the 512^3 volumes
    above (`sample_data` needs tens of GB at 1024^3). Written under a temporary name and renamed
    when complete, so an interrupted generation is redone, not used."""
    import zarr

    from bioimage_tasks.sample_data import blob_labels, smooth_image

    shape = (size,) * 3
    store = data_dir / f"volumes-{size}.zarr"
    tiles = make_volumes(data_dir, GENERATED_UP_TO, names) if size > GENERATED_UP_TO else None
    paths = {}
    for name, make in (
        (n, m) for n, m in (("image", smooth_image), ("labels", blob_labels)) if n in names
    ):
        path = f"{store}/{name}"
        if (
            not (store / name / "zarr.json").exists()
            or zarr.open_array(str(store), path=name).shape != shape
        ):
            partial = f"{name}.partial"
            shutil.rmtree(store / partial, ignore_errors=True)
            started = time.perf_counter()
            if tiles:
                print(f"generating {path} (mirror-tiled from {tiles[name]}) ...", flush=True)
                mirror_tile(tiles[name], store, partial, size)
            else:
                print(f"generating {path} ...", flush=True)
                values = make(shape)
                zarr.create_array(
                    store=str(store),
                    name=partial,
                    shape=shape,
                    dtype=values.dtype,
                    chunks=(CHUNK,) * 3,
                )[:] = values
                del values
            shutil.rmtree(store / name, ignore_errors=True)
            os.replace(store / partial, store / name)
            print(
                f"  {time.perf_counter() - started:.0f} s, {disk_mb(store / name):.0f} MB on disk",
                flush=True,
            )
        paths[name] = path
    return paths


def mirror_index(size: int, n: int) -> Any:
    """Source index of each of `size` positions when a length-n axis is tiled by mirroring:
    0..n-1, n-1..0, 0..n-1, ... (each seam repeats its voxel, so the volume stays smooth)."""
    import numpy as np

    position = np.arange(size) % (2 * n)
    return np.where(position < n, position, 2 * n - 1 - position)


def mirror_tile(source: str, store: Path, name: str, size: int) -> None:
    """A size^3 array `name` in `store` filled from the n^3 volume at `source` by mirror-tiling
    (for 1024 from 512: each octant is the volume flipped along the axes on which the octant is
    the upper half). Written in blocks of 64 x n x n, so the peak is about one n^3 volume."""
    import numpy as np
    import zarr

    container, key = split_path(source)
    tile = zarr.open_array(container, path=key, mode="r")[:]
    n = tile.shape[0]
    index = mirror_index(size, n)
    out = zarr.create_array(
        store=str(store), name=name, shape=(size,) * 3, dtype=tile.dtype, chunks=(CHUNK,) * 3
    )
    for z in range(0, size, CHUNK):
        for y in range(0, size, n):
            for x in range(0, size, n):
                block = (slice(z, z + CHUNK), slice(y, y + n), slice(x, x + n))
                out[block] = tile[np.ix_(*(index[b] for b in block))]


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6

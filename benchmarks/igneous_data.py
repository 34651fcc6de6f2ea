"""The cases and data of benchmarks/igneous.py: each case's method, dtype, layer type and
encoding; the precomputed scale metadata and tensorstore spec of each mip; the smooth image and
Voronoi label volumes written once as scale 0 (slab by slab)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

CASES = {  # name: (method, dtype, layer type, encoding)
    "image-raw": ("mean", "uint8", "image", "raw"),
    "labels-raw": ("mode", "uint32", "segmentation", "raw"),
    "labels-cseg": ("mode", "uint32", "segmentation", "compressed_segmentation"),
    "image-gzip": ("mean", "uint8", "image", "raw"),  # sharded, gzip data encoding
    "labels-gzip": ("mode", "uint32", "segmentation", "raw"),  # sharded, gzip data encoding
}
SHARDED = {"image-gzip", "labels-gzip"}  # scale 0: shards of SHARD_CHUNKS^3 chunks, gzip
SHARD_CHUNKS = 4
SAME_DATA = {"labels-cseg": "labels-raw", "image-gzip": "image-raw", "labels-gzip": "labels-raw"}
RESOLUTION = 8
CHUNK = 64
SLAB = 64


# ---------------------------------------------------------------- data


def scale_metadata(size: int, level: int, encoding: str, sharded: bool = False) -> dict:
    """Scale `level` of a `size`^3 volume: 8 nm * 2**level, 64^3 chunks (capped at the size);
    `sharded`: shards of SHARD_CHUNKS^3 chunks (capped at the grid), gzip data encoding."""
    n, r = max(1, size >> level), RESOLUTION << level
    scale = {
        "key": f"{r}_{r}_{r}",
        "size": [n] * 3,
        "resolution": [r] * 3,
        "chunk_size": [min(CHUNK, n)] * 3,
        "voxel_offset": [0, 0, 0],
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [8, 8, 8]
    if sharded:  # a cubic grid: the low 3 * log2(chunks per shard) Morton bits stay in a shard
        bits = max(0, (-(-n // min(CHUNK, n)) - 1).bit_length())
        low = 3 * min(bits, SHARD_CHUNKS.bit_length() - 1)
        scale["sharding"] = {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": min(low, 3),
            "minishard_bits": low - min(low, 3),
            "shard_bits": 3 * bits - low,
            "hash": "identity",
            "minishard_index_encoding": "gzip",
            "data_encoding": "gzip",
        }
    return scale


def precomputed_spec(folder: Path, case: str, size: int, level: int) -> dict:
    _, dtype, kind, encoding = CASES[case]
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(folder) + "/"},
        "multiscale_metadata": {"type": kind, "data_type": dtype, "num_channels": 1},
        "scale_metadata": scale_metadata(size, level, encoding, case in SHARDED),
    }


@functools.lru_cache(maxsize=1)
def coarse_field(n: int):
    """A smooth random n^3 field in [0.05, 0.95]."""
    import numpy as np
    from scipy import ndimage

    field = ndimage.gaussian_filter(
        np.random.default_rng(0).standard_normal((n,) * 3, dtype=np.float32), 2.0
    )
    return (field - field.min()) / float(np.ptp(field)) * 0.9 + 0.05


def image_slab(z0: int, depth: int, size: int):
    """Planes [z0, z0 + depth) of a smooth image: a Gaussian-smoothed coarse field (one value per
    8^3 voxels) interpolated trilinearly, plus noise; the same whatever the slab cut."""
    import numba
    import numpy as np

    step = 8
    coarse = coarse_field(size // step + 2)

    @numba.njit(cache=True)
    def interpolate(out, z0, coarse, step):
        for zz in range(out.shape[0]):
            fz = (z0 + zz) / step
            iz, wz = int(fz), fz - int(fz)
            for y in range(out.shape[1]):
                fy = y / step
                iy, wy = int(fy), fy - int(fy)
                for x in range(out.shape[2]):
                    fx = x / step
                    ix, wx = int(fx), fx - int(fx)
                    value = 0.0
                    for dz, az in ((0, 1 - wz), (1, wz)):
                        for dy, ay in ((0, 1 - wy), (1, wy)):
                            for dx, ax in ((0, 1 - wx), (1, wx)):
                                value += az * ay * ax * coarse[iz + dz, iy + dy, ix + dx]
                    out[zz, y, x] += value

    values = 0.02 * np.random.default_rng(1 + z0).standard_normal((depth, size, size), np.float32)
    interpolate(values, z0, coarse, step)
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def labels_slab(z0: int, depth: int, size: int, cell: int = 32):
    """Planes [z0, z0 + depth) of Voronoi labels (benchmarks/voronoi.py): one seed jittered in
    each `cell`^3 grid cell, each voxel labelled with its nearest seed's (random, scattered
    uint32) id."""
    from voronoi import voronoi_slab

    return voronoi_slab(z0, depth, size, cell, "uint32", id_count=2**32 - 2)


def base_volume(data: Path, case: str, size: int) -> Path:
    """The case's precomputed volume holding scale 0 only, written once (slab by slab)."""
    import tensorstore as ts

    folder = data / f"{case}-{size}" / "base"
    if (folder / "info").exists():
        return folder
    partial = folder.with_name("base.partial")  # renamed once complete
    shutil.rmtree(partial, ignore_errors=True)
    print(f"writing {folder} ...", flush=True)
    store = ts.open(precomputed_spec(partial, case, size, 0), create=True).result()
    zyx = store[ts.d["channel"][0]].T
    make = image_slab if CASES[case][2] == "image" else labels_slab
    raw = data / f"{SAME_DATA.get(case)}-{size}" / "base"
    if case in SAME_DATA and (raw / "info").exists():  # the same voxels, not made again
        same_zyx = ts.open(precomputed_spec(raw, SAME_DATA[case], size, 0)).result()

        def make(z0: int, depth: int, size: int):
            return same_zyx[ts.d["channel"][0]].T[z0 : z0 + depth].read().result()

    for z0 in range(0, size, SLAB):
        zyx[z0 : z0 + SLAB].write(make(z0, min(SLAB, size - z0), size)).result()
    partial.rename(folder)
    return folder

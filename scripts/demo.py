"""The quick-start demo: generate a sample volume (no downloads), downsample it with the Prefect
flow on an ephemeral Prefect server and a local Dask cluster, write it as a 4-level OME-Zarr
pyramid (every level from one read of the input), and print what was written, where, and how
long it took."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import zarr

from bioimage_tasks.sample_data import smooth_image
from flows import downsample_flow, pyramid_flow

DATA = Path(os.environ.get("BIOIMAGE_TASKS_DATA", "data"))
SHAPE = (256, 256, 256)


def sample_volume() -> str:
    """data/sample.zarr/raw: a 256^3 uint8 image in 64^3 chunks, generated once."""
    path = DATA / "sample.zarr"
    if not (path / "raw" / "zarr.json").exists():
        image = smooth_image(SHAPE, seed=0)
        zarr.create_array(
            store=str(path),
            name="raw",
            shape=SHAPE,
            dtype="uint8",
            chunks=(64, 64, 64),
            overwrite=True,
        )[:] = image
        print(f"generated {path}/raw: {SHAPE} uint8, chunks (64, 64, 64)")
    return f"{path}/raw"


def main() -> None:
    source = sample_volume()
    output = f"{DATA}/sample.zarr/s1"
    started = time.perf_counter()
    result = downsample_flow(
        source, 2, output, order=1, anti_aliasing=True, job_type="subprocess", num_workers=2
    )
    elapsed = time.perf_counter() - started
    values = np.asarray(result[:])
    print()
    print(f"input : {source}  shape {SHAPE} uint8")
    print(f"output: {output}  shape {result.shape} {result.dtype} chunks {result.chunks}")
    print(f"        values {values.min()}..{values.max()}, mean {values.mean():.2f}")
    print(f"time  : {elapsed:.1f} s (flow call, including Prefect start-up)")
    print(f"open it with: zarr.open_array({str(DATA / 'sample.zarr')!r}, path='s1')")
    group = f"{DATA}/sample.ome.zarr"
    started = time.perf_counter()
    pyramid_flow(
        source,
        group,
        levels=4,
        method="mean",
        voxel_size=(1.0, 1.0, 1.0),
        units="micrometer",
        num_workers=2,
    )
    elapsed = time.perf_counter() - started
    levels = zarr.open_group(group, mode="r")
    print()
    print(f"pyramid: {group}  (OME-Zarr 0.5, window means, exact at every level)")
    for level in range(5):
        print(f"        s{level} {levels[f's{level}'].shape}")
    print(f"time  : {elapsed:.1f} s (one flow run on 2 threads)")


if __name__ == "__main__":
    main()
